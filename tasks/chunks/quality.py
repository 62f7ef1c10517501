"""Chunks not worth a question, found cheaply before the LLM is asked about them.

A PDF's table of contents, its reference list, a thesis cover page or a copyright page
become chunks like any other page, and the LLM dutifully asks "第三章在第几页？" or
"谁是答辩委员会主席？": questions nobody will search for, which teach the embedding model
to match page numbers and form labels. Each check here is a few regular expressions
over the chunk's text, so skipping these chunks costs nothing and saves their requests.
Skipped chunks stay in the corpus (as distractors); they only get no question.

Example::

    >>> skip_reason("第一章 绪论 ........ 1\\n第二章 方法 ........ 5\\n第三章 结果 ........ 9")
    'table of contents'
    >>> skip_reason("尤金袋鼠分布在澳洲南部岛屿及西岸地区，以小群生活。") is None
    True
"""

from __future__ import annotations

import re

__all__ = [
    "TOO_LITTLE_TEXT", "MOSTLY_NUMBERS", "TABLE_OF_CONTENTS", "REFERENCES", "BOILERPLATE",
    "skip_reason",
]

TOO_LITTLE_TEXT = "too little text"
MOSTLY_NUMBERS = "mostly numbers"
TABLE_OF_CONTENTS = "table of contents"
REFERENCES = "references"
BOILERPLATE = "boilerplate (cover, copyright, declaration)"

# Fewer letters than this (CJK ideographs count as letters) cannot carry a question.
MIN_LETTERS = 8
# A table of figures: digits are at least this share of the visible characters and
# letters less than MAX_LETTER_SHARE of them. Prose with dates and amounts stays well below.
MIN_DIGIT_SHARE = 0.3
MAX_LETTER_SHARE = 0.35

# Dot leaders and the page number after them: "绪论 ........ 1", "Introduction …… 12".
_LEADER = re.compile(r"(?:\.{3,}|…{2,}|·{3,}|．{3,}|。{3,}|-{4,}|_{4,})\s*\d{1,4}")
_TOC_HEADING = re.compile(r"^\W*(?:目\s*录|contents|table of contents)\b", re.IGNORECASE)
_SECTION = re.compile(r"第[一二三四五六七八九十百\d]+[章节篇部]|\b\d+(?:\.\d+)+\s")
# GB/T 7714 document types: [J] journal, [M] book, [C] proceedings, [D] thesis, [EB/OL] web…
_GB_TYPE = re.compile(r"\[(?:J|M|C|D|R|P|S|N|Z|A|G|EB/OL|DB/OL|J/OL|M/OL|C/OL)\]")
_REF_SIGNAL = re.compile(r"\bet al\.|\bdoi[:：]|\bpp\.\s*\d|\bvol\.\s*\d|\bin proceedings\b|\barxiv[:：]", re.IGNORECASE)
_NUMBERED_ENTRY = re.compile(r"(?:^|\n)\s*\[\d{1,3}\]")
_YEAR = re.compile(r"(?<!\d)(?:19|20)\d{2}(?!\d)")
_REF_HEADING = re.compile(r"^\W*(?:参\s*考\s*文\s*献|references|bibliography|引用文献)", re.IGNORECASE)
# Labels of cover pages, declarations and copyright pages. One or two occur in prose
# ("他的指导教师是……"); four different ones in one chunk are a form, not content.
_BOILERPLATE_MARKERS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        r"版权所有", r"版权声明", r"©|\(c\)\s*\d{4}", r"\bcopyright\b", r"all rights reserved", r"\bisbn\b",
        r"原创性声明|独创性声明", r"使用授权|授权书|授权说明", r"(?:作者|导师|本人)?签\s*名\s*[:：]", r"日\s*期\s*[:：]",
        r"年\s+月\s+日", r"指导教师|指导老师", r"答辩委员会|答辩日期", r"学\s*号\s*[:：]?", r"分\s*类\s*号",
        r"密\s*级", r"\budc\b", r"学校代码|单位代码", r"申请学位|学位类别|学科专业", r"培养单位",
        r"论文提交日期", r"图书在版编目|\bcip\b", r"责任编辑", r"开\s*本\s*[:：]?\s*\d", r"印\s*张", r"版\s*次", r"印\s*次",
        r"定\s*价\s*[:：]?\s*\d", r"未经.{0,6}许可", r"不得转载|禁止转载", r"免责声明",
    )
]
MIN_BOILERPLATE_MARKERS = 4
MIN_BOILERPLATE_MARKERS_SHORT = 3  # in a chunk shorter than SHORT_CHUNK characters
SHORT_CHUNK = 200


def _counts(text: str) -> tuple[int, int, int]:
    """(visible characters, letters, digits)."""
    visible = [ch for ch in text if not ch.isspace()]
    letters = sum(1 for ch in visible if ch.isalpha())
    digits = sum(1 for ch in visible if ch.isdigit())
    return len(visible), letters, digits


def is_table_of_contents(text: str) -> bool:
    leaders = len(_LEADER.findall(text))
    if leaders >= 3:
        return True
    return bool(_TOC_HEADING.search(text)) and len(_SECTION.findall(text)) >= 3


def is_reference_list(text: str) -> bool:
    years = len(_YEAR.findall(text))
    if len(_GB_TYPE.findall(text)) >= 3:
        return True
    if len(_REF_SIGNAL.findall(text)) >= 3 and years >= 3:
        return True
    if len(_NUMBERED_ENTRY.findall(text)) >= 3 and years >= 3:
        return True
    return bool(_REF_HEADING.search(text)) and years >= 2


def boilerplate_markers(text: str) -> int:
    """How many different cover-page / declaration / copyright labels ``text`` holds."""
    return sum(1 for marker in _BOILERPLATE_MARKERS if marker.search(text))


def is_boilerplate(text: str) -> bool:
    needed = MIN_BOILERPLATE_MARKERS_SHORT if len(text) < SHORT_CHUNK else MIN_BOILERPLATE_MARKERS
    return boilerplate_markers(text) >= needed


def skip_reason(text: str) -> str | None:
    """Why no question should be asked about the chunk ``text``, or None to ask.

    Example::

        >>> skip_reason("[1] 张三. 检索增强生成综述[J]. 计算机学报, 2023, 46(1): 1-20.\\n"
        ...             "[2] 李四. 向量数据库[M]. 北京: 科学出版社, 2021.\\n"
        ...             "[3] Lewis P, et al. Retrieval-augmented generation[C]. NeurIPS, 2020.")
        'references'
    """
    visible, letters, digits = _counts(text)
    if letters < MIN_LETTERS:
        return TOO_LITTLE_TEXT
    if digits >= MIN_DIGIT_SHARE * visible and letters < MAX_LETTER_SHARE * visible:
        return MOSTLY_NUMBERS
    if is_table_of_contents(text):
        return TABLE_OF_CONTENTS
    if is_reference_list(text):
        return REFERENCES
    if is_boilerplate(text):
        return BOILERPLATE
    return None
