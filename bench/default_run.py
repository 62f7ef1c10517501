"""Benchmark: the default pipeline run from empty caches, its wall time, peak memory and stages.

Runs ``python -m flows.finetune_bce`` with the repository's defaults (the bundled sample
PDFs in ``data/pdf``, the bundled e5-small and Qwen GGUF) in a subprocess, with nothing
cached: a fresh temporary ``--output-dir``, ``--cache-dir`` (the per-chunk generation
cache, ``<cache-dir>/generation/``) and ``PREFECT_HOME`` (Prefect's task cache records).
``--models-dir`` stays the repository's ``models/`` (the converted e5 and the assembled
GGUF) unless ``--fresh-models``. Then, unless ``--no-rerun``, the identical command again:
it should take seconds, send 0 LLM requests and run 0 training steps.

For each run it records:

* wall seconds of the subprocess;
* peak RSS of the process tree: the run and every descendant (Prefect's local server),
  summed, sampled every ``--interval`` seconds (0.5); shared pages count once per process,
  as ``ps`` shows them. Also the run's own peak, and the largest single process's peak
  from ``wait4`` (exact, not sampled);
* CPU seconds (user + system) of the whole tree, from ``wait4`` (exact, this run's alone);
* per-stage seconds, cache hits, LLM requests sent and training steps, from the run's
  ``summary.json``;
* a profile of each stage as the run's log shows it (from its ``<stage> …`` line to its
  ``<stage> — …`` line): wall seconds, CPU seconds of the process tree and its peak RSS
  within that stretch; what runs between stages (the server's start, the reports) is
  ``(between stages)``;
* unless ``--no-prefect-start``, the wall time of a flow that does nothing, with its own
  temporary Prefect server: the floor under any rerun.

Run from the repository root, alone on the machine (timings of a shared CPU mean nothing)::

    .venv/bin/python -m bench.default_run                                   # first run + rerun
    .venv/bin/python -m bench.default_run --compare before/results.json     # beside an earlier result
    .venv/bin/python -m bench.default_run --repo ../old-checkout --out before --label before
    .venv/bin/python -m bench.default_run --no-rerun -- --epochs 1          # flags after -- go to the flow

``--repo`` runs another checkout's pipeline (an older commit) with this script, so the
"before" column is measured the same way. Results go to ``--out`` (default
``outputs/bench_default_run/``): ``results.json``, ``results.md`` and each run's log.
``BCE_*`` variables are removed from the run's environment: the defaults are what is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import REPO_ROOT as ROOT, markdown_table, report_results

MB = 1024 * 1024
# The lines the flow logs as each stage starts and ends:
# "… - training …" and "… - training (cached) — steps run: 0, …".
STAGE_START = re.compile(r" - (\S[^—]*?) …$")
STAGE_DONE = re.compile(r" - ([^—]+?)(?: \(cached\))? — ")
BETWEEN = "(between stages)"


# --- memory of a process tree -------------------------------------------------------------


def _children_by_parent() -> dict[int, list[int]]:
    """Every process's children, from /proc (Linux), when psutil is not installed."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may hold spaces: the fields follow the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def _proc_rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0  # gone between the listing and the read


def tree_rss(pid: int) -> tuple[int, int]:
    """``(rss of pid, rss of pid and all its descendants)`` in bytes; (0, 0) once it is gone.

    >>> own, total = tree_rss(os.getpid())
    >>> 0 < own <= total
    True
    """
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            root = psutil.Process(pid)
            own = root.memory_info().rss
            family = root.children(recursive=True)
        except psutil.Error:
            return 0, 0
        total = own
        for p in family:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return own, total
    own = _proc_rss(pid)
    if not own:
        return 0, 0
    children, todo, total = _children_by_parent(), [pid], own
    while todo:
        for child in children.get(todo.pop(), []):
            total += _proc_rss(child)
            todo.append(child)
    return own, total


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its live descendants (0.0 once it is gone).

    >>> tree_cpu_seconds(os.getpid()) > 0
    True
    """
    import psutil

    try:
        root = psutil.Process(pid)
        family = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in family:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


class PeakRss:
    """Samples :func:`tree_rss` of ``pid`` every ``interval`` seconds in a thread.

    Example::

        >>> with PeakRss(proc.pid) as peak:  # doctest: +SKIP
        ...     proc.wait()
        >>> peak.total_bytes, peak.own_bytes, peak.at_seconds  # doctest: +SKIP
        (4123456789, 3900000000, 412.5)
    """

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        self.pid, self.interval = pid, interval
        self.total_bytes = self.own_bytes = 0
        self.at_seconds = 0.0
        self.samples = 0
        # {stage: {"seconds", "cpu_seconds", "peak_rss_mb"}}, filled as :meth:`stage` is told.
        self.stages: dict[str, dict[str, float]] = {}
        self._current = BETWEEN
        self._since = self._cpu_since = 0.0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def stage(self, name: str) -> None:
        """From now on the samples belong to stage ``name`` (``BETWEEN`` once it ends)."""
        now, cpu = time.monotonic(), tree_cpu_seconds(self.pid)
        with self._lock:
            self._close(now, cpu)
            self._current, self._since, self._cpu_since = name, now, cpu

    def _close(self, now: float, cpu: float) -> None:
        row = self.stages.setdefault(self._current, {"seconds": 0.0, "cpu_seconds": 0.0, "peak_rss_mb": 0.0})
        row["seconds"] = round(row["seconds"] + now - self._since, 2)
        if cpu >= self._cpu_since:  # a descendant that exited takes its CPU with it
            row["cpu_seconds"] = round(row["cpu_seconds"] + cpu - self._cpu_since, 2)

    def __enter__(self) -> PeakRss:
        self._started = self._since = time.monotonic()
        self._cpu_since = tree_cpu_seconds(self.pid)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            self._close(time.monotonic(), self._cpu_since)  # the process is gone: its CPU is wait4's

    def _run(self) -> None:
        while True:
            own, total = tree_rss(self.pid)
            if total:
                self.samples += 1
                self.own_bytes = max(self.own_bytes, own)
                if total > self.total_bytes:
                    self.total_bytes, self.at_seconds = total, time.monotonic() - self._started
                with self._lock:
                    row = self.stages.setdefault(self._current, {"seconds": 0.0, "cpu_seconds": 0.0,
                                                                 "peak_rss_mb": 0.0})
                    row["peak_rss_mb"] = max(row["peak_rss_mb"], round(total / MB, 1))
            if self._stop.wait(self.interval):
                return


# --- one run ---------------------------------------------------------------------------------


def measure(cmd: list[str], *, cwd: Path, env: dict[str, str], log: Path, interval: float = 0.5,
            echo: bool = False) -> dict[str, Any]:
    """Run ``cmd`` to the end; its output goes to ``log`` (each stage's closing line also
    to stdout when ``echo``). Returns returncode, wall seconds, peak RSS of its process tree,
    CPU seconds of the tree and the largest single process's peak RSS.

    CPU and the largest process come from ``wait4``: the child and the descendants it waited
    for (Prefect waits for its server), exact rather than sampled, and this run's alone.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                encoding="utf-8", errors="replace")
        with PeakRss(proc.pid, interval) as peak:
            for line in proc.stdout:
                out.write(line)
                if started_stage := STAGE_START.search(line.rstrip()):
                    peak.stage(started_stage.group(1))
                elif STAGE_DONE.search(line):
                    peak.stage(BETWEEN)
                    if echo:
                        print("   ", line.rstrip()[-140:], flush=True)
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    return {
        "returncode": proc.returncode,
        "wall_seconds": round(wall, 2),
        "peak_rss_mb": round(peak.total_bytes / MB, 1),
        "peak_rss_main_mb": round(peak.own_bytes / MB, 1),
        "peak_at_seconds": round(peak.at_seconds, 1),
        "rss_samples": peak.samples,
        # ru_maxrss is in KiB on Linux: the largest single process's peak, not a sum.
        "max_process_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "cpu_user_seconds": round(usage.ru_utime, 2),
        "cpu_system_seconds": round(usage.ru_stime, 2),
        "profile": peak.stages,
    }


def parse_summary(summary: dict[str, Any]) -> dict[str, Any]:
    """What the table shows from a run's summary.json: seconds and cache hit of each stage,
    LLM requests sent, training steps run.

    >>> parse_summary({"stages": {"questions": {"seconds": 3.5, "cached": False, "llm_requests_sent": 9},
    ...                           "training": {"seconds": 2.0, "cached": True, "steps_run": 0}},
    ...                "total_seconds": 5.5})["llm_requests_sent"]
    9
    """
    stages = summary.get("stages") or {}
    return {
        "stages": {name: {"seconds": s.get("seconds"), "cached": s.get("cached")} for name, s in stages.items()},
        "stage_seconds_total": summary.get("total_seconds"),
        "llm_requests_sent": (stages.get("questions") or {}).get("llm_requests_sent"),
        "training_steps": (stages.get("training") or {}).get("steps_run"),
    }


def flow_command(repo: Path, tmp: Path, fresh_models: bool, extra: list[str]) -> list[str]:
    """The pipeline's command line: defaults, except the folders that must start empty."""
    cmd = [sys.executable, "-m", "flows.finetune_bce", "--output-dir", str(tmp / "out"),
           "--cache-dir", str(tmp / "cache")]
    if fresh_models:
        cmd += ["--models-dir", str(tmp / "models")]
    return cmd + extra


def bce_variables() -> list[str]:
    """The pipeline's settings in this environment (``BCE_*``), which the runs do not get."""
    return sorted(k for k in os.environ if k.startswith("BCE_"))


def flow_env(repo: Path, prefect_home: Path) -> tuple[dict[str, str], list[str]]:
    """The run's environment: its own Prefect home, the checkout first on the import path,
    no ``BCE_*`` settings. Returns the environment and the ``BCE_*`` names removed."""
    removed = bce_variables()
    env = {k: v for k, v in os.environ.items() if k not in removed}
    prefect_home.mkdir(parents=True, exist_ok=True)  # the local server does not start without it
    env.update(PREFECT_HOME=str(prefect_home), PYTHONUNBUFFERED="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               DO_NOT_TRACK="1", PYTHONPATH=os.pathsep.join([str(repo), *filter(None, [env.get("PYTHONPATH")])]))
    return env, removed


def run_pipeline(repo: Path, tmp: Path, name: str, out_dir: Path, *, fresh_models: bool, extra: list[str],
                 interval: float) -> dict[str, Any]:
    """One run of the pipeline in ``tmp`` (the second call with the same ``tmp`` is the rerun)."""
    env, _ = flow_env(repo, tmp / "prefect-home")
    cmd = flow_command(repo, tmp, fresh_models, extra)
    print(f"{name}: {' '.join(cmd[1:])}", flush=True)
    result = measure(cmd, cwd=repo, env=env, log=out_dir / f"{name}.log", interval=interval, echo=True)
    summary_path = tmp / "out" / "summary.json"
    if result["returncode"] == 0 and summary_path.is_file():
        result.update(parse_summary(json.loads(summary_path.read_text(encoding="utf-8"))))
    print(f"{name}: {result['wall_seconds']:.1f} s, peak {result['peak_rss_mb'] / 1024:.2f} GB, "
          f"exit {result['returncode']}", flush=True)
    return result


NOOP_FLOW = "from prefect import flow\nflow(name='noop')(lambda: None)()\n"


def prefect_start(repo: Path, tmp: Path, out_dir: Path, interval: float) -> dict[str, Any]:
    """A flow that does nothing, with its own temporary server: what every run pays first."""
    env, _ = flow_env(repo, tmp / "prefect-home")  # the runs' home: its database exists, as for a rerun
    result = measure([sys.executable, "-c", NOOP_FLOW], cwd=repo, env=env, log=out_dir / "prefect-start.log",
                     interval=interval)
    print(f"prefect start (a flow that does nothing): {result['wall_seconds']:.1f} s", flush=True)
    return result


# --- the table ---------------------------------------------------------------------------------


def _rows(results: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(label, run, key) of every row: the totals of each run, then its stages in run order."""
    rows: list[tuple[str, str, str]] = []
    for run in ("first", "rerun"):
        if not any(run in r.get("runs", {}) for r in results):
            continue
        prefix = "" if run == "first" else "rerun: "
        rows += [(f"{prefix}wall (s)", run, "wall_seconds"),
                 (f"{prefix}peak RSS, process tree (MB)", run, "peak_rss_mb"),
                 (f"{prefix}peak RSS, run process (MB)", run, "peak_rss_main_mb"),
                 (f"{prefix}CPU user+system (s)", run, "cpu_seconds"),
                 (f"{prefix}LLM requests sent", run, "llm_requests_sent"),
                 (f"{prefix}training steps", run, "training_steps")]
        stages: list[str] = []
        for r in results:
            for name in (r.get("runs", {}).get(run, {}).get("stages") or {}):
                if name not in stages:
                    stages.append(name)
        rows += [(f"{prefix}stage {name} (s)", run, f"stage:{name}") for name in stages]
    if any("prefect_start" in r.get("runs", {}) for r in results):
        rows.append(("a flow that does nothing (s)", "prefect_start", "wall_seconds"))
    return rows


def _value(result: dict[str, Any], run: str, key: str) -> float | None:
    r = result.get("runs", {}).get(run)
    if not r:
        return None
    if key == "cpu_seconds":
        if r.get("cpu_user_seconds") is None:
            return None
        return round(r["cpu_user_seconds"] + r.get("cpu_system_seconds", 0), 2)
    if key.startswith("stage:"):
        return ((r.get("stages") or {}).get(key[6:]) or {}).get("seconds")
    return r.get(key)


def _fmt(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:g}" if float(v).is_integer() else f"{v:.2f}"


def _change(before: float | None, after: float | None) -> str:
    if before is None or after is None:
        return ""
    diff = after - before
    pct = f" ({100 * diff / before:+.0f}%)" if before else ""
    return f"{'+' if diff >= 0 else '−'}{_fmt(abs(diff))}{pct}"


def render_profile(after: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    """Per stage of the first run: wall and CPU seconds and the tree's peak RSS, beside ``before``.

    >>> row = {"seconds": 9.0, "cpu_seconds": 17.5, "peak_rss_mb": 3000.0}
    >>> print(render_profile({"label": "now", "runs": {"first": {"profile": {"training": row}}}}).splitlines()[2])
    | training | 9 | 17.50 | 3,000 |
    """
    results = [r for r in (before, after) if r]
    profiles = [(r.get("runs", {}).get("first") or {}).get("profile") or {} for r in results]
    stages: list[str] = []
    for profile in profiles:
        stages += [name for name in profile if name not in stages]
    head = ["stage"]
    for r in results:
        label = r.get("label") or "run"
        head += [f"{label}: wall (s)", f"{label}: CPU (s)", f"{label}: peak RSS (MB)"]
    body = []
    for name in stages:
        cells: list[str] = [name]
        for profile in profiles:
            row = profile.get(name) or {}
            cells += [_fmt(row.get("seconds")), _fmt(row.get("cpu_seconds")), _fmt(row.get("peak_rss_mb"))]
        body.append(cells)
    return markdown_table(head, body)


def render_table(after: dict[str, Any], before: dict[str, Any] | None = None) -> str:
    """A markdown table of ``after`` (a results.json), beside ``before`` with the change.

    >>> print(render_table({"label": "now", "runs": {"first": {"wall_seconds": 90.0}}},
    ...                    {"label": "old", "runs": {"first": {"wall_seconds": 120.0}}}).splitlines()[2])
    | wall (s) | 120 | 90 | −30 (-25%) |
    """
    results = [before, after] if before else [after]
    head = ["", *(r.get("label") or f"run {i + 1}" for i, r in enumerate(results))]
    if before:
        head.append("change")
    body = []
    for label, run, key in _rows(results):
        values = [_value(r, run, key) for r in results]
        body.append([label, *(_fmt(v) for v in values), *([_change(*values)] if before else [])])
    return markdown_table(head, body, left=range(len(head)))


# --- main ----------------------------------------------------------------------------------------


def _commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="The checkout whose pipeline runs (default: this one).")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_default_run",
                        help="Where results.json, results.md and the logs go.")
    parser.add_argument("--label", default=None, help="Column title (default: the checkout's commit).")
    parser.add_argument("--compare", type=Path, default=None, help="An earlier results.json: shown as the first column.")
    parser.add_argument("--no-rerun", action="store_true", help="Skip the second, identical run.")
    parser.add_argument("--no-prefect-start", action="store_true",
                        help="Skip timing a flow that does nothing (the floor under the rerun).")
    parser.add_argument("--fresh-models", action="store_true",
                        help="Also an empty --models-dir: converting e5 and assembling the GGUF are measured too.")
    parser.add_argument("--interval", type=float, default=0.5, help="Seconds between RSS samples (default 0.5).")
    parser.add_argument("--tmp-dir", type=Path, default=None, help="Where the temporary folders go (default: system temp).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folders (outputs, caches, Prefect home).")
    parser.add_argument("--table-only", action="store_true",
                        help="Run nothing: print the table of --out's results.json (beside --compare).")
    parser.add_argument("flow_args", nargs="*", help="After --: extra flags for flows.finetune_bce.")
    args = parser.parse_args(argv)
    before = json.loads(args.compare.read_text(encoding="utf-8")) if args.compare else None
    if args.table_only:
        after = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
        print(render_table(after, before), render_profile(after, before), sep="\n\n")
        return 0

    repo = args.repo.resolve()
    if not (repo / "flows" / "finetune_bce.py").is_file():
        print(f"error: --repo {repo} is not a checkout of this project (no flows/finetune_bce.py)", file=sys.stderr)
        return 2
    removed = bce_variables()
    if removed:
        print(f"note: not passed to the runs: {', '.join(removed)}", file=sys.stderr)
    commit = _commit(repo)
    results: dict[str, Any] = {
        "label": args.label or commit or repo.name, "commit": commit, "repo": str(repo),
        "flow_args": args.flow_args, "fresh_models": args.fresh_models, "python": sys.version.split()[0],
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_average_at_start": [round(x, 2) for x in os.getloadavg()]},
        "runs": {},
    }
    tmp = Path(tempfile.mkdtemp(prefix="bench-default-run-", dir=args.tmp_dir))
    failed = False
    try:
        for name in ("first", *(() if args.no_rerun else ("rerun",))):
            run = run_pipeline(repo, tmp, name, args.out, fresh_models=args.fresh_models, extra=args.flow_args,
                               interval=args.interval)
            results["runs"][name] = run
            if run["returncode"] != 0:
                log = (args.out / f"{name}.log").read_text(encoding="utf-8", errors="replace")
                print(f"error: the {name} run failed (exit {run['returncode']}):\n{log[-4000:]}", file=sys.stderr)
                failed = True
                break
        if not failed and not args.no_prefect_start:
            results["runs"]["prefect_start"] = prefect_start(repo, tmp, args.out, args.interval)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    tables = f"{render_table(results, before)}\n\nprofile of the first run\n\n{render_profile(results, before)}"
    report_results(args.out, results, tables, f"\n{args.out / 'results.json'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
