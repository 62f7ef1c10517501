"""What every question writer offers: prompts in, raw completions out.

A writer turns each prompt (sent as the single user message of a chat) into the
model's raw answer; reading questions out of that answer is
:func:`tasks.questions.prompts.parse_questions`'s job, so every backend stays a thin
adapter around its model or server.

Example::

    >>> from tasks.core.settings import DEFAULT_PROMPT_TEMPLATE, Settings
    >>> from tasks.questions.llm import make_writer
    >>> from tasks.questions.prompts import build_prompt
    >>> texts = ["水在一百摄氏度时沸腾。", "冰在零度融化。", "光合作用需要光。"]
    >>> prompts = [build_prompt(DEFAULT_PROMPT_TEMPLATE, t, 1) for t in texts]
    >>> answers = {}  # the flow's on_answer writes each answer to the per-chunk cache instead
    >>> with make_writer(Settings(llm_backend="extractive")) as writer:
    ...     raw = writer.complete(prompts, on_answer=lambda i, text: answers.update({texts[i]: text}))
    ...     writer.reseed(43)  # a retry round: same model, another seed
    >>> writer.requests_sent, raw[1], answers["冰在零度融化。"]
    (3, '文中关于“冰在零度融化”说了什么？', '文中关于“冰在零度融化”说了什么？')
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tasks.core.settings import Settings

__all__ = ["AnswerCallback", "ProgressCallback", "QuestionWriter", "BaseWriter", "Sampling"]

# Called with the number of prompts that have just finished (an increment, like
# tqdm's update), from the thread that called complete().
ProgressCallback = Callable[[int], None]
# Called once per prompt with (its index in the complete() call, its raw answer) as soon
# as that answer is there, from the thread that called complete(), before complete()
# returns: the caller can keep each answer even if the call later fails or is killed.
AnswerCallback = Callable[[int, str], None]


@dataclass(frozen=True)
class Sampling:
    """How every backend samples, taken from the settings in one place.

    >>> Sampling(temperature=0.0).as_kwargs()
    {'temperature': 0.0, 'top_p': 0.8, 'max_tokens': 96, 'seed': 42}
    """

    temperature: float = 0.7
    top_p: float = 0.8
    max_tokens: int = 96
    seed: int | None = 42

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Sampling":
        return cls(settings.llm_temperature, settings.llm_top_p, settings.llm_max_tokens, settings.seed)

    def as_kwargs(self) -> dict[str, Any]:
        """The four values as keyword arguments (seed left out when None)."""
        return {k: v for k, v in asdict(self).items() if v is not None}


@runtime_checkable
class QuestionWriter(Protocol):
    """A backend that writes one raw completion per prompt.

    A writer may also offer ``reseed(seed)`` (as :class:`BaseWriter` does): generation
    then asks its retry rounds through the same writer, with the model loaded once,
    instead of making a writer per round.
    """

    name: str
    requests_sent: int

    def complete(
        self,
        prompts: Sequence[str],
        on_progress: ProgressCallback | None = None,
        on_answer: AnswerCallback | None = None,
    ) -> list[str]:
        """Raw completions, one per prompt, in the order of ``prompts``.

        ``on_answer`` is optional for a writer: one whose ``complete`` does not take it
        gets its answers kept when the call returns.
        """
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

    def complete(
        self,
        prompts: Sequence[str],
        on_progress: ProgressCallback | None = None,
        on_answer: AnswerCallback | None = None,
    ) -> list[str]:
        raise NotImplementedError

    def reseed(self, seed: int) -> None:
        """Sample the next prompts with ``seed``, keeping the loaded model (a retry round).

        Writers that sample keep their settings in ``self.sampling``; others ignore the seed.
        """
        sampling = getattr(self, "sampling", None)
        if isinstance(sampling, Sampling):
            self.sampling = replace(sampling, seed=seed)

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
