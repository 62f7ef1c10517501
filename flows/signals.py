"""End a run on SIGTERM (``kill``, systemd, ``docker stop``, a process manager) the way
Ctrl-C ends it: cleanly, with no process left behind.

Python's default SIGTERM action ends the process on the spot: no ``finally`` blocks, no
atexit handlers. A local run's Prefect API server is a child process (uvicorn, started by
``prefect.server.api.server.SubprocessASGIServer``) that Prefect stops from an atexit
handler, so a run ended that way left the server running, orphaned. During a flow run
Prefect's engine catches SIGTERM itself, marks the run Crashed, and then sends the signal
again to whatever handler was there before: the default one, unless this module put one
there. Ours raises :class:`Terminated` (a ``SystemExit``) in the main thread, so
``with`` blocks (the run lock) unwind, the atexit handlers stop the server, and the
process exits with 128 + the signal number (143 for SIGTERM).

If the process has not exited ``grace_seconds`` after the signal (a C call that does not
return, a thread that does not finish), or a second signal arrives, its child processes
are stopped and it exits at once.

Two places lose the exception a handler raises, and with it the signal: a finalizer
(``__del__``, run by the garbage collector at any bytecode) whose exceptions Python prints
and drops, and Prefect's own bookkeeping when the signal lands while it creates a task
run (it reports a ``ValueError`` chained to the signal). The first is delivered again
(:func:`sys.unraisablehook`); the second is read from the chain when ``main`` fails.

Usage::

    if __name__ == "__main__":
        sys.exit(exit_cleanly_on_signals(main))
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable

GRACE_SECONDS = 30.0
"""How long a signalled run may take to stop by itself (Prefect marks the run, the server
stops within 5 s); shorter than systemd's 90 s before its own SIGKILL."""


class Terminated(SystemExit):
    """A termination signal arrived; ``code`` is 128 + the signal number, the shell's convention."""

    def __init__(self, signum: int) -> None:
        super().__init__(128 + signum)
        self.signum = signum


_signalled = threading.Event()
_delivered_again = threading.Event()  # the next signal is one a finalizer swallowed, not a second one
_previous_unraisablehook = sys.unraisablehook


def default_signals() -> tuple[int, ...]:
    """SIGTERM, and SIGHUP (the terminal closed) where the platform has it."""
    return (signal.SIGTERM, *((signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()))


def install(signals: Iterable[int] | None = None, grace_seconds: float = GRACE_SECONDS) -> list[int]:
    """Raise :class:`Terminated` in the main thread on each of ``signals`` (default:
    :func:`default_signals`) whose handler is still the default one; one ignored on purpose
    (``nohup``) or set by someone else is left alone. Returns the signals taken over.

    Call from the main thread, before Prefect starts its server.
    """
    global _previous_unraisablehook
    taken = []
    for signum in signals if signals is not None else default_signals():
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, lambda s, _frame: _on_signal(s, grace_seconds))
            taken.append(signum)
    if taken and sys.unraisablehook is not _deliver_again:
        _previous_unraisablehook = sys.unraisablehook
        sys.unraisablehook = _deliver_again
    return taken


def termination_signal(exc: BaseException | None) -> int | None:
    """The signal behind ``exc``: its own (:class:`Terminated`, Prefect's
    ``TerminationSignal``) or that of an exception it was raised from or while handling;
    ``None`` if no termination signal is in the chain."""
    from prefect.exceptions import TerminationSignal

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, Terminated):
            return exc.signum
        if isinstance(exc, TerminationSignal):
            return exc.signal
        exc = exc.__cause__ or exc.__context__
    return None


def exit_cleanly_on_signals(main: Callable[[], int], grace_seconds: float = GRACE_SECONDS) -> int:
    """Run ``main()`` with :func:`install`'s handlers; a termination signal gives a line on
    stderr and the exit code 128 + signal (after Prefect stopped its server at exit)."""
    install(grace_seconds=grace_seconds)
    try:
        return main()
    except BaseException as e:
        signum = termination_signal(e)
        if signum is None:
            raise
        _say(f"\nstopped by {signal.Signals(signum).name}: the stages that finished are kept; "
             "run the same command again to continue")
        return 128 + signum


def stop_children(timeout: float = 5.0) -> list[int]:
    """Terminate every descendant of this process (SIGTERM, then SIGKILL after ``timeout``);
    returns their pids."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return []
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=timeout)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    return [c.pid for c in children]


def _on_signal(signum: int, grace_seconds: float) -> None:
    again = _delivered_again.is_set()
    _delivered_again.clear()
    if _signalled.is_set() and not again:  # asked twice: stop waiting
        _exit_now(signum, "a second signal")
    if not _signalled.is_set():
        _signalled.set()
        threading.Thread(target=_watchdog, args=(signum, grace_seconds), name="exit-watchdog", daemon=True).start()
    raise Terminated(signum)


def _deliver_again(unraisable: "sys.UnraisableHookArgs") -> None:
    # A finalizer was running when the handler raised: Python dropped the exception, and
    # the run would go on as if never signalled. Signal again, a moment later from another
    # thread: the handler (ours, or Prefect's during a flow) then raises in the main thread
    # after this hook has returned (signalled from here, it would run inside the hook,
    # which drops its exception too; inside another finalizer, this hook runs again).
    signum = termination_signal(unraisable.exc_value)
    if signum is None:
        _previous_unraisablehook(unraisable)
        return
    _delivered_again.set()
    again = threading.Timer(0.1, os.kill, args=(os.getpid(), signum))
    again.daemon = True
    again.start()


def _watchdog(signum: int, grace_seconds: float) -> None:
    # A daemon thread: it dies with a process that exits in time, and still runs while the
    # interpreter waits for other threads or atexit handlers that hang.
    time.sleep(grace_seconds)
    _exit_now(signum, f"still running {grace_seconds:.0f} s after the signal")


def _exit_now(signum: int, why: str) -> None:
    try:
        _say(f"\n{signal.Signals(signum).name}: {why}; stopping child processes and exiting")
        stop_children()
    finally:
        os._exit(128 + signum)


def _say(line: str) -> None:
    # After SIGHUP the terminal may be gone: a failed write must not stop the shutdown.
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
