"""Tests of clean_page_text: worked examples, then properties checked on generated text."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tasks.documents.cleaning import clean_page_text, is_cjk

# --- examples ----------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, cleaned",
    [
        # A Chinese sentence wrapped at the margin is joined with no space.
        ("光合作用是植物利用光能\n合成有机物的过程。", "光合作用是植物利用光能合成有机物的过程。"),
        # Between CJK and Latin text, too.
        ("由韩国Nexon开发，这是\nNexon时隔6年再次授予。", "由韩国Nexon开发，这是Nexon时隔6年再次授予。"),
        ("由韩国的开发商\nNexon开发与发行。", "由韩国的开发商Nexon开发与发行。"),
        # A break after sentence-final punctuation stays.
        ("第一句话结束了。\n第二句话结束了。", "第一句话结束了。\n第二句话结束了。"),
        ("他说：“好的。”\n然后走了出去。", "他说：“好的。”\n然后走了出去。"),
        ("真的吗？\n真的！", "真的吗？\n真的！"),
        # Paragraph breaks stay, several blank lines become one.
        ("第一段。\n\n\n\n第二段。", "第一段。\n\n第二段。"),
        # Latin text is joined with a space, a hyphenated word is rejoined.
        ("A sentence that\nwrapped here.", "A sentence that wrapped here."),
        ("this line ends with a hyphen- \nated word and goes on.", "this line ends with a hyphenated word and goes on."),
        # Control characters go, newlines stay.
        ("abc\x00def\x07 ghi.\r\nnext line\x0cends.", "abcdef ghi.\nnext line ends."),
        ("零宽\u200b空格\ufeff。", "零宽空格。"),
        # Whitespace: runs collapse, spaces between CJK characters go, Latin spacing stays.
        ("中 文  文\u3000本 with  two\tspaces.", "中文文本 with two spaces."),
        ("\u3000\u3000段落缩进。", "段落缩进。"),
        # Ligatures are spelt out.
        ("ﬁnd the ﬂow.", "find the flow."),
        # Page numbers at the top or bottom of the page go.
        ("12\n正文内容。\n- 12 -", "正文内容。"),
        ("正文内容。\n\n第 3 页 共 9 页", "正文内容。"),
        ("Page 3 of 9\nBody text.\n3/9", "Body text."),
        # ...but a number inside the page is content.
        ("上一行。\n2019\n下一行。", "上一行。\n2019\n\n下一行。"),
        ("", ""),
        ("\x00\n \n\t", ""),
        ("7", ""),
    ],
)
def test_examples(raw: str, cleaned: str) -> None:
    assert clean_page_text(raw) == cleaned


def test_short_line_without_punctuation_is_a_heading() -> None:
    body = "基于《跑跑卡丁车》与《泡泡堂》上所开发的游戏，由韩国Nexon开发与发行。中国大陆由盛大游戏运营，这"
    raw = f"泡泡战士\n{body}\n是Nexon时隔6年再次授予盛大网络其游戏运营权。\n1"
    assert clean_page_text(raw) == f"泡泡战士\n\n{body}是Nexon时隔6年再次授予盛大网络其游戏运营权。"


def test_is_cjk() -> None:
    assert all(is_cjk(c) for c in "中文，。！？《》「」ｱ𠀀")
    assert not any(is_cjk(c) for c in "aZ1 ,.\u3000é—“")


# --- properties ------------------------------------------------------------------

# Text that looks like extracted PDF pages: CJK and Latin runs, punctuation of both,
# digits (page numbers), every kind of whitespace and line break, and control characters.
_ALPHABET = st.sampled_from(
    list("中文字测试数据页第共")
    + list("abcXYZ")
    + list("0123456789")
    + list("。！？；：…“”，、《》（）")
    + list(".!?;:,-/()~")
    + [" ", "\t", "\u3000", "\xa0", "\n", "\n", "\n", "\r\n", "\r", "\x0c", "\u2028"]
    + ["\x00", "\x07", "\x1f", "\u200b", "\ufeff", "\ud800", "ﬁ"]
)
page_texts = st.lists(_ALPHABET, max_size=120).map("".join) | st.text(max_size=80)

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b\ufeff\ud800-\udfff]")


@settings(max_examples=600, deadline=None)
@given(page_texts)
@example("Page\n3\nxy")
@example("an exam-\nple")
@example("中\n \n文")
def test_idempotent(text: str) -> None:
    once = clean_page_text(text)
    assert clean_page_text(once) == once


@settings(max_examples=300, deadline=None)
@given(page_texts)
def test_no_control_characters_and_tidy_whitespace(text: str) -> None:
    out = clean_page_text(text)
    assert not _CONTROL.search(out)
    assert out == out.strip()
    assert "\n\n\n" not in out
    for line in out.split("\n"):
        assert line == line.strip()
        assert "  " not in line
        assert "\t" not in line and "\u3000" not in line


@settings(max_examples=300, deadline=None)
@given(page_texts)
def test_cjk_characters_are_kept_in_order(text: str) -> None:
    def ideographs(s: str) -> str:
        return "".join(c for c in s if "\u4e00" <= c <= "\u9fff")

    # Page-number lines may go ("第 3 页"), so compare the text without them.
    assert ideographs(clean_page_text(text)) in ideographs(text)
    no_page_words = text.replace("页", "").replace("第", "").replace("共", "")
    assert ideographs(clean_page_text(no_page_words)) == ideographs(no_page_words)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet="中文字测试数据", min_size=1, max_size=30), min_size=1, max_size=8))
def test_wrapped_chinese_sentence_is_joined(pieces: list[str]) -> None:
    # One sentence wrapped across lines of equal width comes back as one line.
    line = "".join(pieces) + "。"
    width = 10
    wrapped = "\n".join(line[i : i + width] for i in range(0, len(line), width))
    assert clean_page_text(wrapped) == line


@settings(max_examples=200, deadline=None)
@given(st.lists(st.from_regex(r"[a-z]{1,8}", fullmatch=True), min_size=1, max_size=30))
def test_wrapped_latin_sentence_keeps_word_boundaries(words: list[str]) -> None:
    sentence = " ".join(words) + "."
    lines, line = [], ""
    for w in sentence.split(" "):
        if line and len(line) + 1 + len(w) > 30:
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}" if line else w
    lines.append(line)
    out = clean_page_text("\n".join(lines))
    # Short last lines may become paragraph breaks; words are never glued or split.
    assert out.split() == sentence.split()
