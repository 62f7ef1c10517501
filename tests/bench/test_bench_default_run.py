"""bench.default_run without running the pipeline: memory sampling of a short child,
summary parsing, the command and environment, and the table."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from bench import default_run

MB = 1024 * 1024


# Shaped like what flows.finetune_bce writes (summary.json), cut to what the bench reads.
SUMMARY = {
    "output_dir": "/tmp/x/out",
    "stages": {
        "documents": {"seconds": 1.5, "cached": False, "files": 3},
        "questions": {"seconds": 300.25, "cached": False, "llm_requests_sent": 100, "cache_hits": 0},
        "training": {"seconds": 250.0, "cached": False, "steps_run": 45, "alpha": 0.6},
        "evaluate_base": {"seconds": 12.0, "cached": False},
    },
    "total_seconds": 563.75,
}
RERUN = {
    "stages": {name: {"seconds": 0.5, "cached": True} for name in SUMMARY["stages"]},
    "total_seconds": 2.0,
}
RERUN["stages"]["questions"]["llm_requests_sent"] = 0
RERUN["stages"]["training"]["steps_run"] = 0


def test_summary_gives_stage_seconds_requests_and_steps() -> None:
    parsed = default_run.parse_summary(SUMMARY)
    assert parsed["stages"]["questions"] == {"seconds": 300.25, "cached": False}
    assert list(parsed["stages"]) == ["documents", "questions", "training", "evaluate_base"]
    assert (parsed["llm_requests_sent"], parsed["training_steps"], parsed["stage_seconds_total"]) == (100, 45, 563.75)
    again = default_run.parse_summary(RERUN)
    assert (again["llm_requests_sent"], again["training_steps"]) == (0, 0)
    assert default_run.parse_summary({"stages": {}})["training_steps"] is None


def _result(label: str, wall: float, peak: float, summary: dict, rerun: dict | None = None) -> dict:
    b = default_run
    runs = {"first": {"wall_seconds": wall, "peak_rss_mb": peak, "peak_rss_main_mb": peak - 300,
                      "cpu_user_seconds": 2 * wall, "cpu_system_seconds": 10.0, **b.parse_summary(summary)}}
    if rerun:
        runs["rerun"] = {"wall_seconds": 14.0, "peak_rss_mb": 260.0, "peak_rss_main_mb": 200.0,
                         "cpu_user_seconds": 9.0, "cpu_system_seconds": 1.0, **b.parse_summary(rerun)}
    return {"label": label, "runs": runs}


def test_table_of_one_result() -> None:
    table = default_run.render_table(_result("abc123", 600.0, 4000.0, SUMMARY, RERUN)).splitlines()
    assert table[0] == "|  | abc123 |"
    assert "| wall (s) | 600 |" in table
    assert "| peak RSS, process tree (MB) | 4,000 |" in table
    assert "| CPU user+system (s) | 1,210 |" in table
    assert "| stage questions (s) | 300 |" in table and "| stage documents (s) | 1.50 |" in table
    assert "| rerun: wall (s) | 14 |" in table
    assert "| rerun: LLM requests sent | 0 |" in table and "| rerun: training steps | 0 |" in table


def test_table_beside_an_earlier_result() -> None:
    before = _result("old", 800.0, 7800.0, {**SUMMARY, "stages": {**SUMMARY["stages"], "round_trip": {"seconds": 4.0}}})
    after = _result("new", 600.0, 3900.0, SUMMARY, RERUN)
    table = default_run.render_table(after, before).splitlines()
    assert table[0] == "|  | old | new | change |"
    assert "| wall (s) | 800 | 600 | −200 (-25%) |" in table
    assert "| peak RSS, process tree (MB) | 7,800 | 3,900 | −3,900 (-50%) |" in table
    assert "| stage round_trip (s) | 4 | — |  |" in table  # a stage only one side ran
    assert "| rerun: wall (s) | — | 14 |  |" in table  # the earlier result had no rerun


def test_command_and_environment_start_from_empty_folders(tmp_path, monkeypatch) -> None:
    b = default_run
    cmd = b.flow_command(tmp_path / "repo", tmp_path, fresh_models=False, extra=["--epochs", "1"])
    assert cmd[:3] == [sys.executable, "-m", "flows.finetune_bce"]
    assert cmd[3:] == ["--output-dir", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--epochs", "1"]
    assert "--models-dir" in b.flow_command(tmp_path, tmp_path, fresh_models=True, extra=[])
    monkeypatch.setenv("BCE_EPOCHS", "1")
    env, removed = b.flow_env(tmp_path / "repo", tmp_path / "home")
    assert removed == ["BCE_EPOCHS"] and "BCE_EPOCHS" not in env
    assert env["PREFECT_HOME"] == str(tmp_path / "home") and (tmp_path / "home").is_dir()
    assert env["PYTHONPATH"].split(":")[0] == str(tmp_path / "repo")


def _run(code: str, tmp_path: Path) -> dict:
    return default_run.measure([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env={"PATH": "/usr/bin:/bin"},
                            log=tmp_path / "child.log", interval=0.1)


@pytest.mark.slow  # starts processes
def test_peak_rss_of_a_short_child(tmp_path) -> None:
    r = _run("""
        import time
        x = b"\\1" * 50_000_000
        time.sleep(1)
        print("done")
    """, tmp_path)
    assert r["returncode"] == 0 and (tmp_path / "child.log").read_text() == "done\n"
    assert r["wall_seconds"] >= 1 and r["rss_samples"] >= 3
    assert 50_000_000 / MB <= r["peak_rss_mb"] < 200
    assert r["peak_rss_main_mb"] == r["peak_rss_mb"]  # no descendants
    assert r["max_process_rss_mb"] >= 47


@pytest.mark.slow  # starts processes
def test_peak_rss_sums_the_process_tree_and_counts_its_cpu(tmp_path) -> None:
    r = _run("""
        import subprocess, sys, time
        grandchild = subprocess.Popen([sys.executable, "-c", "import time; x = b'\\\\1' * 60_000_000; time.sleep(1.5)"])
        x = b"\\1" * 50_000_000
        end = time.process_time() + 0.3
        while time.process_time() < end:  # some CPU to count
            pass
        grandchild.wait()
        sys.exit(3)
    """, tmp_path)
    assert r["returncode"] == 3
    assert r["peak_rss_main_mb"] >= 50_000_000 / MB
    assert r["peak_rss_mb"] >= r["peak_rss_main_mb"] + 60_000_000 / MB - 1  # both processes at once
    assert r["cpu_user_seconds"] + r["cpu_system_seconds"] >= 0.25


def test_proc_fallback_agrees_with_psutil(monkeypatch) -> None:
    import os

    pytest.importorskip("psutil")
    b = default_run
    own, total = b.tree_rss(os.getpid())
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now fails: /proc is read instead
    own2, total2 = b.tree_rss(os.getpid())
    assert abs(own2 - own) < 20 * MB and own2 <= total2
    assert b.tree_rss(2**22 + 12345) == (0, 0)  # no such process


def test_table_only_reads_results_and_compares(tmp_path, capsys) -> None:
    (tmp_path / "results.json").write_text(json.dumps(_result("new", 600.0, 3900.0, SUMMARY)))
    (tmp_path / "before.json").write_text(json.dumps(_result("old", 800.0, 7800.0, SUMMARY)))
    assert default_run.main(["--table-only", "--out", str(tmp_path), "--compare", str(tmp_path / "before.json")]) == 0
    assert "| wall (s) | 800 | 600 | −200 (-25%) |" in capsys.readouterr().out
