"""Benchmark: chunks that stop at headings and carry them, against the pipeline's chunks.

Reads the sample PDFs (``data/pdf``), chunks them three ways and measures a model on the
human questions about them (``data/pdf/human_questions.json``, matched to chunks by their
evidence like the pipeline's human-question stage):

* ``pages``: the pipeline's chunking, each page split on its own (the naive way);
* ``sections``: each page first cut at its headings (:mod:`tasks.chunks.sections`), so no
  chunk runs from one article into the next;
* ``sections + heading``: the same, with the section's heading on a line before each chunk.

No LLM and no training; about a minute a model on 2 cores::

    .venv/bin/python -m bench.section_chunks
    .venv/bin/python -m bench.section_chunks --model outputs/finetune_bce/model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.harness import REPO_ROOT, markdown_table
from tasks.core.settings import Settings

WAYS = ("pages", "sections", "sections + heading")


def way_chunks(documents, way: str, settings: Settings):
    """The chunks of ``documents`` cut one of the three ways."""
    from tasks.chunks.sections import document_sections, section_runs
    from tasks.chunks.chunking import chunk_documents
    from tasks.core.records import Document, Page

    if way == "sections + heading":
        return chunk_documents(documents, settings.chunk_size, settings.chunk_overlap, by_section=True)
    if way == "sections":
        # Each section as a document of its own (chunks cross pages, not documents): chunks stop
        # at headings, and carry none.
        documents = [
            Document(d.doc_id, d.source, [Page(d.doc_id, d.source, s.page, s.text) for s in run])
            for d in documents for run in section_runs(document_sections(d))
        ]
    return chunk_documents(documents, settings.chunk_size, settings.chunk_overlap)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.section_chunks", description=__doc__.splitlines()[0])
    p.add_argument("--pdf-dir", type=Path, default=REPO_ROOT / "data" / "pdf")
    p.add_argument("--questions", type=Path, default=None, help="default: PDF_DIR/human_questions.json")
    p.add_argument("--model", action="append", default=[], help="sentence-transformers folders (default: the base)")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)

    from sentence_transformers import SentenceTransformer

    from tasks.documents.reading import load_documents
    from tasks.evaluation.evaluate import evaluate_loaded_model
    from tasks.evaluation.human_questions import load_human_questions, resolve_questions

    settings = Settings()
    documents = load_documents(args.pdf_dir).documents
    questions = load_human_questions(args.questions or args.pdf_dir / "human_questions.json")
    models = args.model or [str(REPO_ROOT / "models" / "base" / "multilingual-e5-small")]
    rows = []
    for path in models:
        model = SentenceTransformer(path)
        first = None
        for way in WAYS:
            chunks = way_chunks(documents, way, settings)
            resolved = resolve_questions(questions, chunks)
            m = evaluate_loaded_model(model, resolved.dataset, batch_size=args.batch_size, name=way.replace(" ", ""))
            ndcg = m["cosine_ndcg@10"]
            first = ndcg if first is None else first
            rows.append([Path(path).name, way, len(chunks), f"{resolved.n_resolved} of {resolved.n_questions}",
                         f"{ndcg:.4f}", f"{m['cosine_accuracy@1']:.4f}", f"{100 * (ndcg - first):+.1f}"])
    print(markdown_table(["model", "chunking", "chunks", "questions matched", "NDCG@10", "Acc@1", "Δ NDCG@10 vs pages"],
                         rows, left=(0, 1)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
