"""What the benchmarks in ``bench/`` share: paths, logging, bad-input errors, the table and results files.

A benchmark measures its configs into rows, then hands them here::

    from bench import harness

    table = harness.markdown_table(["config", "NDCG@10"], [[row["config"], f"{row['ndcg']:.4f}"] for row in rows])
    harness.report_results(args.out, {"rows": rows}, table, f"{len(rows)} configs")  # prints; OUT/results.json, .md

The table is the report's own markdown (:func:`tasks.reporting.tables.markdown_grid`);
both files are written atomically, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path
from typing import Any

from tasks.core.fileio import write_json_atomic, write_text_atomic
from tasks.reporting.tables import markdown_grid

REPO_ROOT = Path(__file__).resolve().parents[1]
# Data never copied into the repository (licences): beside it, in ../shared/data.
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
CMRC_DATA = SHARED_DATA / "cmrc2018_trial.json"


class BenchInputError(ValueError):
    """A bad command-line value or unusable data: printed as one line, no traceback."""


def setup_logging(verbose: bool = False, fmt: str = "%(levelname)s %(name)s: %(message)s") -> None:
    """Warnings from the libraries (everything with ``verbose``), progress from ``bench`` and ``tasks``."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format=fmt)
    for name in ("bench", "tasks"):
        logging.getLogger(name).setLevel(logging.INFO)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], left: Collection[int] = (0,)) -> str:
    """The results as a markdown table (also readable on a console): cells as given
    (``str()`` of non-strings), the columns at ``left`` aligned left, the rest right.

    >>> print(markdown_table(["config", "pairs"], [["base", 0]]))
    | config | pairs |
    |---|---:|
    | base | 0 |
    """
    return markdown_grid(list(header), [[str(c) for c in row] for row in rows], left)


def write_results(out: Path, results: Any, markdown: str) -> None:
    """``OUT/results.json`` (``results``) and ``OUT/results.md`` (``markdown``), each written atomically."""
    write_json_atomic(Path(out) / "results.json", results)
    write_text_atomic(Path(out) / "results.md", markdown if markdown.endswith("\n") else markdown + "\n")


def report_results(out: Path, results: Any, table: str, *notes: str, markdown: str | None = None) -> None:
    """Print ``table`` after a blank line, then each of ``notes``; write ``results`` and
    ``markdown`` (default: the table) with :func:`write_results`."""
    write_results(out, results, table if markdown is None else markdown)
    print()
    print(table)
    for note in notes:
        print(note)


def load_average() -> str:
    """The 1, 5 and 15 minute load averages, e.g. ``'0.52 0.40 0.31'`` (``unknown`` where there is none)."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"
