"""Benchmark: chunks that stop at headings and carry them, against the pipeline's chunks.

Reads the sample PDFs (``data/pdf``), chunks them three ways and measures a model on the
human questions about them (``data/pdf/human_questions.json``, matched to chunks by their
evidence like the pipeline's human-question stage):

* ``pages``: the pipeline's chunking, each page split on its own (the naive way);
* ``sections``: each page first cut at its headings (:mod:`tasks.chunk_sections`), so no
  chunk runs from one article into the next;
* ``sections + heading``: the same, with the section's heading on a line before each chunk.

No LLM and no training; about a minute a model on 2 cores::

    .venv/bin/python bench/section_chunks.py
    .venv/bin/python bench/section_chunks.py --model outputs/finetune_bce/model
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tasks.settings import Settings  # noqa: E402

WAYS = ("pages", "sections", "sections + heading")


def way_chunks(documents, way: str, settings: Settings):
    """The chunks of ``documents`` cut one of the three ways."""
    from tasks.chunk_sections import document_sections
    from tasks.chunking import chunk_documents
    from tasks.records import Document, Page

    if way == "sections + heading":
        return chunk_documents(documents, settings.chunk_size, settings.chunk_overlap, by_section=True)
    if way == "sections":
        # Each section as a page of its own: chunks stop at headings, and carry none.
        documents = [
            Document(d.doc_id, d.source, [Page(d.doc_id, d.source, s.page, s.text) for s in document_sections(d)])
            for d in documents
        ]
    return chunk_documents(documents, settings.chunk_size, settings.chunk_overlap)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python bench/section_chunks.py", description=__doc__.splitlines()[0])
    p.add_argument("--pdf-dir", type=Path, default=REPO_ROOT / "data" / "pdf")
    p.add_argument("--questions", type=Path, default=None, help="default: PDF_DIR/human_questions.json")
    p.add_argument("--model", action="append", default=[], help="sentence-transformers folders (default: the base)")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)

    from sentence_transformers import SentenceTransformer

    from tasks.documents import load_documents
    from tasks.evaluation import evaluate_loaded_model
    from tasks.human_questions import load_human_questions, resolve_questions

    settings = Settings()
    documents = load_documents(args.pdf_dir).documents
    questions = load_human_questions(args.questions or args.pdf_dir / "human_questions.json")
    models = args.model or [str(REPO_ROOT / "models" / "base" / "multilingual-e5-small")]
    print("| model | chunking | chunks | questions matched | NDCG@10 | Acc@1 | Δ NDCG@10 vs pages |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in models:
        model = SentenceTransformer(path)
        first = None
        for way in WAYS:
            chunks = way_chunks(documents, way, settings)
            resolved = resolve_questions(questions, chunks)
            m = evaluate_loaded_model(model, resolved.dataset, batch_size=args.batch_size, name=way.replace(" ", ""))
            ndcg = m["cosine_ndcg@10"]
            first = ndcg if first is None else first
            print(f"| {Path(path).name} | {way} | {len(chunks)} | {resolved.n_resolved} of {resolved.n_questions} | "
                  f"{ndcg:.4f} | {m['cosine_accuracy@1']:.4f} | {100 * (ndcg - first):+.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
