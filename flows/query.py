"""Search your PDFs with the retriever the pipeline shipped: BM25, the model, or both fused, and its reranker.

    python -m flows.query "尤金袋鼠分布在哪里？"
    python -m flows.query "问题" --top-k 5 --pdf-dir data/pdf
    python -m flows.query --questions questions.txt --top-k 10 --json   # one JSON line per question

What it searches with is what ``--output-dir``'s ``current.json`` records as served: the
champion's model (or, before any promotion, the base model) with the retriever the run chose
on its validation questions — BM25 alone, the dense model alone, or their fusion with its
weight, with its top k reranked by the run's cross-encoder if the run chose that — ranked by
the same code as the evaluation (the reranker is loaded once). The PDFs are read and chunked
as that run read and chunked its own (its chunk size, overlap, sections, unreadable-PDF
filter); a flag that says otherwise is refused, since the model was measured on those chunks
(pass ``--model`` to search a model folder with settings of your choosing). The index over
the chunks (a LlamaIndex VectorStoreIndex, the vectors and a BM25 index beside it) is built
once per model, document set and chunking, and persisted under ``<output-dir>/query_index/``;
a later query with the same ones loads it. Prints the top chunks with file, page and score.
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
    from tasks.registry.runs import Serving
    from tasks.retrieval.retriever import RetrieverSpec


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings.model_fields
    parser = argparse.ArgumentParser(
        prog="python -m flows.query", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Example:\n  python -m flows.query "尤金袋鼠分布在哪里？" --top-k 3\n\n'
               "The PDFs are read and chunked as the run that made the served model read and chunked its own\n"
               "(current.json); a reading or chunking flag that contradicts that run is refused: drop it, or\n"
               "pass --model FOLDER to search a model with settings of your choosing.",
    )
    parser.add_argument("question", nargs="?", help="what to search for")
    parser.add_argument("--questions", type=Path, default=None,
                        help="a text file with one question a line, searched after one load of the index")
    parser.add_argument("--json", action="store_true",
                        help='print one JSON line per question: {"question", "results": [{"text", "source", "page", '
                             '"pages" (e.g. "3–4"), "score", "chunk_id"}]}')
    parser.add_argument("--retriever", choices=("auto", "dense", "bm25", "hybrid", "rrf"), default="auto",
                        help="auto: the retriever the run shipped (dense when none was recorded) (default: %(default)s)")
    parser.add_argument("--w-dense", type=float, default=None,
                        help="with --retriever hybrid: the dense weight in [0, 1] (default: the run's, else 0.5)")
    parser.add_argument("--rerank-k", type=int, default=None,
                        help="rerank the first stage's top K with the cross-encoder; 0: no reranker "
                             "(default: what the run chose)")
    parser.add_argument("--reranker", type=Path, default=None,
                        help="cross-encoder folder (default: the one current.json serves, else the served run's)")
    parser.add_argument("--top-k", type=int, default=5, help="chunks to print (default: %(default)s)")
    parser.add_argument("--model", default=None,
                        help="sentence-transformers folder (default: the model --output-dir's current.json serves: "
                             "the champion, or the base model before any promotion)")
    parser.add_argument("--pdf-dir", type=Path, default=defaults["pdf_dir"].default,
                        help="folder of PDFs to search (default: %(default)s)")
    parser.add_argument("--output-dir", type=Path, default=defaults["output_dir"].default,
                        help="the pipeline's output folder: what it serves (current.json) and the index cache "
                             "(default: %(default)s)")
    # How the PDFs are read and chunked: the served run's settings (INDEX_SETTINGS); a flag may only agree.
    run_default = "default: as the run that made the served model; with --model: %s"
    parser.add_argument("--chunk-size", type=int, default=None,
                        help=f"chunk size in tokens ({run_default % defaults['chunk_size'].default})")
    parser.add_argument("--chunk-overlap", type=int, default=None,
                        help=f"chunk overlap in tokens ({run_default % defaults['chunk_overlap'].default})")
    parser.add_argument("--chunk-by-section", action=argparse.BooleanOptionalAction, default=None,
                        help=f"cut pages at their headings first ({run_default % defaults['chunk_by_section'].default})")
    parser.add_argument("--garbage-pdfs", choices=("skip", "keep"), default=None,
                        help=f"PDFs of mostly unreadable text ({run_default % defaults['garbage_pdfs'].default})")
    parser.add_argument("--garbage-threshold", type=float, default=None,
                        help="share of unreadable characters that makes a PDF unreadable "
                             f"({run_default % defaults['garbage_threshold'].default})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is loaded and built")
    return parser


def resolve_model(model: str | None, output_dir: Path) -> tuple[str, str, "Serving | None"]:
    """(model path, where it came from, what current.json records as served): --model, else
    the model ``current.json`` names (the champion, or the base model before any promotion)."""
    from tasks.registry.runs import read_serving

    if model:
        if not (Path(model) / "modules.json").is_file():
            raise UsageError(f"--model: {model} is not a sentence-transformers folder (no modules.json)")
        return str(model), "--model", None
    serving = read_serving(output_dir)
    if serving is None:
        raise UsageError(
            f"no model to search with: {output_dir} has no current.json (what a run serves); "
            "run `python -m flows.finetune_bce` first or pass --model FOLDER"
        )
    if not (serving.model_path / "modules.json").is_file():
        raise UsageError(f"{output_dir / 'current.json'} names {serving.model_path}, which is not a model folder: "
                         "restore it, run `python -m flows.finetune_bce` again, or pass --model FOLDER")
    origin = f"champion, run {serving.run_id}" if serving.run_id else "no run promoted yet: the base model"
    return str(serving.model_path), origin, serving


def resolve_index_settings(serving: "Serving | None", given: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(reading and chunking settings, where they came from): those the served run recorded,
    which ``given`` flags may repeat but not change (the model was measured on those chunks);
    with ``--model`` (no ``serving``) or a run that recorded none, the defaults and the flags."""
    from tasks.retrieval.index import INDEX_SETTINGS

    defaults = {name: Settings.model_fields[name].default for name in INDEX_SETTINGS}
    if serving is None:
        return {**defaults, **given}, "defaults and flags, as --model was given"
    recorded = serving.index_settings
    if not recorded:
        note = (f"{serving.origin} recorded no reading and chunking settings (made before runs recorded them): "
                "chunking with the defaults and your flags; a new run of `python -m flows.finetune_bce` records them")
        logging.getLogger(__name__).warning(note)
        return {**defaults, **given}, "defaults and flags: the run recorded none"
    for name, value in given.items():
        if name in recorded and value != recorded[name]:
            flag = "--" + name.replace("_", "-")
            raise UsageError(
                f"{flag} {value}: the served model ({serving.origin}) was evaluated on PDFs read and chunked with "
                f"{name} = {recorded[name]}, and search uses the same; drop {flag}, or pass --model FOLDER to "
                "search a model with other chunks")
    return {**defaults, **{k: v for k, v in recorded.items() if k in defaults}}, f"as {serving.origin} chunked"


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


def resolve_reranker(given: Path | None, output_dir: Path, serving: "Serving | None") -> Path | None:
    """The cross-encoder folder: ``--reranker``, else the one the served retriever reranks
    with, else the one the served run trained (for ``--rerank-k``)."""
    from tasks.registry.runs import RERANKER_DIR, run_dir

    if given is not None:
        if not (Path(given) / "config.json").is_file():
            raise UsageError(f"--reranker: {given} is not a cross-encoder folder (no config.json)")
        return Path(given)
    if serving is None:
        return None
    folder = serving.reranker_path or (run_dir(output_dir, serving.run_id) / RERANKER_DIR if serving.run_id else None)
    return folder if folder is not None and (folder / "config.json").is_file() else None


def resolve_expansion(serving: "Serving | None") -> dict[str, list[str]]:
    """The questions by chunk the served retriever's BM25 indexes with the chunks."""
    from tasks.retrieval.expansion import load_expansion

    where = serving.expansion_path if serving is not None else None
    if where is None or not where.is_file():
        raise UsageError(f"the served retriever indexes each chunk with its questions, but {where or 'current.json'} "
                         "does not hold them: run `python -m flows.finetune_bce` again, or pass --retriever")
    try:
        return load_expansion(where)
    except ValueError as e:
        raise UsageError(str(e)) from None


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
    lines: list[str]  # model, retriever, reranker, chunks, index: one line each, for the user


def open_searcher(pdf_dir: Path, output_dir: Path, settings: Settings, model: str | None = None,
                  retriever: str = "auto", w_dense: float | None = None, rerank_k: int | None = None,
                  reranker: Path | None = None, index_flags: dict[str, Any] | None = None) -> Opened:
    """The searcher ``flows.query`` searches with: what ``current.json`` serves — model,
    retriever, reranker (each overridable) — over the index of ``pdf_dir`` read and chunked
    as the served run did (``index_flags``: the reading and chunking flags given, which may
    not contradict it), loaded or built once."""
    from tasks.retrieval.index import Searcher, open_index
    from tasks.retrieval.rerank import CrossEncoderReranker

    if not Path(pdf_dir).is_dir():
        raise UsageError(f"--pdf-dir: {pdf_dir} is not a folder")
    model_path, origin, serving = resolve_model(model, Path(output_dir))
    chunking, chunking_origin = resolve_index_settings(serving, index_flags or {})
    try:
        settings = Settings(**{**settings.model_dump(), **chunking})
    except ValueError as e:
        raise UsageError(f"reading and chunking settings: {e}") from None
    recorded = serving.record.get("retriever") if serving is not None else None
    spec, spec_origin = resolve_retriever(retriever, w_dense, recorded, rerank_k)
    folder = resolve_reranker(reranker, Path(output_dir), serving) if spec.rerank_k else None
    if spec.rerank_k and folder is None:
        raise UsageError(f"{spec.label} needs a reranker and {origin} has none: pass --reranker FOLDER, "
                         "or --rerank-k 0 to search without one")
    expansion = resolve_expansion(serving) if spec.expanded else None
    index, built, where = open_index(Path(pdf_dir), model_path, Path(output_dir) / "query_index", settings)
    searcher = Searcher(index, spec, reranker=CrossEncoderReranker(folder, settings.eval_batch_size)
                        if folder is not None else None, expansion=expansion)
    shown = ", ".join(f"{k} {v}" for k, v in chunking.items())
    lines = [f"model: {model_path} ({origin})", f"retriever: {spec.describe()} ({spec_origin})",
             *([f"reranker: {folder}"] if folder is not None else []),
             *([f"BM25 expansion: {serving.expansion_path} (questions of {len(expansion)} chunks)"]
               if expansion is not None else []),
             f"chunks: {shown} ({chunking_origin})",
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
    from tasks.retrieval.index import INDEX_SETTINGS

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        if args.top_k < 1:
            raise UsageError("--top-k must be at least 1")
        settings = Settings(pdf_dir=args.pdf_dir, output_dir=args.output_dir)
        index_flags = {name: getattr(args, name) for name in INDEX_SETTINGS if getattr(args, name) is not None}
        if (args.question is None) == (args.questions is None):
            raise UsageError("give a question or --questions FILE (one of the two)")
        questions = read_questions(args.questions) if args.questions else [args.question]
        opened = open_searcher(args.pdf_dir, args.output_dir, settings, args.model, args.retriever, args.w_dense,
                               args.rerank_k, args.reranker, index_flags)
    except (PipelineError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    # With --json, stdout carries only the results; what was loaded goes to stderr.
    info = sys.stderr if args.json else sys.stdout
    for line in opened.lines:
        print(line, file=info)
    for question, hits in zip(questions, opened.searcher.search_many(questions, args.top_k)):
        if args.json:
            results = [{"text": h.text, "source": h.file, "page": h.page, "pages": h.pages, "score": round(h.score, 6),
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
