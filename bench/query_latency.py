"""Benchmark: how long `flows.query` takes a question, with the reranker at each depth and
without it, after the index is loaded.

``--variant`` times the same reranker served another way (bench only; the product serves the
folder as trained): ``int8`` (torch's dynamic int8 quantization of its linear layers),
``layers=N`` (its first N encoder layers only: the latency of a smaller reranker of the same
width, not its quality), ``maxlen=N`` (tokens a question/chunk pair), joined with ``+``.

Each question is searched on its own, as an interactive user or a RAG application asks
them (``Searcher.search_many([question])``); the first question of each row is a warm-up
and not counted. Rows: the first stage alone (the naive way: no reranker), then the same
first stage with its top k reranked for each ``--rerank-depths``. Questions: ``--questions``
(one a line) or the questions people wrote about the PDFs (``human_questions.json``),
repeated to ``--n``. Run from the repository root, alone on the machine::

    .venv/bin/python -m bench.query_latency --output-dir outputs/finetune_bce --n 500
    .venv/bin/python -m bench.query_latency --model models/base/multilingual-e5-small \\
        --reranker outputs/finetune_bce/reranker --rerank-depths 10,20,50
    .venv/bin/python -m bench.query_latency --rerank-depths 10,20 --variant int8 --variant layers=4+int8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from bench.harness import BenchInputError, markdown_table, report_results, setup_logging


def questions_of(args: argparse.Namespace) -> list[str]:
    """``--questions`` lines, else the PDFs' human questions; repeated to ``--n``."""
    if args.questions is not None:
        found = [line.strip() for line in args.questions.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        file = Path(args.pdf_dir) / "human_questions.json"
        if not file.is_file():
            raise BenchInputError(f"{file} does not exist: pass --questions FILE (one question a line)")
        found = [q["question"] for q in json.loads(file.read_text(encoding="utf-8"))["questions"]]
    if not found:
        raise BenchInputError("no questions to search")
    return (found * (args.n // len(found) + 1))[: args.n]


def serve_as(reranker, variant: str) -> None:
    """Change a loaded CrossEncoderReranker's model in place as ``variant`` says (see the module's doc)."""
    import torch

    model = reranker.model
    for part in filter(None, variant.split("+")):
        key, _, value = part.partition("=")
        if key == "layers":
            encoder = model.model.base_model.encoder
            encoder.layer = encoder.layer[: int(value)]
        elif key == "maxlen":
            model.max_length = int(value)
        elif key == "int8":
            torch.ao.quantization.quantize_dynamic(model.model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        else:
            raise BenchInputError(f"--variant {variant!r}: {part!r} is not int8, layers=N or maxlen=N")


def time_questions(searcher, questions: list[str], top_k: int) -> np.ndarray:
    """Milliseconds of each question, searched alone (after one warm-up question)."""
    searcher.search_many(questions[:1], top_k)
    out = []
    for q in questions:
        started = time.perf_counter()
        searcher.search_many([q], top_k)
        out.append((time.perf_counter() - started) * 1000)
    return np.array(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.query_latency", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--output-dir", type=Path, default=Path("outputs/finetune_bce"), help="a run's output folder")
    add("--pdf-dir", type=Path, default=Path("data/pdf"))
    add("--model", default=None, help="default: the run's served model")
    add("--reranker", type=Path, default=None, help="default: the champion run's reranker")
    add("--rerank-depths", default="20", help="depths to time, e.g. 10,20,50 (default: %(default)s)")
    add("--questions", type=Path, default=None, help="one question a line (default: the PDFs' human questions)")
    add("--variant", action="append", default=[], help="the reranker served another way: int8, layers=N, "
        "maxlen=N, joined with + (repeatable; the reranker as trained is always timed)")
    add("--n", type=int, default=500, help="questions timed per row (default: %(default)s)")
    add("--top-k", type=int, default=10)
    add("--out", type=Path, default=Path("outputs/bench_query_latency"))
    return p


def main(argv: list[str] | None = None) -> int:
    from flows.query import open_searcher
    from tasks.core.errors import PipelineError
    from tasks.core.settings import Settings

    args = build_parser().parse_args(argv)
    setup_logging()
    try:
        depths = [int(d) for d in args.rerank_depths.split(",") if d.strip()]
        questions = questions_of(args)
        settings = Settings(pdf_dir=args.pdf_dir, output_dir=args.output_dir)
        rows, results = [], []
        for variant, depth in [("", 0), *((v, d) for v in ["", *args.variant] for d in depths)]:
            opened = open_searcher(args.pdf_dir, args.output_dir, settings, args.model, "hybrid", None, depth,
                                   args.reranker)
            if variant:
                serve_as(opened.searcher.reranker, variant)
            ms = time_questions(opened.searcher, questions, args.top_k)
            label = opened.searcher.retriever.label + (f" ({variant})" if variant else "")
            results.append({"retriever": label, "questions": len(ms), "p50_ms": round(float(np.median(ms)), 1),
                            "p95_ms": round(float(np.percentile(ms, 95)), 1), "mean_ms": round(float(ms.mean()), 1)})
            rows.append([label, str(len(ms)), *(f"{results[-1][k]:.1f}" for k in ("p50_ms", "p95_ms", "mean_ms"))])
    except (BenchInputError, PipelineError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = markdown_table(["retriever", "questions", "p50 ms", "p95 ms", "mean ms"], rows)
    report_results(args.out, {"rows": results, "top_k": args.top_k, "pdf_dir": str(args.pdf_dir)}, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
