"""Search your PDFs with the promoted model through a LlamaIndex VectorStoreIndex.

    python -m flows.query "尤金袋鼠分布在哪里？"
    python -m flows.query "问题" --top-k 5 --model outputs/finetune_bce/current --pdf-dir data/pdf

The model defaults to the champion of ``--output-dir`` (``current.json``, written when
a run is promoted); before any promotion, to the base model of the last run, with a
note. The index over the PDFs' chunks is built once per model and document set and
persisted under ``<output-dir>/query_index/``; a later query with the same model and
PDFs loads it. Prints the top chunks with file, page and score.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from tasks.settings import Settings


class QueryInputError(Exception):
    """A bad argument or a missing model: printed as one line, exit status 2."""


def build_parser() -> argparse.ArgumentParser:
    defaults = Settings.model_fields
    parser = argparse.ArgumentParser(
        prog="python -m flows.query", description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog='Example:\n  python -m flows.query "尤金袋鼠分布在哪里？" --top-k 3',
    )
    parser.add_argument("question", help="what to search for")
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
    from tasks.registry import read_champion

    if model:
        if not (Path(model) / "modules.json").is_file():
            raise QueryInputError(f"--model: {model} is not a sentence-transformers folder (no modules.json)")
        return str(model), "--model"
    champion = read_champion(output_dir)
    if champion is not None:
        return str(champion.model_path), f"champion, run {champion.run_id}"
    summary = output_dir / "summary.json"
    if summary.is_file():
        base = json.loads(summary.read_text(encoding="utf-8")).get("base_model", {}).get("path")
        if base and (Path(base) / "modules.json").is_file():
            return base, "no run promoted yet: the base model"
    raise QueryInputError(
        f"no model to search with: {output_dir} has no promoted run (current.json) and no summary.json; "
        "run `python -m flows.finetune_bce` first or pass --model FOLDER"
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        if args.top_k < 1:
            raise QueryInputError("--top-k must be at least 1")
        if not Path(args.pdf_dir).is_dir():
            raise QueryInputError(f"--pdf-dir: {args.pdf_dir} is not a folder")
        settings = Settings(pdf_dir=args.pdf_dir, output_dir=args.output_dir,
                            chunk_size=args.chunk_size, chunk_overlap=args.chunk_overlap,
                            chunk_by_section=args.chunk_by_section)
        model, origin = resolve_model(args.model, Path(args.output_dir))
    except (QueryInputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from tasks.query_index import open_index, search

    index, built, where = open_index(Path(args.pdf_dir), model, Path(args.output_dir) / "query_index", settings)
    print(f"model: {model} ({origin})")
    print(f"index: {where} ({'built now' if built else 'loaded'})")
    print()
    for hit in search(index, args.question, args.top_k):
        snippet = " ".join(hit.text.split())
        snippet = snippet if len(snippet) <= 120 else snippet[:119] + "…"
        print(f"{hit.rank}. {hit.score:.4f}  {hit.file}  p.{hit.page}")
        print(f"   {snippet}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
