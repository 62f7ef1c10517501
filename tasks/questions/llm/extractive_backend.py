"""A question writer without an LLM: deterministic, instant questions for tests and smoke runs.

It finds the chunk inside the prompt (between the template's ``-----`` fences),
picks a clause of it by a stable hash of the chunk, and asks about it::

    文中关于“光合作用是植物利用光能”说了什么？

The questions are poor training data but exercise every stage of the pipeline
in seconds, and the same chunk always gives the same question.

Example::

    >>> from tasks.core.settings import DEFAULT_PROMPT_TEMPLATE
    >>> from tasks.questions.prompts import build_prompt
    >>> writer = ExtractiveWriter()
    >>> writer.complete([build_prompt(DEFAULT_PROMPT_TEMPLATE, "水在一百摄氏度时沸腾。冰在零度融化。", 1)])
    ['文中关于“水在一百摄氏度时沸腾”说了什么？']
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tasks.questions.llm.base import AnswerCallback, BaseWriter, ProgressCallback

if TYPE_CHECKING:
    from tasks.core.settings import Settings

__all__ = ["ExtractiveWriter", "extract_context", "extractive_questions"]

_FENCE = re.compile(r"^\s*-{5,}\s*$", re.MULTILINE)
_SENTENCE_END = re.compile(r"[。！？!?；;\n]+|(?<=[a-zA-Z])\.\s+")
_CLAUSE_SEP = re.compile(r"[，,、：:（）()]+")
_DROP = re.compile(r"[“”\"'‘’「」『』《》<>{}\[\]]+")
_SPACES = re.compile(r"\s+")
MIN_CLAUSE, MAX_CLAUSE = 8, 20
FALLBACK_QUESTION = "这段资料讲了什么？"


def extract_context(prompt: str) -> str:
    """The text between the first two ``-----`` fence lines, or the whole prompt if there are none."""
    fences = list(_FENCE.finditer(prompt))
    if len(fences) >= 2:
        return prompt[fences[0].end() : fences[1].start()].strip()
    return prompt.strip()


def _clauses(context: str) -> list[str]:
    clauses = []
    for sentence in _SENTENCE_END.split(context):
        for part in _CLAUSE_SEP.split(sentence):
            # Quotes inside would clash with the ones the question puts around the clause.
            part = _SPACES.sub(" ", _DROP.sub("", part)).strip()
            if len(part) >= 4:
                clauses.append(part)
    # Prefer clauses of a readable length; shorter ones only if there is nothing else.
    good = [c for c in clauses if len(c) >= MIN_CLAUSE]
    return [c[:MAX_CLAUSE] for c in (good or clauses)]


def extractive_questions(context: str, n: int = 1) -> list[str]:
    """Up to ``n`` distinct questions about ``context``, chosen by a hash of it."""
    clauses = list(dict.fromkeys(_clauses(context)))
    if not clauses:
        return [FALLBACK_QUESTION]
    # sha256, not hash(): Python's str hash changes from one process to the next.
    start = int.from_bytes(hashlib.sha256(context.encode("utf-8")).digest()[:8], "big") % len(clauses)
    picked = [clauses[(start + k) % len(clauses)] for k in range(min(n, len(clauses)))]
    return [f"文中关于“{c}”说了什么？" for c in picked]


class ExtractiveWriter(BaseWriter):
    """Writes ``n_questions`` lines per prompt, one question each, without a model."""

    name = "extractive"

    def __init__(self, n_questions: int = 1, delay_s: float = 0.0) -> None:
        super().__init__()
        self.n_questions = n_questions
        # A slow LLM, for tests that kill a run mid-generation and for demos of progress output.
        self.delay_s = delay_s

    @classmethod
    def from_settings(cls, settings: "Settings", **overrides: Any) -> "ExtractiveWriter":
        defaults = {"n_questions": settings.questions_per_chunk, "delay_s": settings.extractive_delay_s}
        return cls(**{**defaults, **overrides})

    def complete(
        self,
        prompts: Sequence[str],
        on_progress: ProgressCallback | None = None,
        on_answer: AnswerCallback | None = None,
    ) -> list[str]:
        answers = []
        for i, prompt in enumerate(prompts):
            if self.delay_s:
                time.sleep(self.delay_s)
            self.requests_sent += 1
            answers.append("\n".join(extractive_questions(extract_context(prompt), self.n_questions)))
            if on_answer is not None:
                on_answer(i, answers[-1])
            if on_progress is not None:
                on_progress(1)
        return answers
