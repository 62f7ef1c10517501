"""The unreadable-text check: what counts as garbage, and what must never count."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.documents.quality import CONTROL, MOJIBAKE, PRIVATE_USE, REPLACEMENT, TextQuality, assess_text

CHINESE = "光合作用是植物利用光能，把二氧化碳和水合成有机物并释放氧气的过程。"


@pytest.mark.parametrize(
    "text",
    [
        CHINESE,
        "Retrieval models learn from pairs of questions and passages.",
        "Größe, Maße und Übermaß; naïve café, señor, «très» 25°C ±2 ½ © ®",
        "第 3 页\n\t表 1：2024 年  数据\x0c下一页",  # whitespace controls are not garbage
        "数学公式 α + β = γ，∑ xᵢ ≤ ∞ 😀",
        "",
    ],
)
def test_real_text_is_readable(text: str) -> None:
    quality = assess_text(text)
    assert quality.n_bad == 0 and quality.share == 0.0, quality.counts


@pytest.mark.parametrize(
    "text, kind",
    [
        ("\ufffd" * 10, REPLACEMENT),
        ("\x00\x01\x02\x1b\x7f" * 2, CONTROL),
        ("".join(chr(0xE000 + i) for i in range(10)), PRIVATE_USE),
        (CHINESE.encode("utf-8").decode("cp1252", errors="ignore"), MOJIBAKE),
        ("Ã©tÃ©", MOJIBAKE),
    ],
)
def test_garbage_is_counted_by_kind(text: str, kind: str) -> None:
    quality = assess_text(text)
    assert kind in quality.counts
    assert quality.share > 0.5
    assert kind.split()[0] in quality.describe()


def test_counts_add_up_over_pages() -> None:
    total = TextQuality()
    total += assess_text(CHINESE)
    total += assess_text("\ufffd" * len(CHINESE.replace(" ", "")))
    assert total.n_chars == 2 * len(CHINESE)
    assert total.share == pytest.approx(0.5)
    assert total.describe().startswith("50% of ")


# Real text: runs of Chinese, ASCII and the punctuation and symbols of documents, with
# accented European words between them. Never garbage, in any order.
PLAIN = list(CHINESE) + list("abcXYZ019.,;:!?()[]-/%") + list("“”‘’《》、（）【】…—·°±×÷€£¥©®™")
WORDS = ["Größe", "naïve", "café", "señor", "Übermaß", "«très»", "25°C", "±2", "½", "Ångström", "déjà", "São",
         "André’s", "café—", "Zürich…", "×€"]
plain_runs = st.lists(st.sampled_from(PLAIN), min_size=6, max_size=20).map("".join)
READABLE = st.lists(st.tuples(plain_runs, st.sampled_from(WORDS), st.sampled_from([" ", "\n", "，"])), max_size=12).map(
    lambda parts: "".join(f"{run}{sep}{word}{sep}" for run, word, sep in parts)
)


@settings(max_examples=300, deadline=None)
@given(READABLE)
def test_readable_text_is_never_garbage(text: str) -> None:
    assert assess_text(text).counts == {}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_share_is_a_fraction_and_counts_are_consistent(text: str) -> None:
    quality = assess_text(text)
    assert 0 <= quality.n_bad <= quality.n_chars == sum(1 for c in text if not c.isspace())
    assert 0.0 <= quality.share <= 1.0


def test_a_no_break_space_inside_mojibake_is_not_counted_twice() -> None:
    # Found by hypothesis: "à\x80\xa0" counted 3 bad characters out of 2 that are not whitespace.
    quality = assess_text("à\x80\xa0")
    assert quality.n_chars == 2 and quality.n_bad <= 2
