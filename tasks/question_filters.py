"""Reasons to drop a question the LLM wrote, checked cheaply one question at a time.

Measured on the bundled 1.5B model: about one answer in ten is no question at all (a
sentence copied from the chunk), and a quarter copy 15+ consecutive characters of their
chunk — pairs that teach string matching instead of retrieval. Each filter is a setting.

Example::

    >>> drop_reason("尤金袋鼠分布在哪里？", "尤金袋鼠分布在澳洲南部。", Settings())
    >>> drop_reason("尤金袋鼠分布在澳洲南部。", "尤金袋鼠分布在澳洲南部。", Settings())
    'not a question'
"""

from __future__ import annotations

from tasks.settings import Settings

NOT_A_QUESTION = "not a question"
TOO_SHORT = "too short"
TOO_LONG = "too long"
COPIES_CHUNK = "copies the chunk"
DUPLICATE = "duplicate of another question"


def longest_common_run(a: str, b: str) -> int:
    """Length of the longest run of characters found in both strings."""
    best = 0
    prev = [0] * (len(b) + 1)
    for ca in a:
        cur = [0] * (len(b) + 1)
        for j, cb in enumerate(b, 1):
            if ca == cb:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best = cur[j]
        prev = cur
    return best


def drop_reason(question: str, chunk_text: str, settings: Settings) -> str | None:
    """Why ``question`` should not become a training pair, or None to keep it."""
    if settings.filter_non_questions and not question.rstrip().endswith(("？", "?")):
        return NOT_A_QUESTION
    body = question.rstrip("？? ")
    if len(body) < settings.min_question_chars:
        return TOO_SHORT
    if len(question) > settings.max_question_chars:
        return TOO_LONG
    if settings.max_copied_chars and longest_common_run(body, chunk_text) > settings.max_copied_chars:
        return COPIES_CHUNK
    return None
