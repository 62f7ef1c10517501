"""flows/signals.py: a termination signal ends the process cleanly (atexit handlers run, exit
code 128 + signal), and a process that does not stop in time is ended with its children.
A signal whose exception Python or Prefect loses on the way still ends the run."""

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


# A signal that lands while a finalizer runs (the garbage collector calls them at any
# bytecode): the handler's exception is dropped by Python. "flow" signals inside a Prefect
# flow run (Prefect's handler raises), "plain" outside one (ours raises); "masked" is
# Prefect's bookkeeping reporting a ValueError raised while it handled the signal.
SWALLOWED = textwrap.dedent("""
    import os, signal, sys, time
    from prefect import flow
    from prefect.exceptions import TerminationSignal
    from flows.signals import exit_cleanly_on_signals

    class SignalsInItsFinalizer:
        def __del__(self):
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(10_000):  # the handler runs here, inside the finalizer
                pass

    def work():
        if sys.argv[1] == "masked":
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(10)
            except TerminationSignal:
                raise ValueError("Task run is not set")
        SignalsInItsFinalizer()
        for _ in range(100):
            time.sleep(0.1)
        print("never signalled", flush=True)

    def main():
        if sys.argv[1] == "plain":
            work()
        else:
            flow(name="signalled")(work)()
        return 0

    sys.exit(exit_cleanly_on_signals(main))
""")


@pytest.mark.parametrize("where", ["plain", "flow", "masked"])
def test_a_signal_whose_exception_is_lost_still_ends_the_run(where, prefect_home, tmp_path) -> None:
    done = subprocess.run([sys.executable, "-c", SWALLOWED, where], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO), **prefect_home(tmp_path / "home")}, timeout=300)
    assert done.returncode == 143, done.stdout + done.stderr
    assert "never signalled" not in done.stdout
    assert "stopped by SIGTERM" in done.stderr
    assert "Exception ignored" not in done.stderr


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
