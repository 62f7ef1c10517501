"""Reasons to drop a question the LLM wrote, checked cheaply one question at a time.

Measured on the bundled 1.5B model: about one answer in ten is no question at all (a
sentence copied from the chunk), and a quarter copy 15+ consecutive characters of their
chunk — pairs that teach string matching instead of retrieval. Each filter is a setting.

Example::

    >>> drop_reason("尤金袋鼠分布在哪里？", "尤金袋鼠分布在澳洲南部。", Settings())
    >>> drop_reason("尤金袋鼠分布在澳洲南部。", "尤金袋鼠分布在澳洲南部。", Settings())
    'not a question'
    >>> drop_reason("Where do tammar wallabies live?", "尤金袋鼠分布在澳洲南部。", Settings())
    'not Chinese (the chunk is)'
"""

from __future__ import annotations

from tasks.core.settings import Settings

NOT_A_QUESTION = "not a question"
TOO_SHORT = "too short"
TOO_LONG = "too long"
COPIES_CHUNK = "copies the chunk"
DUPLICATE = "duplicate of another question"
NOT_CHINESE = "not Chinese (the chunk is)"
ECHOES_PROMPT = "repeats the prompt's example"

# A chunk is Chinese when at least this share of its letters are CJK ideographs; a
# question is Chinese when it has a few ideographs and they are not lost among Latin
# letters. "RAG和BM25有什么不同？" (6 of 13) is Chinese; "What does BM25 do?" is not.
CHINESE_CHUNK_SHARE = 0.3
CHINESE_QUESTION_SHARE = 0.3
MIN_CHINESE_CHARS = 2


def is_cjk(ch: str) -> bool:
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf" or "\uf900" <= ch <= "\ufaff"


def chinese_share(text: str) -> tuple[int, float]:
    """(number of CJK ideographs, their share of the letters and digits) of ``text``.

    >>> chinese_share("BM25是什么？")
    (3, 0.42857142857142855)
    """
    letters = [ch for ch in text if ch.isalnum()]
    n = sum(1 for ch in letters if is_cjk(ch))
    return n, (n / len(letters) if letters else 0.0)


def is_chinese(text: str, min_share: float = CHINESE_QUESTION_SHARE) -> bool:
    n, share = chinese_share(text)
    return n >= MIN_CHINESE_CHARS and share >= min_share


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
    if settings.filter_non_chinese and not is_chinese(question) and is_chinese(chunk_text, CHINESE_CHUNK_SHARE):
        return NOT_CHINESE
    if settings.max_copied_chars and longest_common_run(body, chunk_text) > settings.max_copied_chars:
        return COPIES_CHUNK
    return None
