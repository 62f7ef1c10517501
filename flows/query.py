"""Search your PDFs with the retriever the pipeline shipped: BM25, the model, or both fused, and its reranker.

    python -m flows.query "尤金袋鼠分布在哪里？"
    python -m flows.query "问题" --top-k 5 --model outputs/finetune_bce/current --pdf-dir data/pdf
    python -m flows.query --questions questions.txt --top-k 10 --json   # one JSON line per question

The model defaults to the champion of ``--output-dir`` (``current.json``, written when
a run is promoted); before any promotion, to the base model of the last run, with a
note. The retriever defaults to the one the run chose on its validation questions
(``--retriever auto``): BM25 alone, the dense model alone, or their fusion with its
weight, with its top k reranked by the run's cross-encoder if the run chose that, ranked
by the same code as the evaluation (the reranker is loaded once). The index over the PDFs' chunks (a
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
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    parser.add_argument("--rerank-k", type=int, default=None,
                        help="rerank the first stage's top K with the cross-encoder; 0: no reranker "
                             "(default: what the run chose)")
    parser.add_argument("--reranker", type=Path, default=None,
                        help="cross-encoder folder (default: the reranker of the champion's run)")
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


def resolve_retriever(choice: str, w_dense: float | None, recorded: dict | None,
                      rerank_k: int | None = None) -> tuple["RetrieverSpec", str]:
    """(retriever, where it came from) for ``--retriever``/``--w-dense``/``--rerank-k`` and the run's record."""
    spec, origin = _first_stage(choice, w_dense, recorded)
    if rerank_k is None:
        return spec, origin
    if rerank_k < 0:
        raise UsageError(f"--rerank-k must be 0 (no reranker) or more, got {rerank_k}")
    if rerank_k == 0:
        return spec.first_stage, f"{origin}, --rerank-k 0"
    return spec.reranked(rerank_k), f"{origin}, --rerank-k {rerank_k}"


def _first_stage(choice: str, w_dense: float | None, recorded: dict | None) -> tuple["RetrieverSpec", str]:
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


def resolve_reranker(given: Path | None, output_dir: Path, model_origin: str) -> Path | None:
    """The cross-encoder folder: ``--reranker``, else the one the champion's run trained."""
    from tasks.registry.release import champion_reranker
    from tasks.registry.runs import read_champion

    if given is not None:
        if not (Path(given) / "config.json").is_file():
            raise UsageError(f"--reranker: {given} is not a cross-encoder folder (no config.json)")
        return Path(given)
    champion = read_champion(output_dir) if model_origin.startswith("champion") else None
    folder = champion_reranker(champion) if champion is not None else None
    return folder if folder is not None and (folder / "config.json").is_file() else None


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


@dataclass
class Opened:
    """A searcher ready for questions, and where each of its parts came from."""

    searcher: Any
    lines: list[str]  # model, retriever, reranker, index: one line each, for the user


def open_searcher(pdf_dir: Path, output_dir: Path, settings: Settings, model: str | None = None,
                  retriever: str = "auto", w_dense: float | None = None, rerank_k: int | None = None,
                  reranker: Path | None = None) -> Opened:
    """The searcher ``flows.query`` searches with: the run's model, retriever and reranker
    (each overridable), over the index of ``pdf_dir`` (loaded, or built once)."""
    from tasks.retrieval.index import Searcher, load_bm25, open_index
    from tasks.retrieval.rerank import CrossEncoderReranker

    if not Path(pdf_dir).is_dir():
        raise UsageError(f"--pdf-dir: {pdf_dir} is not a folder")
    model_path, origin = resolve_model(model, Path(output_dir))
    spec, spec_origin = resolve_retriever(retriever, w_dense, recorded_retriever(Path(output_dir), origin), rerank_k)
    folder = resolve_reranker(reranker, Path(output_dir), origin) if spec.rerank_k else None
    if spec.rerank_k and folder is None:
        raise UsageError(f"{spec.label} needs a reranker and {origin} has none: pass --reranker FOLDER, "
                         "or --rerank-k 0 to search without one")
    index, built, where = open_index(Path(pdf_dir), model_path, Path(output_dir) / "query_index", settings)
    searcher = Searcher(index, spec, load_bm25(index, spec),
                        CrossEncoderReranker(folder, settings.eval_batch_size) if folder is not None else None)
    lines = [f"model: {model_path} ({origin})", f"retriever: {spec.describe()} ({spec_origin})",
             *([f"reranker: {folder}"] if folder is not None else []),
             f"index: {where} ({'built now' if built else 'loaded'})"]
    return Opened(searcher, lines)


def shipped_retriever(output_dir: str | Path = "outputs/finetune_bce", pdf_dir: str | Path = "data/pdf",
                      top_k: int = 5) -> Any:
    """What the run in ``output_dir`` shipped, over the PDFs of ``pdf_dir``, as a LlamaIndex
    retriever (:class:`tasks.retrieval.llama_retriever.ShippedRetriever`): it ranks as
    ``flows.query`` and the evaluation do.

    >>> retriever = shipped_retriever("outputs/finetune_bce", "data/pdf", top_k=3)  # doctest: +SKIP
    >>> [n.node.metadata["file"] for n in retriever.retrieve("尤金袋鼠分布在哪里？")]  # doctest: +SKIP
    ['sample_01.pdf', ...]
    """
    from tasks.retrieval.llama_retriever import ShippedRetriever

    return ShippedRetriever(open_searcher(Path(pdf_dir), Path(output_dir), Settings(pdf_dir=pdf_dir,
                                                                                    output_dir=output_dir)).searcher,
                            top_k)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        if args.top_k < 1:
            raise UsageError("--top-k must be at least 1")
        settings = Settings(pdf_dir=args.pdf_dir, output_dir=args.output_dir,
                            chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap,
                            chunk_by_section=args.chunk_by_section)
        if (args.question is None) == (args.questions is None):
            raise UsageError("give a question or --questions FILE (one of the two)")
        questions = read_questions(args.questions) if args.questions else [args.question]
        opened = open_searcher(args.pdf_dir, args.output_dir, settings, args.model, args.retriever, args.w_dense,
                               args.rerank_k, args.reranker)
    except (PipelineError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    # With --json, stdout carries only the results; what was loaded goes to stderr.
    info = sys.stderr if args.json else sys.stdout
    for line in opened.lines:
        print(line, file=info)
    for question, hits in zip(questions, opened.searcher.search_many(questions, args.top_k)):
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
            print(f"{hit.rank}. {hit.score:.4f}  {hit.file}  p.{hit.pages}")
            print(f"   {snippet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
