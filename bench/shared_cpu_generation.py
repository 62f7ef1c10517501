"""Benchmark: gguf question generation alone and beside a CPU-bound neighbour, today's threads against the new choice.

A laptop is rarely idle: a browser, an editor, a build take a core. llama.cpp used
every core and let its waiting threads spin, so one busy neighbour made generation
several times slower. This runs the pipeline's own ``generate_questions`` with the
bundled GGUF (or ``--llm-model``) on the same chunks four times:

====================  ===============================================  ===================
row                   threads / wait                                   beside it
====================  ===============================================  ===================
today, alone          all cores, OpenMP's default wait (spins first)   nothing
today, neighbour      the same                                         ``--neighbours`` busy loops
new, alone            chosen from the free cores, passive wait         nothing
new, neighbour        the same                                         the busy loops
====================  ===============================================  ===================

Each row is a fresh Python process (OpenMP reads its wait policy once per process,
when llama.cpp loads), with ``OMP_WAIT_POLICY`` and ``GOMP_SPINCOUNT`` removed from
its environment, and a new temporary generation cache (the shared cache is never
read or written, so every row really generates). Retries are off and every chunk
is asked, so each row asks the same prompts. The neighbours start two seconds before
the row and run until it ends.

Run it on an otherwise idle machine: "alone" means beside nothing but this benchmark
("why" shows what each row's process saw busy when its model loaded).

Columns: "s/chunk" is generation time per chunk (the shared prefix's one-time
evaluation included, the model load not: that is "load s"); "slowdown" is s/chunk
over the same settings' row alone; "today/new" is today's s/chunk over this row's,
with the same neighbours; "neighbour cores" is the CPU the neighbours got during the
row (a spinning LLM takes it from them).

Run from the repository root (about 4 x load + 4 x n-chunks answers; on 2 cores the
bundled model takes about 3 s a chunk alone and up to 25 s beside a neighbour)::

    .venv/bin/python -m bench.shared_cpu_generation --n-chunks 8
    .venv/bin/python -m bench.shared_cpu_generation --n-chunks 8 --neighbours 2 --neighbour-kind numpy
    .venv/bin/python -m bench.shared_cpu_generation --source pdf --n-chunks 6 --out outputs/bench_shared_cpu_pdf

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
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.generation import load_chunk_texts
from bench.harness import CMRC_DATA as CMRC, REPO_ROOT as ROOT
from bench.harness import load_average, markdown_table, report_results
from tasks.core.settings import Settings
from tasks.questions.llm.cpu_threads import all_cores

log = logging.getLogger("bench.shared_cpu_generation")

CONFIGS = ("today", "new")
# One core each: a Python loop holds the GIL; numpy's BLAS is kept to one thread.
BUSY_LOOPS = {
    "python": "while True:\n    pass\n",
    "numpy": "import numpy as np\na = np.random.rand(256, 256)\nwhile True:\n    a @ a\n",
}
ONE_THREAD_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
# What must not leak from the caller's shell into a row: it would decide the wait policy.
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
WARM_UP_S = 2.0


@dataclass
class Row:
    settings: str  # "today" or "new"
    neighbours: int
    threads: int
    why: str  # why that many threads (the run log's words)
    wait: str
    chunks: int
    load_s: float
    gen_s: float
    cpu_s: float  # CPU time of the generating process while generating (all its threads)
    questions: int  # chunks with at least one kept question
    neighbour_cores: float | None = None
    s_per_chunk: float = 0.0
    slowdown: float = 1.0
    today_over_new: float = 1.0


def config_settings(config: str, cache_dir: Path, llm_model: str | None = None, parallel: int | None = None) -> Settings:
    """The pipeline settings of one row: today's (all cores, OpenMP's wait) or the new default."""
    if config not in CONFIGS:
        raise ValueError(f"unknown config {config!r}; one of {CONFIGS}")
    overrides: dict[str, Any] = {
        "llm_backend": "gguf",
        "cache_dir": cache_dir,
        "models_dir": ROOT / "models",
        "generation_retries": 0,
        "skip_low_value_chunks": False,
        "max_failed_share": 1.0,
    }
    if config == "today":
        overrides.update(llm_threads=all_cores(), llm_passive_wait=False)
    if llm_model:
        overrides["llm_model"] = llm_model
    if parallel:
        overrides["llm_parallel"] = parallel
    return Settings(**overrides)


def add_ratios(rows: list[Row]) -> list[Row]:
    """Fill s/chunk, the slowdown against the same settings alone, and today's time over new's."""
    for r in rows:
        r.s_per_chunk = r.gen_s / r.chunks if r.chunks else float("nan")
    by_key = {(r.settings, r.neighbours): r for r in rows}
    for r in rows:
        alone = by_key.get((r.settings, 0))
        r.slowdown = r.s_per_chunk / alone.s_per_chunk if alone and alone.s_per_chunk else float("nan")
        today = by_key.get(("today", r.neighbours))
        r.today_over_new = today.s_per_chunk / r.s_per_chunk if today and r.s_per_chunk else float("nan")
    return rows


def result_table(rows: list[Row]) -> str:
    head = ["settings", "neighbours", "threads", "why", "wait", "load s", "gen s", "s/chunk", "slowdown", "today/new",
            "CPU s", "neighbour cores"]
    return markdown_table(head, ([
        r.settings, r.neighbours, r.threads, r.why, r.wait, f"{r.load_s:.1f}", f"{r.gen_s:.1f}",
        f"{r.s_per_chunk:.2f}", f"{r.slowdown:.2f}x", f"{r.today_over_new:.2f}x", f"{r.cpu_s:.1f}",
        "" if r.neighbour_cores is None else f"{r.neighbour_cores:.2f}",
    ] for r in rows), left=(0, 3, 4))


# --- one row, in its own process ------------------------------------------------------------


def run_worker(config: str, chunks_file: Path, llm_model: str | None, parallel: int | None) -> dict[str, Any]:
    """Generate questions for the chunks in ``chunks_file`` with ``config``'s settings; the measurements."""
    from tasks.questions.generation import generate_questions
    from tasks.questions.llm.gguf_backend import GGUFWriter
    from tasks.core.records import Chunk

    texts = json.loads(chunks_file.read_text(encoding="utf-8"))
    chunks = [Chunk(f"c{i}", "bench", "bench", 1, t) for i, t in enumerate(texts)]
    with tempfile.TemporaryDirectory(prefix="bench-shared-cpu-cache-") as cache:
        settings = config_settings(config, Path(cache), llm_model, parallel)
        writer = GGUFWriter.from_settings(settings)
        started = time.perf_counter()
        writer.load()
        stats = writer.engine_stats
        load_s = time.perf_counter() - started - stats.prefix_seconds
        cpu_started = time.process_time()
        # The writer is loaded already: generate_questions uses it, then closes it.
        result = generate_questions(chunks, settings, lambda _: writer, show_progress=True)
        cpu_s = time.process_time() - cpu_started + stats.prefix_cpu_seconds
    if result.stats.requests_sent != len(chunks):
        raise SystemExit(f"{config}: {result.stats.requests_sent} of {len(chunks)} chunks generated; the cache leaked")
    return {
        "threads": writer.thread_choice.threads, "why": writer.thread_choice.why, "wait": writer.wait_policy,
        "chunks": len(chunks), "load_s": load_s, "gen_s": result.stats.seconds_in_llm + stats.prefix_seconds,
        "cpu_s": cpu_s, "questions": result.stats.chunks_with_questions,
    }


def run_row(config: str, n_neighbours: int, chunks_file: Path, args: argparse.Namespace) -> Row:
    """One row: the worker process for ``config``, beside ``n_neighbours`` busy loops."""
    cmd = [sys.executable, "-m", "bench.shared_cpu_generation", "--worker", config, "--chunks-file", str(chunks_file)]
    if args.llm_model:
        cmd += ["--llm-model", args.llm_model]
    if args.parallel:
        cmd += ["--parallel", str(args.parallel)]
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES}
    log.info("row: %s settings, %d neighbour(s)", config, n_neighbours)
    with neighbours(n_neighbours, args.neighbour_kind) as cpu_of_neighbours:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        cores = cpu_of_neighbours()
    if proc.returncode != 0:
        raise SystemExit(f"the {config} row failed (exit {proc.returncode}); its log is above")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return Row(settings=config, neighbours=n_neighbours, neighbour_cores=cores, **result)


@contextmanager
def neighbours(n: int, kind: str) -> Iterator[Callable[[], float | None]]:
    """``n`` busy loops, warmed up; yields a function giving the cores they used since (None without any)."""
    import psutil

    procs = [
        subprocess.Popen([sys.executable, "-c", BUSY_LOOPS[kind]], env={**os.environ, **ONE_THREAD_ENV})
        for _ in range(n)
    ]
    try:
        time.sleep(WARM_UP_S if procs else 0)
        handles = [psutil.Process(p.pid) for p in procs]
        started, cpu_before = time.monotonic(), sum(_cpu(h) for h in handles)

        def cores() -> float | None:
            if not handles:
                return None
            return (sum(_cpu(h) for h in handles) - cpu_before) / (time.monotonic() - started)

        yield cores
    finally:
        for p in procs:
            p.kill()
            p.wait()


def _cpu(process: Any) -> float:
    t = process.cpu_times()
    return t.user + t.system


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-chunks", type=int, default=8, help="Chunks each row asks about (default 8).")
    parser.add_argument("--source", choices=["cmrc", "pdf"], default="cmrc" if CMRC.is_file() else "pdf")
    parser.add_argument("--neighbours", type=int, default=1, help="Busy loops beside the neighbour rows (default 1).")
    parser.add_argument("--neighbour-kind", choices=sorted(BUSY_LOOPS), default="python",
                        help="python: a bare loop; numpy: 256x256 matrix products (also loads memory). One core each.")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="Which settings to run (default: today,new).")
    parser.add_argument("--parallel", type=int, default=None, help="llm_parallel (default: the setting's).")
    parser.add_argument("--llm-model", default=None, help="A GGUF path (default: the bundled Qwen2.5-Coder-1.5B Q4_K_M).")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_shared_cpu",
                        help="Where results.json and results.md go.")
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--chunks-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.n_chunks < 1 or args.neighbours < 1:
        parser.error("--n-chunks and --neighbours must be at least 1")
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = set(args.configs) - set(CONFIGS)
    if unknown or not args.configs:
        parser.error(f"--configs takes a comma-separated subset of {','.join(CONFIGS)}")
    return args


def main(argv: list[str] | None = None, row_runner: Callable[..., Row] = run_row) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.chunks_file, args.llm_model, args.parallel)))
        return 0

    texts = load_chunk_texts(args.source, args.n_chunks)
    load_before = load_average()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-shared-cpu-") as tmp:
        chunks_file = Path(tmp) / "chunks.json"
        chunks_file.write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        for config in args.configs:
            for n in (0, args.neighbours):
                rows.append(row_runner(config, n, chunks_file, args))
    add_ratios(rows)
    load_after = load_average()
    results = {
        "rows": [asdict(r) for r in rows], "source": args.source, "n_chunks": len(texts), "cores": all_cores(),
        "neighbours": args.neighbours, "neighbour_kind": args.neighbour_kind, "llm_model": args.llm_model,
        "llm_parallel": args.parallel, "load_average_before": load_before, "load_average_after": load_after,
    }
    report_results(args.out, results, result_table(rows),
                   f"\n{len(texts)} chunks from {args.source}; {all_cores()} cores; neighbours: {args.neighbours} x "
                   f"{args.neighbour_kind}; load average (1/5/15 min) before: {load_before}; after: {load_after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
