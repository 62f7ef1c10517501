"""Clean the raw text that a PDF library extracts from one page.

PDF text comes out one visual line at a time: a Chinese sentence that wrapped at
the right margin arrives with a line break between two characters, headers and
footers arrive as page numbers, and broken files leak NUL and other control
characters. :func:`clean_page_text` turns that into text a chunker and an
embedding model can use: sentences whole, paragraphs separated by a blank line.

Example::

    >>> clean_page_text("光合作用是植物利用光能\\n合成有机物的过程。\\n\\n- 3 -")
    '光合作用是植物利用光能合成有机物的过程。'
    >>> clean_page_text("A sentence that\\nwrapped here.")
    'A sentence that wrapped here.'

Rules, in order:

1. Control characters go (newlines stay), every kind of line break becomes ``\\n``,
   ligatures such as ``ﬁ`` are spelt out.
2. Runs of spaces, tabs, no-break and ideographic spaces become one space; a space
   between two CJK characters is dropped (PDF extractors insert them where glyphs
   were positioned separately; Chinese puts no spaces between words).
3. Lines at the top or bottom of the page that hold only a page number
   (``12``, ``- 12 -``, ``第 12 页``, ``Page 3 of 9``, ``3/9``) are dropped.
4. Within a paragraph, a line break is removed unless the line ends with
   sentence-final punctuation (``。！？；：…”`` and their Latin counterparts).
   A break between two CJK characters, or between CJK and Latin text, is removed
   with no space; a break between two Latin words becomes a space, and a word
   hyphenated at the margin is rejoined. A line clearly shorter than the page's
   longest line, with no final punctuation, is taken to end a heading or a
   paragraph: the break becomes a paragraph break (a blank line).
5. Several blank lines become one; the text is stripped.

The result is a fixed point: ``clean_page_text(clean_page_text(t)) == clean_page_text(t)``.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["clean_block_text", "clean_page_text", "is_cjk", "is_page_number"]

# A line shorter than this share of the page's longest line ends a heading or a
# paragraph: wrapped text fills the line to the margin, a last line does not.
SHORT_LINE_RATIO = 0.6

# Everything str.splitlines() treats as a line break, so later steps see "\n" only.
_LINE_BREAKS = re.compile(r"\r\n|[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")
# Horizontal whitespace, including no-break and ideographic spaces.
_SPACES = re.compile(r"[^\S\n]+")
_CJK_CLASS = (
    "\u2e80-\u2fdf"  # radicals
    "\u3001-\u303f"  # CJK punctuation (U+3000, the ideographic space, is whitespace)
    "\u3040-\u30ff"  # kana
    "\u3100-\u312f\u31a0-\u31bf"  # bopomofo
    "\u3400-\u4dbf\u4e00-\u9fff"  # ideographs
    "\uf900-\ufaff"  # compatibility ideographs
    "\ufe30-\ufe4f"  # compatibility forms
    "\uff01-\uff9f\uffe0-\uffe6"  # fullwidth forms, halfwidth kana
    "\U00020000-\U0003134f"  # ideographs, extensions B and later
)
_CJK = re.compile(f"[{_CJK_CLASS}]")
_SPACE_BETWEEN_CJK = re.compile(f"(?<=[{_CJK_CLASS}]) (?=[{_CJK_CLASS}])")
# A line ending in one of these ends a sentence (closing quotes and brackets may follow).
_SENTENCE_END = re.compile(r"[。！？；：…!?;:.．｡]['\"’”」』）)\]】》〉]*$|[”」』]$")
_HYPHENATED = re.compile(r"[A-Za-z]-$")
_REJOIN = "-"  # a separator that means: drop the line's final hyphen, join with no space
_PAGE_NUMBER = re.compile(
    r"""^(?:
        [-–—~]?\s*\d{1,4}\s*[-–—~]?           # 12, - 12 -
      | \d{1,4}\s*/\s*\d{1,4}                 # 3/9
      | 第\s*\d{1,4}\s*页(?:\s*[,，/]?\s*共\s*\d{1,4}\s*页)?  # 第 3 页, 第3页 共9页
      | (?:page|p\.)\s*\d{1,4}(?:\s*(?:of|/)\s*\d{1,4})?   # Page 3, page 3 of 9
    )$""",
    re.IGNORECASE | re.VERBOSE,
)


def is_cjk(char: str) -> bool:
    """True for a Chinese/Japanese character or full-width punctuation mark."""
    return bool(_CJK.fullmatch(char))


def is_page_number(line: str) -> bool:
    """True for a line that holds only a page number.

    >>> is_page_number("第 3 页 共 9 页"), is_page_number("- 12 -"), is_page_number("第3条")
    (True, True, False)
    """
    return bool(_PAGE_NUMBER.match(line.strip()))


def clean_page_text(text: str) -> str:
    """Return the cleaned text of one extracted PDF page (see the module docstring)."""
    lines = [_normalise_line(line) for line in _strip_controls(text).split("\n")]
    lines = _drop_page_numbers(lines)
    paragraphs = _join_lines(lines)
    # Joining can put a page number alone at the top again ("Page" + "3"), so look twice.
    return "\n".join(_drop_page_numbers(paragraphs.split("\n"))).strip("\n")


def clean_block_text(text: str) -> str:
    """Clean a block whose lines must stay lines (a markdown table, footnotes): control
    characters and spaces as in :func:`clean_page_text`, blank lines dropped, no joining.

    >>> clean_block_text("| a | b |\\n\\n| 1\\x00 | 2 |")
    '| a | b |\\n| 1 | 2 |'
    """
    return "\n".join(line for line in (_normalise_line(x) for x in _strip_controls(text).split("\n")) if line)


def _strip_controls(text: str) -> str:
    text = _LINE_BREAKS.sub("\n", text).replace("\t", " ")
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == "\n":
            out.append(ch)
        elif cat in ("Cc", "Cf", "Cs"):
            # Control, invisible-format (soft hyphen, zero-width space, BOM) and lone
            # surrogate code points carry nothing for retrieval; surrogates would also
            # break UTF-8 output.
            continue
        elif "\ufb00" <= ch <= "\ufb06":
            out.append(unicodedata.normalize("NFKC", ch))  # ﬁ -> fi
        else:
            out.append(ch)
    return "".join(out)


def _normalise_line(line: str) -> str:
    line = _SPACES.sub(" ", line).strip(" ")
    return _SPACE_BETWEEN_CJK.sub("", line)


def _drop_page_numbers(lines: list[str]) -> list[str]:
    """Drop page-number-only lines at the top and bottom of the page (blank lines skipped)."""
    start, end = 0, len(lines)
    while True:
        while start < end and not lines[start]:
            start += 1
        while end > start and not lines[end - 1]:
            end -= 1
        if start < end and _PAGE_NUMBER.match(lines[start]):
            start += 1
        elif start < end and _PAGE_NUMBER.match(lines[end - 1]):
            end -= 1
        else:
            return lines[start:end]


def _width(line: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in line)


def _join_lines(lines: list[str]) -> str:
    """Join the lines of each paragraph; returns text with "\\n" and "\\n\\n" breaks."""
    longest = max((_width(line) for line in lines), default=0)
    out: list[str] = []  # lines and the separators between them
    prev = ""  # the previous non-blank line, "" after a blank line
    for line in lines:
        if not line:
            if prev:
                out.append("\n\n")
            prev = ""
            continue
        if prev:
            sep = _separator(prev, line, longest)
            if sep == _REJOIN:
                out[-1] = out[-1][:-1]
                sep = ""
            out.append(sep)
        out.append(line)
        prev = line
    return re.sub(r"\n{3,}", "\n\n", "".join(out))


def _separator(prev: str, line: str, longest: int) -> str:
    """What replaces the line break between two non-blank lines of the same paragraph."""
    if _SENTENCE_END.search(prev):
        return "\n"
    if _width(prev) < SHORT_LINE_RATIO * longest:
        return "\n\n"
    last, first = prev[-1], line[0]
    if is_cjk(last) or is_cjk(first):
        return ""
    if _HYPHENATED.search(prev) and first.islower():
        return _REJOIN
    return " "
