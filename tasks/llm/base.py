"""What every question writer offers: prompts in, raw completions out.

A writer turns each prompt (sent as the single user message of a chat) into the
model's raw answer; reading questions out of that answer is
:func:`tasks.prompts.parse_questions`'s job, so every backend stays a thin
adapter around its model or server.

Example::

    >>> with make_writer(settings) as writer:
    ...     raw = writer.complete(prompts, on_progress=bar.update)
    >>> writer.requests_sent
    3
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Protocol, runtime_checkable

__all__ = ["LLMError", "ProgressCallback", "QuestionWriter", "BaseWriter"]

# Called with the number of prompts that have just finished (an increment, like
# tqdm's update), from the thread that called complete().
ProgressCallback = Callable[[int], None]


class LLMError(RuntimeError):
    """The model could not write an answer: not installed, not reachable, or it refused the request."""


@runtime_checkable
class QuestionWriter(Protocol):
    """A backend that writes one raw completion per prompt."""

    name: str
    requests_sent: int

    def complete(self, prompts: Sequence[str], on_progress: ProgressCallback | None = None) -> list[str]:
        """Raw completions, one per prompt, in the order of ``prompts``."""
        ...

    def close(self) -> None:
        """Free the model or connections; the writer is not used afterwards."""
        ...


class BaseWriter:
    """Shared plumbing: the request counter, ``close()`` and the ``with`` statement.

    Subclasses implement :meth:`complete` and, if they hold resources, :meth:`close`.
    """

    name: str = "base"

    def __init__(self) -> None:
        # Prompts actually handed to the model: a fully cached run must leave this at 0.
        self.requests_sent = 0

    def complete(self, prompts: Sequence[str], on_progress: ProgressCallback | None = None) -> list[str]:
        raise NotImplementedError

    def close(self) -> None:
        """Nothing to free by default."""

    def __enter__(self) -> "BaseWriter":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, requests_sent={self.requests_sent})"
