"""Benchmark: the same passages and people's questions, in clean PDFs and in real-layout PDFs.

Each ``--pdf-dir`` (give the clean one first) is read and chunked by the pipeline's own code
(``tasks.documents.reading.load_documents``, ``tasks.chunks.chunking.chunk_documents``) and
its ``human_questions.json`` is matched to the chunks as the pipeline's human-question stage
does (``tasks.evaluation.human_questions``). Per folder:

* chunks; people's questions whose evidence lies inside one chunk: all, in the files with
  margin line numbers, in the two-column files (``layout`` in the folder's ``sources.json``);
* chunks holding furniture: the running header's case number, the watermark, the fee table's
  cells as running text (outside a markdown table row), the footnote;
* BM25 (the pipeline's, ``tasks.retrieval.lexical``) on every question: NDCG@10 and the share
  with a relevant chunk in the top 10; a question no chunk holds whole scores 0;
* with ``--model``, that model's NDCG@10 the same way (cosine, the model's own prompts).

The furniture strings come from ``--layout-sources`` (the real-layout folder's ``sources.json``,
written by ``data/make_layout_pdfs.py``), so the clean folder is searched for the same strings.

``--speed`` adds PDFs per second and text correctness for each reader on the same files
(the pipeline's reader; plain pypdf ``extract_text`` + the cleaner, as the reader was before it
removed page furniture; pypdfium2 and pdfplumber when importable). Correctness: passages that
come back whole from the file's text (whitespace ignored), and furniture strings left in it.
Timings are only worth reading on an otherwise idle machine.

Make the folders (outside the repository for the legal set)::

    J=../shared/data/cjrc_legal_dev.json
    .venv/bin/python data/make_layout_pdfs.py --clean $J --passages-per-doc 12 --out-dir /tmp/legal_clean
    .venv/bin/python data/make_layout_pdfs.py $J --passages-per-doc 12 --out-dir /tmp/legal_real
    for k in clean real; do .venv/bin/python data/make_human_questions.py $J \\
        --sources /tmp/legal_$k/sources.json --out /tmp/legal_$k/human_questions.json --pad 12; done
    .venv/bin/python -m bench.real_layout --pdf-dir /tmp/legal_clean --pdf-dir /tmp/legal_real --speed
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import markdown_table

_WS = re.compile(r"\s+")


def squash(text: str) -> str:
    return _WS.sub("", text)


def _sources(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "sources.json").read_text(encoding="utf-8"))


def furniture_counts(chunks, furniture: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Chunks holding each kind of furniture of their own file."""
    counts = {"case number": 0, "watermark": 0, "table cells as text": 0, "footnote in running text": 0}
    for c in chunks:
        f = furniture.get(c.source)
        if not f:
            continue
        text = squash(c.text)
        counts["case number"] += squash(f["header"][1]) in text
        counts["watermark"] += squash(f["watermark"]) in text
        # The footnote's own chunk is where it belongs; inside running text it is not.
        counts["footnote in running text"] += squash(f["footnote"]) in text and len(text) > len(squash(f["footnote"])) + 20
        running = "\n".join(line for line in c.text.split("\n") if not line.lstrip().startswith("|"))
        # Two of the table's row labels: one alone also occurs in judgments' own text.
        counts["table cells as text"] += sum(cell in running for cell in f["table_cells"]) >= 2
    return counts


def ndcg_at_10(ranked: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / math.log2(i + 2) for i, cid in enumerate(ranked[:10]) if cid in relevant)
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    return dcg / ideal if ideal else 0.0


def dense_ndcg(model_path: str, chunks, questions, relevant: dict[str, list[str]]) -> float:
    """NDCG@10 of a sentence-transformers model (cosine, its own query/document prompts) on every question."""
    import numpy as np
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_path, device="cpu")
    prompts = model.prompts or {}
    c = model.encode([x.text for x in chunks], prompt_name="document" if "document" in prompts else None,
                     batch_size=32, normalize_embeddings=True)
    q = model.encode([x.question for x in questions], prompt_name="query" if "query" in prompts else None,
                     batch_size=64, normalize_embeddings=True)
    scores = q @ c.T
    ids = [x.chunk_id for x in chunks]
    return sum(
        ndcg_at_10([ids[i] for i in np.argsort(-scores[k], kind="stable")[:10]], set(relevant.get(x.qid, ())))
        for k, x in enumerate(questions)
    ) / len(questions)


def measure_folder(folder: Path, furniture: dict[str, dict[str, Any]], chunk_size: int, overlap: int,
                   model: str | None = None) -> dict:
    import numpy as np

    from tasks.chunks.chunking import chunk_documents
    from tasks.documents.reading import load_documents
    from tasks.evaluation.human_questions import load_human_questions, resolve_questions
    from tasks.retrieval.lexical import BM25Index

    documents = load_documents(folder).documents
    chunks = chunk_documents(documents, chunk_size, overlap)
    questions = load_human_questions(folder / "human_questions.json")
    resolution = resolve_questions(questions, chunks)
    relevant = resolution.dataset.relevant_docs
    layout = {d["file"]: d.get("layout", []) for d in _sources(folder)["documents"]}
    if not any(layout.values()):  # the clean folder: the real one's layout, by file name
        layout = {name: f.get("layout", []) for name, f in furniture.items()}

    def inside(kind: str | None) -> tuple[int, int]:
        qs = [q for q in questions if kind is None or kind in layout.get(q.source or "", [])]
        return sum(q.qid in relevant for q in qs), len(qs)

    index = BM25Index.build([c.chunk_id for c in chunks], [c.text for c in chunks])
    ndcgs, hits = [], []
    for q in questions:
        rel = set(relevant.get(q.qid, ()))
        top = [index.chunk_ids[i] for i in np.argsort(-index.scores(q.question), kind="stable")[:10]]
        ndcgs.append(ndcg_at_10(top, rel))
        hits.append(bool(rel & set(top)))
    return {
        "folder": str(folder),
        "chunks": len(chunks),
        "questions": len(questions),
        "inside one chunk": inside(None),
        "inside, line-number files": inside("line numbers"),
        "inside, two-column files": inside("two columns"),
        "furniture": furniture_counts(chunks, furniture),
        "bm25 ndcg@10": sum(ndcgs) / len(ndcgs),
        "bm25 hit@10": sum(hits) / len(hits),
        **({"dense ndcg@10": dense_ndcg(model, chunks, questions, relevant)} if model else {}),
    }


# --- readers, for --speed ----------------------------------------------------------------


def _pipeline(path: Path) -> str:
    from tasks.documents.reading import read_pdf

    return "\n".join(read_pdf(path)[0])


def _plain_pypdf(path: Path) -> str:
    import pypdf

    from tasks.documents.cleaning import clean_page_text

    return "\n".join(clean_page_text(p.extract_text() or "") for p in pypdf.PdfReader(path).pages)


def _pypdfium2(path: Path) -> str:
    import pypdfium2

    from tasks.documents.cleaning import clean_page_text

    pdf = pypdfium2.PdfDocument(path)
    try:
        return "\n".join(clean_page_text(page.get_textpage().get_text_range()) for page in pdf)
    finally:
        pdf.close()


def _pdfplumber(path: Path) -> str:
    import pdfplumber

    from tasks.documents.cleaning import clean_page_text

    with pdfplumber.open(path) as pdf:
        return "\n".join(clean_page_text(p.extract_text() or "") for p in pdf.pages)


READERS: dict[str, Callable[[Path], str]] = {
    "pipeline (pypdf, furniture removed)": _pipeline,
    "pypdf extract_text + cleaner (before)": _plain_pypdf,
    "pypdfium2 + cleaner": _pypdfium2,
    "pdfplumber + cleaner": _pdfplumber,
}


def passage_texts(folder: Path, data_json: Path) -> dict[str, list[str]]:
    """Per file, the passages typeset in it (from the SQuAD file the folder was made of)."""
    data = json.loads(data_json.read_text(encoding="utf-8"))["data"]
    return {
        d["file"]: [data[p["data_index"]]["paragraphs"][p.get("paragraph_index", 0)]["context"] for p in d["passages"]]
        for d in _sources(folder)["documents"]
    }


def measure_speed(folder: Path, data_json: Path, furniture: dict[str, dict[str, Any]], repeat: int) -> list[dict]:
    paths = sorted(folder.glob("*.pdf"))
    passages = passage_texts(folder, data_json)
    rows = []
    for name, read in READERS.items():
        try:
            texts = {p.name: read(p) for p in paths}  # also the warm-up
        except ImportError:
            logging.getLogger("bench").info("%s: not importable, left out", name)
            continue
        start = time.perf_counter()
        for _ in range(repeat):
            for p in paths:
                read(p)
        seconds = time.perf_counter() - start
        whole = sum(squash(t) in squash(texts[f]) for f, ts in passages.items() for t in ts)
        left = 0
        for f, text in texts.items():
            furn = furniture.get(f)
            if furn:
                s = squash(text)
                left += sum(squash(x) in s for x in [furn["header"][1], furn["watermark"]])
        rows.append({"reader": name, "pdfs_per_second": len(paths) * repeat / seconds,
                     "passages whole": whole, "passages": sum(map(len, passages.values())),
                     "header/watermark strings left": left})
    return rows


def main(argv: list[str] | None = None) -> int:
    from bench.harness import SHARED_DATA, setup_logging

    ap = argparse.ArgumentParser(prog="python -m bench.real_layout", description=__doc__.splitlines()[0])
    ap.add_argument("--pdf-dir", type=Path, action="append", required=True,
                    help="a folder of PDFs with sources.json and human_questions.json; repeat (clean first)")
    ap.add_argument("--layout-sources", type=Path, default=None,
                    help="sources.json naming the furniture (default: the last --pdf-dir's)")
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "cjrc_legal_dev.json",
                    help="the SQuAD file the PDFs were made of (for --speed's passage check)")
    ap.add_argument("--chunk-size", type=int, default=300)
    ap.add_argument("--chunk-overlap", type=int, default=30)
    ap.add_argument("--model", default=None,
                    help="also this sentence-transformers model's NDCG@10, e.g. models/base/multilingual-e5-small")
    ap.add_argument("--speed", action="store_true", help="also PDFs per second of each reader")
    ap.add_argument("--repeat", type=int, default=3, help="reads of every file per reader, for --speed")
    ap.add_argument("--json", type=Path, default=None, help="also write the results to this file")
    args = ap.parse_args(argv)
    setup_logging()
    layout_sources = args.layout_sources or args.pdf_dir[-1] / "sources.json"
    furniture = {
        d["file"]: {**d["furniture"], "layout": d.get("layout", [])}
        for d in json.loads(layout_sources.read_text(encoding="utf-8"))["documents"] if "furniture" in d
    }
    results = [measure_folder(f, furniture, args.chunk_size, args.chunk_overlap, args.model) for f in args.pdf_dir]
    header = ["", *[r["folder"] for r in results]]
    pair = lambda v: f"{v[0]} of {v[1]}"  # noqa: E731
    rows = [
        ["chunks", *[r["chunks"] for r in results]],
        ["questions whose evidence lies inside one chunk", *[pair(r["inside one chunk"]) for r in results]],
        ["the same, files with margin line numbers", *[pair(r["inside, line-number files"]) for r in results]],
        ["the same, two-column files", *[pair(r["inside, two-column files"]) for r in results]],
        *[[f"chunks holding the {k}", *[r["furniture"][k] for r in results]] for k in results[0]["furniture"]],
        ["BM25 NDCG@10 (all questions)", *[f"{r['bm25 ndcg@10']:.4f}" for r in results]],
        ["BM25: a relevant chunk in the top 10", *[f"{r['bm25 hit@10']:.1%}" for r in results]],
    ]
    if args.model:
        rows.append([f"{Path(args.model).name} NDCG@10 (all questions)", *[f"{r['dense ndcg@10']:.4f}" for r in results]])
    print(markdown_table(header, rows))
    out: dict[str, Any] = {"folders": results}
    if args.speed:
        speed = []
        for folder in args.pdf_dir:
            for row in measure_speed(folder, args.data, furniture, args.repeat):
                speed.append({"folder": str(folder), **row})
        print()
        print(markdown_table(
            ["folder", "reader", "PDFs/s", "passages whole", "header/watermark strings left"],
            [[r["folder"], r["reader"], f"{r['pdfs_per_second']:.1f}", f"{r['passages whole']} of {r['passages']}",
              r["header/watermark strings left"]] for r in speed], left=(0, 1)))
        out["speed"] = speed
    if args.json:
        args.json.write_text(json.dumps(out, ensure_ascii=False, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
