"""A cheap check of whether text extracted from a PDF is readable at all.

A PDF whose fonts carry a broken or missing ``ToUnicode`` map still *has* a text
layer, so it passes the "no text" check, but what comes out is replacement
characters (U+FFFD), NUL bytes, private-use code points, or UTF-8 read as
Latin-1 (``å…‰åˆ`` for 光合). Questions about such chunks teach the embedding
model nothing. :func:`assess_text` counts those characters in one pass; the
document reader adds the counts of every page and compares the share with
``Settings.garbage_threshold``.

Example::

    >>> q = assess_text("光合作用\\ufffd\\ufffd\\x00")
    >>> q.n_chars, q.n_bad, q.counts
    (7, 3, {'replacement characters': 2, 'control characters': 1})
    >>> round(q.share, 2), q.describe()
    (0.43, '43% of 7 characters are unreadable (replacement characters 2, control characters 1)')
    >>> assess_text("Größe und Maße").n_bad  # real accents are not mojibake
    0
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

__all__ = ["TextQuality", "assess_text"]

REPLACEMENT = "replacement characters"
CONTROL = "control characters"
PRIVATE_USE = "private-use characters"
UNASSIGNED = "unassigned code points"
MOJIBAKE = "mojibake (UTF-8 read as Latin-1)"

# Whitespace controls that extractors emit legitimately.
_ALLOWED_CONTROLS = frozenset("\t\n\r\x0b\x0c")
# Characters that UTF-8 bytes 0x80-0xFF turn into when decoded as Latin-1 or cp1252.
_CP1252_EXTRA = "€‚ƒ„…†‡ˆ‰Š‹ŒŽ‘’“”•–—˜™š›œžŸ"
# UTF-8 bytes through the wrong code page: a 3-byte character (every CJK one) becomes a
# lead character à..ï and two continuation characters (U+0080..U+00BF, or cp1252's
# "€…—“" for 0x80..0x9F): "ä¸­" for 中. A 2-byte one becomes Â..ß and a Latin-1
# continuation: "Ã©" for é. Real accented words have neither ("Größe", "André’s").
_MOJIBAKE_3 = f"[\u00e0-\u00ef][\u0080-\u00bf{_CP1252_EXTRA}]{{2}}"
_MOJIBAKE_2 = "[\u00c2-\u00d6\u00d8-\u00df][\u0080-\u00bf]"  # not "×" (U+00D7): "3×½" is real
_MOJIBAKE = re.compile(f"{_MOJIBAKE_3}|{_MOJIBAKE_2}")
# When a tool also dropped the invisible bytes 0x80..0x9F, few sequences stay whole, but
# the Latin-1 letters remain and crowd out everything else: no language writes 40% of
# its letters as À..ÿ.
_LATIN1_LETTER = re.compile("[\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u00ff]")  # À..ÿ without × and ÷
MAX_LATIN1_LETTER_SHARE = 0.4
MIN_LATIN1_LETTERS = 10  # a short name such as "Übermaß" proves nothing


@dataclass
class TextQuality:
    """Counts of unreadable characters in some text; add pages together with ``+=``."""

    n_chars: int = 0  # characters other than whitespace
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def n_bad(self) -> int:
        return sum(self.counts.values())

    @property
    def share(self) -> float:
        """Unreadable characters as a share of all non-whitespace characters (0 for no text)."""
        return self.n_bad / self.n_chars if self.n_chars else 0.0

    def __iadd__(self, other: "TextQuality") -> "TextQuality":
        self.n_chars += other.n_chars
        self.counts = dict(Counter(self.counts) + Counter(other.counts))
        return self

    def describe(self) -> str:
        """One phrase for a log line or a skip reason."""
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.counts.items(), key=lambda kv: -kv[1]))
        return f"{self.share:.0%} of {self.n_chars} characters are unreadable" + (f" ({kinds})" if kinds else "")


def assess_text(text: str) -> TextQuality:
    """Count the characters of ``text`` that no reader could make sense of.

    Counted: U+FFFD, control characters other than whitespace (NUL…), private-use
    and unassigned code points, lone surrogates, and UTF-8 byte sequences shown as
    Latin-1 or cp1252 characters (mojibake).
    """
    counts: Counter[str] = Counter()
    n_chars = 0
    for ch in text:
        if ch.isspace():
            continue
        n_chars += 1
        if ch == "\ufffd":
            counts[REPLACEMENT] += 1
            continue
        cat = unicodedata.category(ch)
        if cat == "Cc" and ch not in _ALLOWED_CONTROLS:
            counts[CONTROL] += 1
        elif cat == "Co":
            counts[PRIVATE_USE] += 1
        elif cat in ("Cn", "Cs"):
            counts[UNASSIGNED] += 1
    # C1 controls (U+0080-U+009F) inside a sequence were counted as control characters already,
    # and a no-break space (U+00A0, a UTF-8 continuation byte read as Latin-1) is not counted at all.
    n_mojibake = sum(sum(1 for c in seq if not ("\x80" <= c <= "\x9f" or c.isspace()))
                     for seq in _MOJIBAKE.findall(text))
    n_latin1 = len(_LATIN1_LETTER.findall(text))
    if n_latin1 >= MIN_LATIN1_LETTERS and n_latin1 > MAX_LATIN1_LETTER_SHARE * sum(1 for c in text if c.isalpha()):
        n_mojibake = max(n_mojibake, n_latin1)
    if n_mojibake:
        counts[MOJIBAKE] += n_mojibake
    return TextQuality(n_chars=n_chars, counts=dict(counts))
