"""How a function becomes a pipeline stage, and how the flow runs stages.

A stage is a plain function in its package's ``stage.py``, decorated with :func:`stage`:
a Prefect task with the project's one cache policy (:class:`tasks.core.caching.StageCache`),
named by what it does, retried only when a retry can help. The flow calls stages through
:class:`StageRuns`, which applies the one rule for outputs that went missing (a cached
record whose files are gone runs again) and turns Prefect's task-run states into the run's
summary (seconds, cache hit, the record's counts).

Example::

    >>> from pathlib import Path
    >>> from tasks.core.stage import stage
    >>> @stage("count-lines", writes=("out_path",))
    ... def count_lines(text_file: Path, out_path: Path) -> dict:
    ...     n = len(Path(text_file).read_text().splitlines())
    ...     Path(out_path).write_text(str(n))
    ...     return {"lines": n, "out": Path(out_path)}
    >>> count_lines.name, count_lines.cache_policy.writes, sorted(count_lines.cache_policy.paths)
    ('count-lines', ('out_path',), ['out_path', 'text_file'])
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
from pathlib import Path
from typing import Any, Callable

from prefect import get_run_logger, task
from prefect.states import State

from tasks.core.caching import StageCache, path_parameters
from tasks.core.errors import PipelineError, TransientError
from tasks.core.settings import Settings


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry what a second try may fix, never a user's error.

    A :class:`TransientError` (the LLM server still away after the backend's own wait, a
    download cut off by the network) may pass, and so may an unexpected exception; any
    other :class:`PipelineError` (too many chunks failed, a bad file, a bad setting) fails
    the same way again, so retrying it only delays the message the user needs.
    """
    try:
        error = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable result is no reason to give up retrying
        return True
    return isinstance(error, TransientError) or not isinstance(error, PipelineError)


def stage_logger() -> logging.Logger | logging.LoggerAdapter:
    """The task run's logger inside Prefect; a plain logger when a stage is called directly."""
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run (unit tests of the stage functions)
        return logging.getLogger("tasks.stage")


def stage(
    name: str,
    *,
    writes: tuple[str, ...] = (),
    settings: tuple[str, ...] = (),
    run_name: str | None = None,
    retries: int = 0,
    summary: Callable[[Any, bool], dict[str, Any]] | None = None,
):
    """Make ``fn`` a stage: a Prefect task called ``name`` with the :class:`StageCache` policy.

    ``writes`` names the parameters that say where the stage writes; ``settings`` the
    settings groups it reads (it gets a view refusing every other field); ``run_name`` a
    Prefect ``task_run_name`` template; ``summary(record, cached)`` the counts the run's
    summary keeps (default: the record's fields that are not paths).
    """

    def wrap(fn: Callable[..., Any]):
        signature = inspect.signature(fn)
        policy = StageCache(writes=tuple(writes), settings=tuple(settings), module=fn.__module__,
                            paths=frozenset(path_parameters(fn)))

        @functools.wraps(fn)
        def body(*args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(*args, **kwargs)
            given = bound.arguments.get("settings")
            if isinstance(given, Settings):
                bound.arguments["settings"] = given.restricted(settings, name)
            return fn(*bound.args, **bound.kwargs)

        staged = task(
            body, name=name, task_run_name=run_name or name, cache_policy=policy, persist_result=True,
            retries=retries, retry_delay_seconds=10 if retries else 0,
            retry_condition_fn=retry_unless_user_error if retries else None,
        )
        staged.summarize = summary or default_summary
        return staged

    return wrap


def _fields(record: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(record):
        return dataclasses.asdict(record)
    return dict(record) if isinstance(record, dict) else {}


def record_paths(record: Any) -> list[Path]:
    """The files and folders a stage's record says it wrote: its ``Path`` values."""
    return [v for v in _fields(record).values() if isinstance(v, Path)]


def default_summary(record: Any, cached: bool) -> dict[str, Any]:
    return {k: v for k, v in _fields(record).items() if not isinstance(v, Path)}


def run_name(staged: Any, args: tuple, kwargs: dict) -> str:
    """The name Prefect gives this call's task run (``evaluate · guard · finetuned``)."""
    template = staged.task_run_name
    if not isinstance(template, str):
        return staged.name
    bound = inspect.signature(staged.fn).bind(*args, **kwargs)
    bound.apply_defaults()
    return template.format(**bound.arguments)


class StageRuns:
    """The stages of one flow run, in the order they ran.

    :meth:`run` calls a stage and returns its record; a record served from Prefect's cache
    whose files are gone (someone deleted an output) is made again. :meth:`summary` reads
    each task run back from Prefect for its duration.
    """

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter):
        self.logger = logger
        self.runs: list[tuple[str, State, dict[str, Any]]] = []

    def run(self, staged: Any, *args: Any, **kwargs: Any) -> Any:
        name = run_name(staged, args, kwargs)
        self.logger.info("%s …", name)
        state = staged(*args, return_state=True, **kwargs)
        record = state.result()  # raises the stage's error
        if state.name == "Cached" and any(not p.exists() for p in record_paths(record)):
            state = staged.with_options(refresh_cache=True)(*args, return_state=True, **kwargs)
            record = state.result()
        cached = state.name == "Cached"
        counts = staged.summarize(record, cached)
        self.runs.append((name, state, {"cached": cached, **counts}))
        shown = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()
                          if not isinstance(v, (list, dict)) and v is not None)
        self.logger.info("%s%s — %s", name, " (cached)" if cached else "", shown)
        return record

    def summary(self, wait_s: float = 15.0) -> dict[str, dict[str, Any]]:
        """``{stage: {"seconds", "cached", counts…}}``, with the seconds Prefect recorded for each
        task run (``None`` if the server has not recorded a run after ``wait_s``: task runs
        reach it as events, a moment after they end)."""
        import time

        from prefect import get_client
        from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterId

        ids = [state.state_details.task_run_id for _, state, _ in self.runs]
        wanted = {i for i in ids if i is not None}
        seconds: dict[Any, float] = {}
        deadline = time.monotonic() + wait_s
        with get_client(sync_client=True) as client:
            while True:
                for run in client.read_task_runs(task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=list(wanted)))):
                    if run.state is not None and run.state.is_final():
                        seconds[run.id] = round(run.total_run_time.total_seconds(), 2)
                if wanted <= seconds.keys() or time.monotonic() > deadline:
                    break
                time.sleep(0.25)
        return {name: {"seconds": seconds.get(run_id), **info} for (name, _, info), run_id in zip(self.runs, ids)}
