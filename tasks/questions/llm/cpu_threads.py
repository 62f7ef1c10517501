"""How many threads llama.cpp gets, and how its idle threads wait, on a CPU others may share.

llama.cpp splits each step of the model evenly over its threads and waits for the
slowest one before the next step. A thread whose core is also running another
program therefore holds all the others up, and with OpenMP's default wait policy the
threads that wait spin, taking CPU from that other program in turn: on a 2-core
laptop with one busy neighbour, generation gets several times slower. So, unless
the user says otherwise:

* **threads** = the cores this process may run on, less what other processes keep
  busy on them right now (rounded, at least 1; never more than a container's CPU quota);
* **passive wait**: ``OMP_WAIT_POLICY=PASSIVE`` is set before llama.cpp's OpenMP
  runtime is loaded, so a thread with nothing to do sleeps instead of spinning.

A neighbour that was busy for a moment at load must not cost the whole run a core, nor
one that starts later slow every step: while it generates, the backend looks again every
few seconds (:class:`ThreadTuner`, over the CPU time of the seconds since its last look)
and gives llama.cpp more or fewer threads, saying so in the log.

``llm_threads`` and ``OMP_WAIT_POLICY`` in the environment win over both choices.
``llama_cpp, wait = import_llama_cpp(passive=True)`` imports llama.cpp and says in ``wait``
which policy its threads got (``'passive wait'`` when this import set it).

Example::

    >>> choose_threads(cpus=2, busy_elsewhere=1.3)
    ThreadChoice(threads=1, why='2 cores, 1.3 busy with other processes')
    >>> describe(choose_threads(cpus=2, busy_elsewhere=1.3), describe_wait(None, passive=True, new_openmp=True))
    'llm: 1 thread (2 cores, 1.3 busy with other processes), passive wait'
    >>> describe_change(1, choose_threads(cpus=2, busy_elsewhere=0.1))
    'llm: 2 threads now (was 1; 2 cores, 0.1 busy with other processes)'
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

__all__ = [
    "LoadMeter", "ThreadChoice", "ThreadTuner", "all_cores", "busy_elsewhere", "choose_threads", "cpu_quota",
    "describe", "describe_change", "describe_wait", "import_llama_cpp", "parse_cpu_quota", "pick_threads",
]

logger = logging.getLogger(__name__)

# Long enough to see a neighbour that works in bursts, short next to loading the model.
SAMPLE_S = 1.0
# How often generation looks at the load again: the average over this long is what counts, so
# a burst shorter than it barely moves the choice, and a neighbour that stays is seen within it.
RECHECK_S = 5.0
# What OpenMP reads once, when its runtime is loaded with llama.cpp.
WAIT_ENV = "OMP_WAIT_POLICY"
# The wait policy llama.cpp was loaded with in this process (None: not loaded by us).
_wait: str | None = None


@dataclass(frozen=True)
class ThreadChoice:
    """How many threads llama.cpp gets, and why (for the run log)."""

    threads: int
    why: str


def choose_threads(
    cpus: int, busy_elsewhere: float, *, quota: float | None = None, explicit: int | None = None
) -> ThreadChoice:
    """Threads for llama.cpp: ``explicit`` if set, else the cores other processes leave free.

    ``cpus``: cores this process may run on; ``busy_elsewhere``: how many of them other
    processes keep busy (in cores); ``quota``: a container's CPU limit in cores, if any.
    A core at least half free counts, since a thread that shares its core holds up the rest.

    >>> choose_threads(4, 0.2).threads, choose_threads(4, 2.6).threads, choose_threads(2, 5.0).threads
    (4, 1, 1)
    >>> choose_threads(16, 0.0, quota=2.5).threads, choose_threads(2, 1.3, explicit=2).threads
    (2, 2)
    """
    if explicit:
        return ThreadChoice(explicit, f"llm_threads={explicit} set")
    cpus = max(1, cpus)
    busy = max(0.0, busy_elsewhere)
    limit = cpus if quota is None else max(1, min(cpus, math.floor(quota)))
    threads = max(1, min(limit, math.floor(cpus - busy + 0.5)))
    why = f"{cpus} core{'s' * (cpus != 1)}, {busy:.1f} busy with other processes"
    if quota is not None and quota < cpus:
        why += f", CPU quota {quota:g}"
    return ThreadChoice(threads, why)


def describe(choice: ThreadChoice, wait: str) -> str:
    """The run log's one line about it."""
    return f"llm: {choice.threads} thread{'s' * (choice.threads != 1)} ({choice.why}), {wait}"


def describe_change(was: int, choice: ThreadChoice) -> str:
    """The run log's line when generation changes the thread count."""
    return f"llm: {choice.threads} thread{'s' * (choice.threads != 1)} now (was {was}; {choice.why})"


def all_cores() -> int:
    """Every core this process may run on (what llama.cpp got before it looked at the load)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def parse_cpu_quota(cgroup_v2_max: str | None = None, v1_quota: str | None = None, v1_period: str | None = None) -> float | None:
    """Cores allowed by a cgroup CPU limit (``docker --cpus``), from the files' text; None: no limit.

    >>> parse_cpu_quota("200000 100000"), parse_cpu_quota("max 100000"), parse_cpu_quota(None, "50000", "100000")
    (2.0, None, 0.5)
    """
    try:
        if cgroup_v2_max is not None:
            quota, period = cgroup_v2_max.split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        if v1_quota is not None and v1_period is not None:
            q, p = int(v1_quota), int(v1_period)
            return None if q <= 0 or p <= 0 else q / p
    except ValueError:
        return None
    return None


def cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """This container's CPU limit in cores (cgroup v2 or v1), None when there is none or no cgroups."""

    def read(*parts: str) -> str | None:
        try:
            return (root.joinpath(*parts)).read_text().strip()
        except OSError:
            return None

    v2 = read("cpu.max")
    if v2 is not None:
        return parse_cpu_quota(v2)
    return parse_cpu_quota(None, read("cpu", "cpu.cfs_quota_us"), read("cpu", "cpu.cfs_period_us"))


def busy_elsewhere(sample_s: float = SAMPLE_S) -> tuple[float, str]:
    """(Cores other processes keep busy, how it was measured).

    CPU time spent on this process's cores over ``sample_s``, less this process's own.
    Not the load average: its last minute counts this process's own earlier work (reading
    PDFs) and, in a container, every other container on the host.
    """
    try:
        import psutil  # installed with accelerate
    except ImportError:
        return _load_average_elsewhere()
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = None
    before, own_before, started = _busy_seconds(psutil, cpus), time.process_time(), time.monotonic()
    time.sleep(sample_s)
    busy = _busy_seconds(psutil, cpus) - before
    own = time.process_time() - own_before
    return _elsewhere(busy, own, time.monotonic() - started, _n_cores(psutil, cpus)), "sampled"


def _n_cores(psutil, cpus: list[int] | None) -> int:
    return len(cpus) if cpus else psutil.cpu_count() or 1


def _elsewhere(busy: float, own: float, seconds: float, cores: int) -> float:
    """Cores other processes kept busy: never fewer than none nor more than there are (a VM's
    counters can jump, e.g. stolen time credited late).

    >>> _elsewhere(busy=34.2, own=0.3, seconds=0.3, cores=2)
    2.0
    """
    return min(float(cores), max(0.0, (busy - own) / max(seconds, 1e-6)))


class LoadMeter:
    """:func:`busy_elsewhere` without the sleep: each :meth:`busy_elsewhere` call measures the
    time since the previous one (since the meter was made, the first time), so a caller that
    looks every few seconds pays a read of ``/proc/stat``, not a pause."""

    def __init__(self) -> None:
        try:
            import psutil  # installed with accelerate
        except ImportError:
            psutil = None
        self._psutil = psutil
        try:
            self._cpus: list[int] | None = sorted(os.sched_getaffinity(0))
        except AttributeError:
            self._cpus = None
        self._last = self._now()

    def _now(self) -> tuple[float, float, float]:
        busy = _busy_seconds(self._psutil, self._cpus) if self._psutil is not None else 0.0
        return busy, time.process_time(), time.monotonic()

    def busy_elsewhere(self) -> float:
        """Cores other processes kept busy, on average, since the last call."""
        if self._psutil is None:
            return _load_average_elsewhere()[0]
        (busy0, own0, t0), now = self._last, self._now()
        self._last = now
        busy, own, t = now
        return _elsewhere(busy - busy0, own - own0, t - t0, _n_cores(self._psutil, self._cpus))


class ThreadTuner:
    """Gives llama.cpp the threads the load leaves free, looked at again every ``every_s`` while
    it generates.

    ``set_threads(n)`` changes the running context's thread count (llama.cpp takes a new
    count between two decode calls); ``busy_elsewhere()`` is a :class:`LoadMeter`'s;
    ``clock`` is ``time.monotonic``. :meth:`tick` is cheap when it is not yet time, so the
    decode loop calls it at every step.

    >>> applied = []
    >>> tuner = ThreadTuner(1, cpus=2, set_threads=applied.append, busy_elsewhere=lambda: 0.1,
    ...                     clock=iter([0.0, 2.0, 5.0]).__next__, every_s=5.0)
    >>> tuner.tick(), tuner.tick(), applied
    (None, ThreadChoice(threads=2, why='2 cores, 0.1 busy with other processes'), [2])
    """

    def __init__(
        self,
        threads: int,
        *,
        cpus: int,
        set_threads: Callable[[int], None],
        busy_elsewhere: Callable[[], float],
        quota: float | None = None,
        every_s: float = RECHECK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threads = threads
        self.cpus = cpus
        self.quota = quota
        self.every_s = every_s
        self._set_threads = set_threads
        self._busy_elsewhere = busy_elsewhere
        self._clock = clock
        self._started = clock()
        self._next = self._started + every_s
        # (seconds since the tuner was made, threads from then on), for benchmarks and tests.
        self.changes: list[tuple[float, int]] = []

    def tick(self) -> ThreadChoice | None:
        """Look at the load if it is time; the new choice when the thread count changed, else None."""
        now = self._clock()
        if now < self._next:
            return None
        self._next = now + self.every_s
        choice = choose_threads(self.cpus, self._busy_elsewhere(), quota=self.quota)
        if choice.threads == self.threads:
            return None
        self._set_threads(choice.threads)
        logger.info("%s", describe_change(self.threads, choice))
        self.threads = choice.threads
        self.changes.append((round(now - self._started, 1), choice.threads))
        return choice

    @classmethod
    def for_this_machine(cls, threads: int, set_threads: Callable[[int], None],
                         every_s: float = RECHECK_S) -> "ThreadTuner":
        """A tuner over this process's cores and CPU quota, its load measured by a :class:`LoadMeter`."""
        return cls(threads, cpus=all_cores(), set_threads=set_threads, busy_elsewhere=LoadMeter().busy_elsewhere,
                   quota=cpu_quota(), every_s=every_s)


def _busy_seconds(psutil, cpus: list[int] | None) -> float:
    per_cpu = psutil.cpu_times(percpu=True)
    if cpus is not None:
        per_cpu = [per_cpu[i] for i in cpus if i < len(per_cpu)]
    # Waiting for the disk is idle for a thread that wants to compute; stolen time (a VM's) is not.
    return sum(sum(t) - t.idle - getattr(t, "iowait", 0.0) for t in per_cpu)


def _load_average_elsewhere() -> tuple[float, str]:
    try:
        return os.getloadavg()[0], "1-minute load average"
    except (AttributeError, OSError):
        return 0.0, "unknown, assumed idle"


def pick_threads(explicit: int | None, sample_s: float = SAMPLE_S) -> ThreadChoice:
    """:func:`choose_threads` for this machine, now (a short sample unless ``explicit``)."""
    if explicit:
        return choose_threads(all_cores(), 0.0, explicit=explicit)
    busy, _ = busy_elsewhere(sample_s)
    return choose_threads(all_cores(), busy, quota=cpu_quota())


def import_llama_cpp(passive: bool) -> tuple[ModuleType, str]:
    """``import llama_cpp``, its OpenMP threads told to sleep when idle; (module, the wait policy in words).

    OpenMP reads ``OMP_WAIT_POLICY`` once, when its runtime is loaded with llama.cpp, so
    the variable is set only around the first import and removed again: an OpenMP
    runtime loaded later (PyTorch's, for training) keeps its own default.
    """
    global _wait
    loaded = sys.modules.get("llama_cpp")
    if loaded is not None:
        return loaded, _wait or "OpenMP default wait (llama.cpp was loaded before the policy was set)"
    user = os.environ.get(WAIT_ENV)
    set_here = passive and not user
    before = openmp_runtimes()
    if set_here:
        os.environ[WAIT_ENV] = "PASSIVE"
    try:
        import llama_cpp
    finally:
        if set_here:
            os.environ.pop(WAIT_ENV, None)
    after = openmp_runtimes()
    _wait = describe_wait(user, passive, None if before is None or after is None else bool(after - before))
    return llama_cpp, _wait


def describe_wait(user: str | None, passive: bool, new_openmp: bool | None) -> str:
    """The wait policy in words: set by the user, by us, or left alone.

    ``new_openmp``: whether loading llama.cpp brought an OpenMP runtime (None: cannot tell).

    >>> describe_wait(None, True, True), describe_wait("ACTIVE", True, True)
    ('passive wait', 'OMP_WAIT_POLICY=ACTIVE from the environment')
    """
    if user:
        return f"{WAIT_ENV}={user} from the environment"
    if not passive:
        return "OpenMP default wait (llm_passive_wait off)"
    if new_openmp is False:
        return "wait policy unchanged (llama.cpp loaded no new OpenMP runtime)"
    return "passive wait"


def openmp_runtimes() -> set[str] | None:
    """Paths of the OpenMP runtimes mapped into this process (Linux), None where that cannot be read."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    names = ("libgomp", "libomp", "libiomp")
    return {line.split()[-1] for line in maps.splitlines() if any(n in line.rsplit("/", 1)[-1] for n in names)}
