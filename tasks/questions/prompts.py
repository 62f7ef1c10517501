"""Build question-writing prompts and read questions back out of what a model wrote.

Small chat models rarely answer with exactly one clean line: they number their
questions, wrap them in quotes, prefix them with ``问题：``, add the answer in
brackets, or think aloud inside ``<think>…</think>`` first. :func:`parse_questions`
undoes all of that so that only the questions themselves reach the dataset.

Example::

    >>> from tasks.core.settings import DEFAULT_PROMPT_TEMPLATE
    >>> prompt = build_prompt(DEFAULT_PROMPT_TEMPLATE, "光合作用是……", 1)
    >>> "光合作用是……" in prompt and "{context_str}" not in prompt
    True
    >>> parse_questions("<think>先读资料</think>\\n1. **问题：** 植物靠什么制造有机物？（答案：光合作用）")
    ['植物靠什么制造有机物？']
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["build_prompt", "with_examples", "parse_questions", "clean_line", "strip_think"]

CONTEXT_PLACEHOLDER = "{context_str}"
COUNT_PLACEHOLDER = "{num_questions_per_chunk}"


def build_prompt(template: str, context: str, n_questions: int) -> str:
    """Fill the template's ``{context_str}`` and ``{num_questions_per_chunk}``.

    ``str.format`` is not used on purpose: chunk text from PDFs often contains
    braces (code, formulas, JSON) that format() would treat as fields.

    Example::

        >>> build_prompt("资料：{context_str}\\n出{num_questions_per_chunk}题", "f(x) = {x}", 2)
        '资料：f(x) = {x}\\n出2题'
    """
    # The count goes in first: a context that itself contains the text
    # "{num_questions_per_chunk}" must stay untouched.
    return template.replace(COUNT_PLACEHOLDER, str(n_questions)).replace(CONTEXT_PLACEHOLDER, context)


EXAMPLES_PLACEHOLDER = "{examples_str}"
EXAMPLES_HEADER = "用户平时这样提问（这些问题与本题资料无关，只模仿提问的方式，不要照抄）："


def with_examples(template: str, questions: Iterable[str]) -> str:
    """The template with questions people wrote shown as examples of how they ask.

    A model asked to write "reading-test questions" writes a teacher's questions; a few
    questions users really asked move it toward their wording and length. The block goes
    where the template has ``{examples_str}``, else before the paragraph holding
    ``{context_str}`` (the default template's material), so it reads as part of the
    instructions. With no questions the template is returned unchanged (and so is every
    cache key built from it).

    Example::

        >>> t = "出题。\\n\\n资料：{context_str}"
        >>> with_examples(t, ["谁是被告？", "罚金多少？"])
        '出题。\\n\\n用户平时这样提问（这些问题与本题资料无关，只模仿提问的方式，不要照抄）：\\n- 谁是被告？\\n- 罚金多少？\\n\\n资料：{context_str}'
        >>> with_examples(t, []) == t
        True
    """
    questions = [q.strip() for q in questions if q.strip()]
    block = "\n".join([EXAMPLES_HEADER, *(f"- {q}" for q in questions)]) if questions else ""
    if EXAMPLES_PLACEHOLDER in template:
        return template.replace(EXAMPLES_PLACEHOLDER, block)
    if not block:
        return template
    paragraphs = template.split("\n\n")
    at = next((i for i, p in enumerate(paragraphs) if CONTEXT_PLACEHOLDER in p), len(paragraphs))
    return "\n\n".join(paragraphs[:at] + [block] + paragraphs[at:])


# --- reasoning blocks -----------------------------------------------------------

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL)
_THINK_TAG = re.compile(r"</?think>")


def strip_think(raw: str) -> str:
    """Remove reasoning: closed ``<think>…</think>`` blocks, an unclosed one, a stray ``</think>``.

    An unclosed ``<think>`` means the model ran out of tokens while still
    reasoning, so everything after it is reasoning, not a question. A lone
    ``</think>`` appears when the chat template itself opened the block, so
    only what follows it is the answer.
    """
    text = raw
    while True:
        before = text
        text = _THINK_BLOCK.sub("\n", text)
        if "</think>" in text:
            text = text.rsplit("</think>", 1)[1]
        if "<think>" in text:
            text = text.split("<think>", 1)[0]
        if text == before:
            return text


# --- one line -------------------------------------------------------------------

_QMARK = "?？"
_OPEN_CLOSE = {"「": "」", "『": "』", "“": "”", "‘": "’", '"': '"', "'": "'", "《": "》"}
_CLOSERS = "」』”’\"'"
_CN_NUM = "一二三四五六七八九十"

# Numbering and bullets: "1." "1、" "1)" "(1)" "（1）" "一、" "Q1:" "- " "* " "• ".
# "1." must not be followed by a digit, or "1.5B 模型……" would lose its "1.".
_NUMBERING = re.compile(
    rf"""^(?:
        \d{{1,3}}\s*(?:[.．](?!\d)|[、)）:：])
      | [(（]\s*(?:\d{{1,3}}|[{_CN_NUM}]{{1,3}})\s*[)）]
      | [{_CN_NUM}]{{1,3}}\s*[、.．]
      | Q\s*\d{{1,3}}\s*[.．、:：)）]
      | [-*+]\s+
      | [•·●▪◦]
    )\s*""",
    re.VERBOSE | re.IGNORECASE,
)
# Labels: "问题：" "问题1：" "问题一:" "测验问题：" "Question 2:" "Q:" "【问题】".
_LABEL = re.compile(
    rf"""^(?:
        [\u4e00-\u9fff]{{0,4}}(?:问题|题目|提问)\s*[\d{_CN_NUM}]{{0,3}}\s*[:：]
      | 问\s*[:：]
      | (?:question|q)\s*\d{{0,3}}\s*[:：]
      | 【[^】]{{0,8}}】
    )\s*""",
    re.VERBOSE | re.IGNORECASE,
)
_HEADING = re.compile(r"^#{1,6}\s+")
_ANSWER = re.compile(r"\s*[(（]?\s*(?:参考答案|答案|答|解析|提示|answer|explanation)\s*[:：].*$", re.IGNORECASE)
# Everything after the last question mark (except the closing quotes of a wrapper)
# is an answer, a score, or a remark: "……？（答案：……）", "……? (Answer: ...)".
_AFTER_QUESTION = re.compile(rf"([{_QMARK}][{re.escape(_CLOSERS)}]*)[^{_QMARK}]*$")
_SPACES = re.compile(r"\s+")


def _has_qmark(text: str) -> bool:
    return any(q in text for q in _QMARK)


def _strip_wrapper(text: str) -> str:
    """Remove one pair of quotes around the whole line, if they belong together."""
    if len(text) < 2:
        return text
    closer = _OPEN_CLOSE.get(text[0])
    if closer is None or text[-1] != closer:
        return text
    inner = text[1:-1]
    # "“甲”和“乙”" starts and ends with quotes that are not a pair around the line.
    if closer == text[0]:
        balanced = inner.count(closer) % 2 == 0
    else:
        balanced = inner.count(text[0]) == inner.count(closer)
    return inner if balanced else text


def _clean_once(text: str) -> str:
    text = _SPACES.sub(" ", text).strip()
    text = text.replace("**", "").replace("__", "").strip()
    text = _HEADING.sub("", text)
    text = _NUMBERING.sub("", text)
    text = _LABEL.sub("", text)
    answer = _ANSWER.search(text)
    if answer:
        head = text[: answer.start()]
        # "……？答案：……" and "……（答案：……）" lose the answer; "请给出答案：……？"
        # is itself the question, so a marker before the question mark stays.
        if _has_qmark(head) or not _has_qmark(text):
            text = head
    if _has_qmark(text):
        text = _AFTER_QUESTION.sub(r"\1", text)
    text = _strip_wrapper(text.strip())
    return text.strip()


def clean_line(line: str) -> str:
    """Strip numbering, labels, quotes, markdown and trailing answers from one line.

    Applied until nothing changes, so cleaning a cleaned line is a no-op.

    Example::

        >>> clean_line('2、问题：“细胞膜由什么构成？”（答案：磷脂双分子层）')
        '细胞膜由什么构成？'
    """
    text = _THINK_TAG.sub("", line)
    while True:
        cleaned = _THINK_TAG.sub("", _clean_once(text))
        if cleaned == text:
            return cleaned
        text = cleaned


# --- many lines -----------------------------------------------------------------


def _is_question(line: str) -> bool:
    return line[-1] in _QMARK and _has_words(line[:-1], 2)


def _has_words(text: str, n: int) -> bool:
    return sum(ch.isalnum() for ch in text) >= n


def _is_sentence(line: str) -> bool:
    # Intros such as "以下是问题：" or "Here are the questions:" end with a colon.
    return line[-1] not in ":：" and _has_words(line, 4)


def _key(line: str) -> str:
    return "".join(ch for ch in line.casefold() if ch.isalnum())


def parse_questions(raw: str, n: int = 1, exclude: Iterable[str] = ()) -> list[str]:
    """Up to ``n`` questions from a model's raw output; ``[]`` when none is usable.

    Lines ending in a question mark are the questions. If no line does, the
    first sentence-like line is taken instead (some models drop the ``？``).
    Duplicates, and any line equal to one in ``exclude`` (e.g. the prompt's own
    example question, which small models like to copy), are dropped.

    Example::

        >>> parse_questions("以下是问题：\\n1. 植物需要什么？\\n2. 植物需要什么？\\n3. 叶子是什么颜色？", 3)
        ['植物需要什么？', '叶子是什么颜色？']
    """
    if n <= 0:
        return []
    excluded = {_key(clean_line(e)) for e in exclude}
    lines: list[str] = []
    seen: set[str] = set()
    for line in strip_think(raw).splitlines():
        cleaned = clean_line(line)
        key = _key(cleaned)
        if not cleaned or not key or key in seen or key in excluded:
            continue
        seen.add(key)
        lines.append(cleaned)
    questions = [line for line in lines if _is_question(line)]
    if questions:
        return questions[:n]
    fallback = next((line for line in lines if _is_sentence(line)), None)
    return [fallback] if fallback else []
