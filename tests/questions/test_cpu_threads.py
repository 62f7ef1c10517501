"""Threads and wait policy of the gguf backend on a CPU that other programs share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.questions.llm.cpu_threads import (
    LoadMeter,
    ThreadTuner,
    choose_threads,
    cpu_quota,
    describe,
    describe_wait,
    parse_cpu_quota,
    pick_threads,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "cpus, busy, threads",
    [
        (2, 0.0, 2),  # alone: every core
        (2, 0.3, 2),  # a little background work: a core mostly free still counts
        (2, 1.0, 1),  # one busy neighbour on a laptop: the case
        (2, 1.3, 1),
        (2, 2.0, 1),  # never fewer than one
        (2, 7.5, 1),
        (8, 2.4, 6),
        (8, 2.6, 5),
        (1, 0.0, 1),
    ],
)
def test_threads_are_the_cores_other_processes_leave_free(cpus, busy, threads):
    assert choose_threads(cpus, busy).threads == threads


def test_an_explicit_setting_wins_and_the_quota_caps():
    assert choose_threads(2, 1.9, explicit=4) == choose_threads(16, 0.0, explicit=4)
    assert choose_threads(2, 1.9, explicit=4).threads == 4
    assert choose_threads(16, 0.0, quota=2.0).threads == 2
    assert choose_threads(16, 0.0, quota=0.5).threads == 1
    assert choose_threads(16, 15.0, quota=4.0).threads == 1  # the host is busy too
    assert choose_threads(4, 0.0, quota=8.0).threads == 4


def test_the_log_line_says_what_and_why():
    assert describe(choose_threads(2, 1.3), "passive wait") == (
        "llm: 1 thread (2 cores, 1.3 busy with other processes), passive wait"
    )
    assert describe(choose_threads(16, 0.0, quota=2.0), "passive wait") == (
        "llm: 2 threads (16 cores, 0.0 busy with other processes, CPU quota 2), passive wait"
    )
    assert describe(choose_threads(2, 0.0, explicit=3), "x").startswith("llm: 3 threads (llm_threads=3 set)")


def test_wait_policy_in_words():
    assert describe_wait(None, True, True) == "passive wait"
    assert describe_wait(None, True, None) == "passive wait"  # cannot tell (not Linux): what was asked
    assert describe_wait("ACTIVE", True, True) == "OMP_WAIT_POLICY=ACTIVE from the environment"
    assert describe_wait(None, False, True) == "OpenMP default wait (llm_passive_wait off)"
    assert "no new OpenMP runtime" in describe_wait(None, True, False)


def test_cgroup_quota_v2_v1_and_none(tmp_path):
    assert parse_cpu_quota("150000 100000") == 1.5
    assert parse_cpu_quota("max 100000") is None
    assert parse_cpu_quota(None, "-1", "100000") is None
    assert parse_cpu_quota("garbage") is None
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("200000 100000\n")
    assert cpu_quota(v2) == 2.0
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("300000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_quota(v1.parent) == 3.0
    assert cpu_quota(tmp_path / "none") is None


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _tuner(threads: int, loads: list[float], cpus: int = 2, **kwargs):
    clock, applied, asked = _Clock(), [], []

    def busy() -> float:
        asked.append(clock.now)
        return loads.pop(0)

    tuner = ThreadTuner(threads, cpus=cpus, set_threads=applied.append, busy_elsewhere=busy, clock=clock,
                        every_s=5.0, **kwargs)
    return tuner, clock, applied, asked


def test_the_tuner_grows_when_the_neighbour_leaves_and_shrinks_when_one_comes(caplog):
    # The run: one core busy for a moment at load, idle afterwards; later a neighbour again.
    tuner, clock, applied, asked = _tuner(1, [1.0, 0.1, 0.2, 1.1])
    with caplog.at_level("INFO", logger="tasks.questions.llm.cpu_threads"):
        for clock.now in (1.0, 4.9, 5.0, 7.0, 10.0, 15.0, 20.0):
            tuner.tick()
    assert asked == [5.0, 10.0, 15.0, 20.0]  # at most once every 5 s, however often ticked
    assert applied == [2, 1]  # one change per move of the load, none when the count stays
    assert tuner.threads == 1 and tuner.changes == [(10.0, 2), (20.0, 1)]
    assert [r.getMessage() for r in caplog.records] == [
        "llm: 2 threads now (was 1; 2 cores, 0.1 busy with other processes)",
        "llm: 1 thread now (was 2; 2 cores, 1.1 busy with other processes)",
    ]


def test_the_tuner_keeps_within_the_quota():
    tuner, clock, applied, _ = _tuner(1, [0.0], cpus=16, quota=2.5)
    clock.now = 5.0
    assert tuner.tick().threads == 2 and applied == [2]


def test_the_load_meter_measures_the_time_since_its_last_look():
    meter = LoadMeter()
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # this process's own work is not a neighbour's
        pass
    first = meter.busy_elsewhere()
    assert 0.0 <= first <= len(os.sched_getaffinity(0))
    assert 0.0 <= meter.busy_elsewhere() <= len(os.sched_getaffinity(0))


def test_a_jump_in_the_systems_counters_reads_as_every_core_busy_not_more():
    """A VM may credit seconds of stolen time at once: the meter says all cores, not 114."""
    from collections import namedtuple

    Times = namedtuple("Times", "user system idle iowait steal")
    jumps = iter([[Times(0.0, 0.0, 0.0, 0.0, 0.0)] * 2, [Times(10.0, 0.0, 0.0, 0.0, 7.0)] * 2])

    class JumpingCounters:
        cpu_times = staticmethod(lambda percpu: next(jumps))
        cpu_count = staticmethod(lambda: 2)

    meter = LoadMeter()
    meter._psutil, meter._cpus = JumpingCounters, [0, 1]
    meter._last = meter._now()
    assert meter.busy_elsewhere() == 2.0


def test_pick_threads_measures_only_when_not_told():
    assert pick_threads(3, sample_s=60).threads == 3  # no sampling: returns at once
    choice = pick_threads(None, sample_s=0.05)
    assert choice.threads >= 1 and "busy with other processes" in choice.why


FAKE_IMPORT = """
import json, os, sys
sys.path.insert(0, {fake!r})
from tasks.questions.llm.cpu_threads import import_llama_cpp
module, wait = import_llama_cpp(passive={passive})
again = import_llama_cpp(passive={passive})[1]
print(json.dumps({{"at_import": module.SEEN, "after": os.environ.get("OMP_WAIT_POLICY"), "wait": wait, "again": again}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize(
    "env, passive, at_import, after, wait",
    [
        ({}, True, "PASSIVE", None, "passive wait"),
        ({}, False, None, None, "OpenMP default wait (llm_passive_wait off)"),
        ({"OMP_WAIT_POLICY": "active"}, True, "active", "active", "OMP_WAIT_POLICY=active from the environment"),
    ],
)
def test_passive_wait_is_set_only_while_llama_cpp_loads(tmp_path, env, passive, at_import, after, wait):
    """A stand-in llama_cpp records what OpenMP would read when it loads; later OpenMP users see the user's env."""
    (tmp_path / "llama_cpp").mkdir()
    (tmp_path / "llama_cpp" / "__init__.py").write_text("import os\nSEEN = os.environ.get('OMP_WAIT_POLICY')\n")
    base = {k: v for k, v in __import__("os").environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", FAKE_IMPORT.format(fake=str(tmp_path), passive=passive)],
        cwd=ROOT, env={**base, **env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True,
    )
    seen = json.loads(out.stdout)
    # A stand-in brings no OpenMP runtime: on Linux that is said instead of "passive wait".
    if wait == "passive wait" and Path("/proc/self/maps").exists():
        wait = "wait policy unchanged (llama.cpp loaded no new OpenMP runtime)"
    assert seen == {"at_import": at_import, "after": after, "wait": wait, "again": wait}


def _llama_cpp_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("llama_cpp") is not None


@pytest.mark.slow
@pytest.mark.skipif(not _llama_cpp_installed(), reason="llama-cpp-python is not installed")
@pytest.mark.parametrize("passive, spin", [(True, "'0'"), (False, "'300000'")])
def test_the_real_openmp_runtime_gets_the_policy(passive, spin):
    """GNU OpenMP prints what it read at load (OMP_DISPLAY_ENV): no spinning when passive, its default when off."""
    import os

    base = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    code = f"from tasks.questions.llm.cpu_threads import import_llama_cpp; print(import_llama_cpp({passive})[1])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={**base, "OMP_DISPLAY_ENV": "VERBOSE", "PYTHONPATH": str(ROOT)})
    if "GOMP_SPINCOUNT" not in out.stderr:
        pytest.skip("llama.cpp is not built with GNU OpenMP here")
    assert f"GOMP_SPINCOUNT = {spin}" in out.stderr
    assert out.stdout.strip() == ("passive wait" if passive else "OpenMP default wait (llm_passive_wait off)")
