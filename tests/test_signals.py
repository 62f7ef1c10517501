"""flows/signals.py: a termination signal ends the process cleanly (atexit handlers run, exit
code 128 + signal), and a process that does not stop in time is ended with its children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # each test signals a subprocess running a flow

psutil = pytest.importorskip("psutil")

REPO = Path(__file__).resolve().parent.parent

# A stand-in for a run: a child process (like Prefect's server) stopped from an atexit
# handler, then a wait for the signal. "hang" swallows the clean exit and waits forever.
CHILD = textwrap.dedent("""
    import atexit, subprocess, sys, time
    from flows.signals import Terminated, exit_cleanly_on_signals

    def main():
        server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        atexit.register(lambda: (server.terminate(), server.wait(), print("server stopped", flush=True)))
        try:
            print("ready", server.pid, flush=True)
            time.sleep(600)
        except Terminated:
            if sys.argv[1] == "hang":
                time.sleep(600)
            raise
        return 0

    sys.exit(exit_cleanly_on_signals(main, grace_seconds=float(sys.argv[2])))
""")


def _start(mode: str, grace: float) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(grace)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline()
    assert line.startswith("ready"), line + proc.stderr.read()
    return proc, int(line.split()[1])


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_sigterm_runs_the_exit_handlers_and_exits_143() -> None:
    proc, server = _start("wait", grace=30)
    try:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 143
    assert "server stopped" in out
    assert "stopped by SIGTERM" in err and "Traceback" not in err
    assert _gone(server)


def test_a_run_that_does_not_stop_is_ended_with_its_children() -> None:
    proc, server = _start("hang", grace=1)
    try:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 143
    assert "still running 1 s after the signal" in err
    assert _gone(server)


def test_a_second_signal_does_not_wait() -> None:
    proc, server = _start("hang", grace=60)
    try:
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    finally:
        os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
    assert proc.returncode == 143 and "a second signal" in err
    assert _gone(server)


def test_an_ignored_signal_stays_ignored() -> None:
    from flows import signals

    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert signal.SIGHUP not in signals.install([signal.SIGHUP])
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)
