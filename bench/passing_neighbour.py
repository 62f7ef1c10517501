"""Benchmark: gguf generation beside a neighbour busy for its first seconds only, threads fixed at load against looked at again.

The gguf backend chooses llama.cpp's threads from the cores other processes leave free.
Chosen once, at load, a neighbour busy only at that moment (a browser tab, another
command just finishing) costs the whole run a core. Looked at again every few seconds
(the default now), the threads grow back once the neighbour stops. This runs the
pipeline's own ``generate_questions`` with the bundled GGUF (or ``--llm-model``) on the
same chunks twice:

==========  ==========================================================
row         threads
==========  ==========================================================
fixed       chosen from the free cores at load, kept (what it did before)
rechecked   chosen at load, then again every ``--recheck-s`` seconds
==========  ==========================================================

Each row is a fresh Python process with a new temporary generation cache (every chunk is
really generated; retries off), the same wait policy (passive) and no ``llm_threads``.
``--neighbours`` one-core busy loops start two seconds before the row, so they are there
when its model loads, and are stopped ``--neighbour-s`` seconds later (default 30).

Columns: "at load" is the thread count chosen at load and why; "changes" the thread
counts set while generating (seconds after load → threads); "wall s" the row's process
from start to end; "gen s" and "s/chunk" generation alone (the shared prefix included,
the load not); "fixed/rechecked" the fixed row's generation time over this row's.

Run it on an otherwise idle machine, with enough chunks to outlast the neighbour (on 2
cores the bundled model takes about 3 s a chunk with 2 threads)::

    .venv/bin/python -m bench.passing_neighbour --n-chunks 32
    .venv/bin/python -m bench.passing_neighbour --n-chunks 32 --neighbour-s 60 --out outputs/bench_passing_60s

Chunks: as in ``bench.generation`` (the first CMRC 2018 passages, or ``data/pdf``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.generation import load_chunk_texts
from bench.harness import CMRC_DATA as CMRC, REPO_ROOT as ROOT
from bench.harness import load_average, markdown_table, report_results
from bench.shared_cpu_generation import BUSY_LOOPS, ONE_THREAD_ENV, WAIT_VARIABLES, WARM_UP_S, config_settings
from tasks.questions.llm.cpu_threads import RECHECK_S, all_cores

log = logging.getLogger("bench.passing_neighbour")

CONFIGS = ("fixed", "rechecked")


@dataclass
class Row:
    config: str  # "fixed" or "rechecked"
    threads_at_load: int
    why: str  # why that many at load (the run log's words)
    changes: list[tuple[float, int]]  # (seconds after load, threads from then on)
    chunks: int
    load_s: float
    gen_s: float
    wall_s: float
    questions: int  # chunks with at least one kept question
    neighbour_cores: float | None = None  # CPU the neighbours got while they ran
    s_per_chunk: float = 0.0
    fixed_over_this: float = 1.0
    threads_at_end: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.changes = [tuple(c) for c in self.changes]  # type: ignore[misc] - lists from JSON
        self.threads_at_end = self.changes[-1][1] if self.changes else self.threads_at_load


def add_ratios(rows: list[Row]) -> list[Row]:
    """Fill s/chunk and the fixed row's generation time over each row's."""
    fixed = next((r for r in rows if r.config == "fixed"), None)
    for r in rows:
        r.s_per_chunk = r.gen_s / r.chunks if r.chunks else float("nan")
        r.fixed_over_this = fixed.gen_s / r.gen_s if fixed and r.gen_s else float("nan")
    return rows


def result_table(rows: list[Row]) -> str:
    head = ["threads", "at load", "why", "changes", "at end", "load s", "gen s", "wall s", "s/chunk",
            "fixed/rechecked", "chunks with a question", "neighbour cores"]
    return markdown_table(head, ([
        r.config, r.threads_at_load, r.why, ", ".join(f"{t:.0f} s → {n}" for t, n in r.changes) or "none",
        r.threads_at_end, f"{r.load_s:.1f}", f"{r.gen_s:.1f}", f"{r.wall_s:.1f}", f"{r.s_per_chunk:.2f}",
        f"{r.fixed_over_this:.2f}x", f"{r.questions}/{r.chunks}",
        "" if r.neighbour_cores is None else f"{r.neighbour_cores:.2f}",
    ] for r in rows), left=(0, 2, 3))


# --- one row, in its own process ------------------------------------------------------------


def run_worker(config: str, chunks_file: Path, llm_model: str | None, recheck_s: float) -> dict[str, Any]:
    """Generate questions for the chunks in ``chunks_file``, threads fixed or rechecked; the measurements."""
    from tasks.core.records import Chunk
    from tasks.questions.generation import generate_questions
    from tasks.questions.llm.gguf_backend import GGUFWriter

    texts = json.loads(chunks_file.read_text(encoding="utf-8"))
    chunks = [Chunk(f"c{i}", "bench", "bench", 1, t) for i, t in enumerate(texts)]
    with tempfile.TemporaryDirectory(prefix="bench-passing-cache-") as cache:
        settings = config_settings("new", Path(cache), llm_model)  # free cores, passive wait
        writer = GGUFWriter.from_settings(settings)
        writer.recheck_threads_s = recheck_s if config == "rechecked" else None
        started = time.perf_counter()
        writer.load()
        stats = writer.engine_stats
        load_s = time.perf_counter() - started - stats.prefix_seconds
        # The writer is loaded already: generate_questions uses it, then closes it.
        result = generate_questions(chunks, settings, lambda _: writer, show_progress=True)
    if result.stats.requests_sent != len(chunks):
        raise SystemExit(f"{config}: {result.stats.requests_sent} of {len(chunks)} chunks generated; the cache leaked")
    tuner = writer.thread_tuner
    return {
        "threads_at_load": writer.thread_choice.threads, "why": writer.thread_choice.why,
        "changes": tuner.changes if tuner is not None else [], "chunks": len(chunks), "load_s": load_s,
        "gen_s": result.stats.seconds_in_llm + stats.prefix_seconds, "questions": result.stats.chunks_with_questions,
    }


def run_row(config: str, chunks_file: Path, args: argparse.Namespace) -> Row:
    """One row: the worker process for ``config``, the neighbours busy for its first ``args.neighbour_s``."""
    import psutil

    cmd = [sys.executable, "-m", "bench.passing_neighbour", "--worker", config, "--chunks-file", str(chunks_file),
           "--recheck-s", str(args.recheck_s)]
    if args.llm_model:
        cmd += ["--llm-model", args.llm_model]
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    log.info("row: threads %s, %d neighbour(s) for %.0f s", config, args.neighbours, args.neighbour_s)
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOPS["python"]], env={**os.environ, **ONE_THREAD_ENV})
             for _ in range(args.neighbours)]
    handles = [psutil.Process(p.pid) for p in loops]
    born = time.monotonic()
    cores: list[float] = []
    once = threading.Lock()

    def stop_neighbours() -> None:
        with once:
            if cores:
                return
            busy = sum(_cpu(h) for h in handles)
            for p in loops:
                p.kill()
                p.wait()
            cores.append(busy / (time.monotonic() - born))

    time.sleep(WARM_UP_S)
    timer = threading.Timer(args.neighbour_s, stop_neighbours)
    started = time.monotonic()
    timer.start()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    finally:
        timer.cancel()
        stop_neighbours()  # the row ended before they were due to stop, or it failed
    wall_s = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"the {config} row failed (exit {proc.returncode}); its log is above")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return Row(config=config, wall_s=wall_s, neighbour_cores=cores[0] if handles else None, **result)


def _cpu(process: Any) -> float:
    try:
        t = process.cpu_times()
    except Exception:  # noqa: BLE001 - psutil.NoSuchProcess: it is gone, and so is its CPU time
        return 0.0
    return t.user + t.system


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-chunks", type=int, default=32, help="Chunks each row asks about (default 32).")
    parser.add_argument("--source", choices=["cmrc", "pdf"], default="cmrc" if CMRC.is_file() else "pdf")
    parser.add_argument("--neighbours", type=int, default=1, help="One-core busy loops (default 1).")
    parser.add_argument("--neighbour-s", type=float, default=30.0,
                        help="Seconds the neighbours stay busy after the row starts (default 30).")
    parser.add_argument("--recheck-s", type=float, default=RECHECK_S,
                        help=f"How often the rechecked row looks at the load (default {RECHECK_S:g}).")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="Which rows to run (default: fixed,rechecked).")
    parser.add_argument("--llm-model", default=None, help="A GGUF path (default: the bundled Qwen2.5-Coder-1.5B Q4_K_M).")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_passing_neighbour",
                        help="Where results.json and results.md go.")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--chunks-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n_chunks < 1 or args.neighbours < 1 or args.neighbour_s <= 0 or args.recheck_s <= 0:
        parser.error("--n-chunks and --neighbours must be at least 1, --neighbour-s and --recheck-s above 0")
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if set(args.configs) - set(CONFIGS) or not args.configs:
        parser.error(f"--configs takes a comma-separated subset of {','.join(CONFIGS)}")
    return args


def main(argv: list[str] | None = None, row_runner: Callable[..., Row] = run_row) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.chunks_file, args.llm_model, args.recheck_s)))
        return 0

    texts = load_chunk_texts(args.source, args.n_chunks)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-passing-") as tmp:
        chunks_file = Path(tmp) / "chunks.json"
        chunks_file.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        rows = add_ratios([row_runner(config, chunks_file, args) for config in args.configs])
    load_after = load_average()
    results = {
        "rows": [asdict(r) for r in rows], "source": args.source, "n_chunks": len(texts), "cores": all_cores(),
        "neighbours": args.neighbours, "neighbour_s": args.neighbour_s, "recheck_s": args.recheck_s,
        "llm_model": args.llm_model, "load_average_before": load_before, "load_average_after": load_after,
    }
    report_results(args.out, results, result_table(rows),
                   f"\n{len(texts)} chunks from {args.source}; {all_cores()} cores; {args.neighbours} busy loop(s) for "
                   f"the first {args.neighbour_s:g} s of each row; load average (1/5/15 min) before: {load_before}; "
                   f"after: {load_after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
