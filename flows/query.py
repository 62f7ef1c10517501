"""Search your PDFs with the retriever the pipeline shipped: BM25, the model, or both fused.

    python -m flows.query "尤金袋鼠分布在哪里？"
    python -m flows.query "问题" --top-k 5 --model outputs/finetune_bce/current --pdf-dir data/pdf
    python -m flows.query --questions questions.txt --top-k 10 --json   # one JSON line per question

The model defaults to the champion of ``--output-dir`` (``current.json``, written when
a run is promoted); before any promotion, to the base model of the last run, with a
note. The retriever defaults to the one the run chose on its validation questions
(``--retriever auto``): BM25 alone, the dense model alone, or their fusion with its
weight, ranked by the same code as the evaluation. The index over the PDFs' chunks (a
LlamaIndex VectorStoreIndex and a BM25 index beside it) is built once per model and
document set and persisted under ``<output-dir>/query_index/``; a later query with the
same model and PDFs loads it. Prints the top chunks with file, page and score.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from typing import TYPE_CHECKING

from tasks.core.errors import PipelineError, UsageError
from tasks.core.settings import Settings

if TYPE_CHECKING:
    from tasks.retrieval.retriever import RetrieverSpec


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings.model_fields
    parser = argparse.ArgumentParser(
        prog="python -m flows.query", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Example:\n  python -m flows.query "尤金袋鼠分布在哪里？" --top-k 3',
    )
    parser.add_argument("question", nargs="?", help="what to search for")
    parser.add_argument("--questions", type=Path, default=None,
                        help="a text file with one question a line, searched after one load of the index")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON line per question: {"question", "results": [{"text", "source", "page", '
                             '"score", "chunk_id"}]}')
    parser.add_argument("--retriever", choices=("auto", "dense", "bm25", "hybrid", "rrf"), default="auto",
                        help="auto: the retriever the run shipped (dense when none was recorded) (default: %(default)s)")
    parser.add_argument("--w-dense", type=float, default=None,
                        help="with --retriever hybrid: the dense weight in [0, 1] (default: the run's, else 0.5)")
    parser.add_argument("--top-k", type=int, default=5, help="chunks to print (default: %(default)s)")
    parser.add_argument("--model", default=None,
                        help="sentence-transformers folder (default: the promoted model of --output-dir)")
    parser.add_argument("--pdf-dir", type=Path, default=defaults["pdf_dir"].default,
                        help="folder of PDFs to search (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, default=defaults["output_dir"].default,
                        help="the pipeline's output folder: champion pointer and index cache (default: %(default)s)")
    parser.add_argument("--chunk-size", type=int, default=defaults["chunk_size"].default)
    parser.add_argument("--chunk-overlap", type=int, default=defaults["chunk_overlap"].default)
    parser.add_argument("--chunk-by-section", action=argparse.BooleanOptionalAction,
                        default=defaults["chunk_by_section"].default,
                        help="chunk as the pipeline's --chunk-by-section does (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is loaded and built")
    return parser


def resolve_model(model: str | None, output_dir: Path) -> tuple[str, str]:
    """(model path, where it came from): --model, else the champion, else the last run's base model."""
    from tasks.registry.runs import read_champion

    if model:
        if not (Path(model) / "modules.json").is_file():
            raise UsageError(f"--model: {model} is not a sentence-transformers folder (no modules.json)")
        return str(model), "--model"
    champion = read_champion(output_dir)
    if champion is not None:
        return str(champion.model_path), f"champion, run {champion.run_id}"
    summary = output_dir / "summary.json"
    if summary.is_file():
        base = json.loads(summary.read_text(encoding="utf-8")).get("base_model", {}).get("path")
        if base and (Path(base) / "modules.json").is_file():
            return base, "no run promoted yet: the base model"
    raise UsageError(
        f"no model to search with: {output_dir} has no promoted run (current.json) and no summary.json; "
        "run `python -m flows.finetune_bce` first or pass --model FOLDER"
    )


def recorded_retriever(output_dir: Path, model_origin: str) -> dict | None:
    """The retriever record the pipeline wrote for the model ``resolve_model`` chose, if any:
    the champion's in ``current.json``, else the last run's in ``summary.json``."""
    if model_origin == "--model":
        return None
    pointer, summary = output_dir / "current.json", output_dir / "summary.json"
    if model_origin.startswith("champion") and pointer.is_file():
        return json.loads(pointer.read_text(encoding="utf-8")).get("retriever")
    if summary.is_file():
        return (json.loads(summary.read_text(encoding="utf-8")).get("promotion") or {}).get("retriever")
    return None


def resolve_retriever(choice: str, w_dense: float | None, recorded: dict | None) -> tuple["RetrieverSpec", str]:
    """(retriever, where it came from) for ``--retriever``/``--w-dense`` and the run's record."""
    from tasks.retrieval.retriever import RetrieverSpec

    if w_dense is not None and not 0.0 <= w_dense <= 1.0:
        raise UsageError(f"--w-dense must lie in [0, 1], got {w_dense}")
    if w_dense is not None and choice != "hybrid":
        raise UsageError("--w-dense goes with --retriever hybrid")
    tokenizer = (recorded or {}).get("tokenizer", "char")
    if choice == "auto":
        if recorded:
            return RetrieverSpec.from_dict(recorded), "chosen by the run on its validation questions"
        return RetrieverSpec("dense", tokenizer=tokenizer), "no retriever recorded: the model alone"
    if choice == "hybrid":
        w = w_dense if w_dense is not None else (recorded or {}).get("w_dense") or 0.5
        return RetrieverSpec.hybrid(w, tokenizer), "--retriever hybrid"
    return RetrieverSpec(choice, tokenizer=tokenizer), f"--retriever {choice}"


def read_questions(path: Path) -> list[str]:
    """The non-empty lines of ``path``."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--questions: cannot read {path} ({e}); give a UTF-8 text file, one question a line")
    questions = [line.strip() for line in lines if line.strip()]
    if not questions:
        raise UsageError(f"--questions: {path} has no question (one question a line)")
    return questions


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        if args.top_k < 1:
            raise UsageError("--top-k must be at least 1")
        if not Path(args.pdf_dir).is_dir():
            raise UsageError(f"--pdf-dir: {args.pdf_dir} is not a folder")
        settings = Settings(pdf_dir=args.pdf_dir, output_dir=args.output_dir,
                            chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap,
                            chunk_by_section=args.chunk_by_section)
        if (args.question is None) == (args.questions is None):
            raise UsageError("give a question or --questions FILE (one of the two)")
        questions = read_questions(args.questions) if args.questions else [args.question]
        model, origin = resolve_model(args.model, Path(args.output_dir))
        retriever, retriever_origin = resolve_retriever(args.retriever, args.w_dense,
                                                        recorded_retriever(Path(args.output_dir), origin))
    except (PipelineError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from tasks.retrieval.index import Searcher, load_bm25, open_index

    index, built, where = open_index(Path(args.pdf_dir), model, Path(args.output_dir) / "query_index", settings)
    searcher = Searcher(index, retriever, load_bm25(index, retriever))
    # With --json, stdout carries only the results; what was loaded goes to stderr.
    info = sys.stderr if args.json else sys.stdout
    print(f"model: {model} ({origin})", file=info)
    print(f"retriever: {retriever.describe()} ({retriever_origin})", file=info)
    print(f"index: {where} ({'built now' if built else 'loaded'})", file=info)
    for question, hits in zip(questions, searcher.search_many(questions, args.top_k)):
        if args.json:
            results = [{"text": h.text, "source": h.file, "page": h.page, "score": round(h.score, 6),
                        "chunk_id": h.chunk_id} for h in hits]
            print(json.dumps({"question": question, "results": results}, ensure_ascii=False))
            continue
        print()
        if len(questions) > 1:
            print(question)
        for hit in hits:
            snippet = " ".join(hit.text.split())
            snippet = snippet if len(snippet) <= 120 else snippet[:119] + "…"
            print(f"{hit.rank}. {hit.score:.4f}  {hit.file}  p.{hit.page}")
            print(f"   {snippet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
