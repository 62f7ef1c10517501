"""Extract the text of many PDFs in parallel on a Dask cluster (local processes or a real one).

    python -m flows.extract_pdfs --pdf-dir /srv/bce/pdf --output extracted.jsonl --workers 8
    python -m flows.extract_pdfs --pdf-dir /srv/bce/pdf --output extracted.jsonl \
        --address tcp://dask-scheduler:8786          # an existing Dask cluster

One Prefect task per PDF (``tasks.documents.reading.read_pdf``: the same extraction and cleaning
as the pipeline's documents stage), mapped over prefect-dask's ``DaskTaskRunner``. The
output is one JSON line per file: its path, content hash, page texts, or why it was
skipped. This is the scale-out path for extraction; the fine-tuning flow's documents
stage still reads its folder in one task (see docs/service.md, "Scale out").
"""

from __future__ import annotations

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

import argparse
import sys
from pathlib import Path
from typing import Any

from prefect import flow, task, unmapped

from tasks.core.errors import PdfReadError
from tasks.documents.reading import display_name, find_pdfs, read_pdf
from tasks.core.fileio import sha256_file, write_jsonl_atomic


@task(name="extract-pdf")
def extract_pdf(path: str, pdf_dir: str) -> dict[str, Any]:
    """Text of one PDF's pages, or the reason it cannot be used."""
    p = Path(path)
    row: dict[str, Any] = {"source": display_name(p.relative_to(pdf_dir)), "sha256": sha256_file(p)}
    try:
        row["pages"], _ = read_pdf(p)
    except PdfReadError as e:
        row["skipped"] = e.reason
    return row


@flow(name="extract-pdfs")
def extract_pdfs(pdf_dir: Path, output: Path) -> dict[str, int]:
    """Extract every PDF under ``pdf_dir`` with this flow's task runner; write ``output`` (JSONL)."""
    files = find_pdfs(Path(pdf_dir))
    futures = extract_pdf.map([str(p) for p in files], unmapped(str(pdf_dir)))
    rows = [f.result() for f in futures]
    write_jsonl_atomic(Path(output), rows)
    return {"files": len(rows), "skipped": sum("skipped" in r for r in rows)}


def dask_runner(workers: int = 2, address: str | None = None):
    """A DaskTaskRunner on ``address``, or on a temporary local cluster of ``workers`` processes.

    Example (not run as a doctest: tests/test_scale_out.py runs the same call and checks
    the pages; a second Dask cluster would add half a minute to the suite)::

        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "pages.jsonl"
        >>> extract_pdfs.with_options(task_runner=dask_runner(2))(pdf_dir=Path("data/pdf"), output=out)  # doctest: +SKIP
        {'files': 10, 'skipped': 0}
    """
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    # One thread per process: pypdf is pure Python, threads would share one GIL.
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.extract_pdfs", description=__doc__.splitlines()[0])
    p.add_argument("--pdf-dir", type=Path, required=True)
    p.add_argument("--output", type=Path, required=True, help="JSONL file, one line per PDF.")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="Local worker processes (default: all cores).")
    p.add_argument("--address", help="Scheduler of an existing Dask cluster, e.g. tcp://host:8786.")
    args = p.parse_args(argv)
    result = extract_pdfs.with_options(task_runner=dask_runner(args.workers, args.address))(
        pdf_dir=args.pdf_dir, output=args.output
    )
    print(f"{result['files']} PDF(s), {result['skipped']} skipped → {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
