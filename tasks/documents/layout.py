"""Page furniture, columns, tables and footnotes: what a careful reader leaves out of the running text.

Real files (court judgments, contracts, reports) carry text that is not part of what they
say: a running header with the court and the case number, a footer ``第 N 页 共 M 页``, a
diagonal watermark, line numbers in the margin. Left in, they end up inside chunks: the
question writer asks about them, and BM25 and the dense model rank chunks by them. This
module finds them the way a reader does, from where each piece of text sits on the page:

* **watermark**: text set diagonally (neither horizontal nor vertical);
* **page numbers**: a page-number line (``12``, ``- 12 -``, ``第 3 页 共 9 页``, ``Page 3 of 9``)
  at the top or bottom of the page;
* **running headers and footers**: text at the top or bottom of the page that repeats, at
  the same height and with only its digits changing, on at least two pages and at least half
  of them. A one-page document has nothing to repeat on: there, text at the top, above the
  running text and clearly smaller than it, is the header; its title (as large as the text
  or larger) stays;
* **margin line numbers**: numbers alone, left of where the page's lines start or right
  of where they end;
* **two columns**: when lines sit side by side, each half as wide as the page, the left
  column is read before the right one whatever order the file draws them in;
* **tables**: three or more short cells on one line, well apart, on two or more lines in a
  row, become a markdown table kept apart from the running text;
* **footnotes**: lines below the body in a smaller type than the body's, kept apart.

What is kept apart (tables, footnotes) is returned per page beside the running text, so the
chunker can give it chunks of its own instead of cutting a sentence in two with it.

Positions come from pypdf's text visitor (the text matrix of each piece of text), the one
library the reader already uses; ``bench/real_layout.py --speed`` compares it with others.
A page with neither columns nor a table keeps pypdf's own text, less the furniture, so
clean files read exactly as before.

Example (fragments as the visitor gives them; y grows upwards, points)::

    >>> pages = [[Fragment("Court of Appeal", 60, 800, 9), Fragment("\\n"),
    ...           Fragment(f"Body text of page {n} goes here.", 60, 700, 11), Fragment("\\n"),
    ...           Fragment(f"Page {n} of 2", 280, 30, 9)] for n in (1, 2)]
    >>> [p.text for p in lay_out_pages(pages, 595, 842)]
    ['\\nBody text of page 1 goes here.\\n', '\\nBody text of page 2 goes here.\\n']
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

from tasks.documents.cleaning import is_page_number

__all__ = ["Fragment", "PageLayout", "lay_out_pages", "page_fragments"]

# The top and bottom share of the page where running headers, footers and page numbers live.
TOP_BAND, BOTTOM_BAND = 0.12, 0.10
# Footnotes sit in the lower part of the page.
FOOTNOTE_BAND = 0.25
_DIGITS = re.compile(r"\d+")
_LINE_NUMBER = re.compile(r"^\d{1,4}$")


@dataclass(frozen=True)
class Fragment:
    """A piece of text as the PDF draws it. Glue (``"\\n"``, spaces) has no position."""

    text: str
    x: float = math.nan  # where it starts, in points from the left
    y: float = math.nan  # its baseline, in points from the bottom
    size: float = 0.0  # its type size in points
    diagonal: bool = False  # set at an angle: a watermark

    @property
    def placed(self) -> bool:
        return bool(self.text.strip()) and not math.isnan(self.x)

    @cached_property
    def width(self) -> float:
        """An estimate (the visitor gives no widths): CJK glyphs are square, Latin about half."""
        return sum(self.size if unicodedata.east_asian_width(c) in "WF" else 0.55 * self.size for c in self.text)


@dataclass
class PageLayout:
    """One page's running text, and what was kept apart from it (markdown tables, footnotes)."""

    text: str
    asides: list[str] = field(default_factory=list)
    removed: Counter = field(default_factory=Counter)  # furniture kind -> fragments removed


def page_fragments(page) -> tuple[str, list[Fragment]]:
    """pypdf's text of one page and the fragments it is made of, with their positions."""
    fragments: list[Fragment] = []

    def visit(text: str, cm: Sequence[float], tm: Sequence[float], _font: object, size: float) -> None:
        if not text:
            return
        a, b, c, d, e, f = _multiply(tm, cm)
        if not text.strip() or (tm[4] == 0 and tm[5] == 0 and cm[4] == 0 and cm[5] == 0):
            fragments.append(Fragment(text))  # glue: pypdf's line breaks and spaces
            return
        scale = math.hypot(c, d) or 1.0
        fragments.append(Fragment(text, e, f, size * scale, diagonal=abs(b) > 0.05 * abs(a) and abs(a) > 0.05 * abs(b)))

    text = page.extract_text(visitor_text=visit) or ""
    return text, fragments


def _multiply(m: Sequence[float], n: Sequence[float]) -> tuple[float, ...]:
    a1, b1, c1, d1, e1, f1 = m
    a2, b2, c2, d2, e2, f2 = n
    return (a1 * a2 + b1 * c2, a1 * b2 + b1 * d2, c1 * a2 + d1 * c2, c1 * b2 + d1 * d2,
            e1 * a2 + f1 * c2 + e2, e1 * b2 + f1 * d2 + f2)


def lay_out_pages(pages: Sequence[Sequence[Fragment]], width: float, height: float) -> list[PageLayout]:
    """Every page's running text without furniture, in reading order, with tables and
    footnotes apart. ``width`` and ``height``: the page size in points (the first page's)."""
    running = _running_lines(pages, width, height)
    if len(pages) == 1:
        running |= {_key(f) for f in _small_top_lines(pages[0], height)}
    bodies = [_body(fragments, height, running) for fragments in pages]
    edges = [_edge_cells(body) for _, body, _ in bodies]
    layouts: list[PageLayout] = []
    header: list[str] | None = None  # the header row of a table that ran to the foot of the page before
    for i, page in enumerate(bodies):
        # A row alone at the top (foot) of a page is a table's when the page before (after)
        # has a row of as many cells at its foot (top): a table cut by the page break.
        top = edges[i][0] if i > 0 and edges[i][0] == edges[i - 1][1] else None
        bottom = edges[i][1] if i + 1 < len(pages) and edges[i][1] == edges[i + 1][0] else None
        layout, header = _lay_out(*page, width, height, top, bottom, header if top else None)
        layouts.append(layout)
    return layouts


def _key(fragment: Fragment) -> tuple[str, int]:
    # Only the digits change from page to page: 第 3 页, the page's own number in a header.
    return _DIGITS.sub("#", "".join(fragment.text.split())), round(fragment.y / 3)


def _in_band(fragment: Fragment, height: float) -> bool:
    return fragment.y > (1 - TOP_BAND) * height or fragment.y < BOTTOM_BAND * height


def _running_lines(pages: Sequence[Sequence[Fragment]], width: float, height: float) -> set[tuple[str, int]]:
    """Header and footer texts: short, at the top or bottom of at least two pages and half of them.

    Short: a page that starts with a full line of running text is not headed by it, even
    where every page says the same.
    """
    if len(pages) < 2:
        return set()
    counts: Counter = Counter()
    for page in pages:
        counts.update({_key(f) for f in page if f.placed and _in_band(f, height) and f.width < 0.5 * width})
    return {k for k, n in counts.items() if n >= 2 and 2 * n >= len(pages)}


def _small_top_lines(fragments: Sequence[Fragment], height: float) -> list[Fragment]:
    """On a page with no other page to repeat on: text at the top, above all running text and
    clearly smaller than it, is a running header (a title is as large as the text or larger)."""
    placed = [f for f in fragments if f.placed and not f.diagonal]
    size = _body_size(placed)
    body = [f for f in placed if f.size >= size - 0.5]
    if not body:
        return []
    top = max(f.y for f in body)
    return [f for f in placed if f.y > top and f.size < size - 1 and f.y > (1 - TOP_BAND) * height]


def _furniture(f: Fragment, height: float, running: set[tuple[str, int]], alone: bool) -> str | None:
    if f.diagonal:
        return "watermark"
    # A page number has its line to itself; a number beside other text is a table's cell.
    if alone and _in_band(f, height) and is_page_number(" ".join(f.text.split())):
        return "page number"
    if _key(f) in running and _in_band(f, height):
        return "running header or footer"
    return None


def _body(fragments: Sequence[Fragment], height: float, running: set) -> tuple[list[Fragment], list[Fragment], Counter]:
    """The page less its furniture: every fragment kept (glue too), the placed ones, and what went."""
    removed: Counter = Counter()
    keep: list[Fragment] = []
    per_line = Counter(round(f.y / 2) for f in fragments if f.placed and not f.diagonal)
    for f in fragments:
        kind = _furniture(f, height, running, per_line[round(f.y / 2)] == 1) if f.placed else None
        if kind:
            removed[kind] += 1
        else:
            keep.append(f)
    body = [f for f in keep if f.placed]
    margin = {id(f) for f in _margin_numbers(body)}
    if margin:
        removed["margin line number"] += len(margin)
        keep = [f for f in keep if id(f) not in margin]
        body = [f for f in keep if f.placed]
    return keep, body, removed


def _lay_out(keep: list[Fragment], body: list[Fragment], removed: Counter, width: float, height: float,
             top: int | None, bottom: int | None, header: list[str] | None) -> tuple[PageLayout, list[str] | None]:
    """The page (what :func:`_body` kept of it) laid out, and the header row of a table that
    runs on to the next page.

    ``top``/``bottom``: the cells of a row alone at the page's top or foot that is part of a
    table cut by the page break; ``header``: that table's header row, repeated over its rest."""
    columns = _columns(body, width)
    tables = _tables(body, columns, top, bottom)
    in_table = {id(f) for rows in tables for row in rows for f in row}
    # A table in a smaller type at the foot of the page is not a footnote.
    notes = _footnotes([f for f in body if id(f) not in in_table], height,
                       min((f.y for rows in tables for row in rows for f in row), default=math.inf))
    cells = [[[f.text.strip() for f in row] for row in rows] for rows in tables]
    lines = _lines(body) if tables and (bottom or header) else []
    runs_on = bool(bottom and tables and tables[-1][-1] == lines[-1])
    if header and tables and tables[0][0] == lines[0] and cells[0][0] != header:
        cells[0].insert(0, header)
    asides = [_markdown(rows) for rows in cells]
    if notes:
        removed["footnote"] += len(notes)
        asides.append("\n".join(f.text.strip() for f in sorted(notes, key=lambda f: (-f.y, f.x))))
        noted = {id(f) for f in notes}
        keep = [f for f in keep if id(f) not in noted]
        body = [f for f in body if id(f) not in noted]
    carried = cells[-1][0] if runs_on else None
    if not columns and not tables:
        return PageLayout("".join(f.text for f in keep), asides, removed), carried
    # Rebuilt from positions: pypdf's order follows the file's, not the reader's.
    removed["table cell"] += len(in_table)
    text = _text_in_reading_order([f for f in body if id(f) not in in_table], columns)
    return PageLayout(text, asides, removed), carried


def _margin_numbers(body: Sequence[Fragment]) -> list[Fragment]:
    """Numbers alone, left of where the page's lines start or right of where they end."""
    lines = [f for f in body if len(f.text.strip()) >= 4 and not _LINE_NUMBER.match(f.text.strip())]
    if not lines:
        return []
    left = min(f.x for f in lines)
    right = max(f.x + f.width for f in lines)
    # Clear of the lines by a space at least: a number drawn as the last word of a line is text.
    return [f for f in body if _LINE_NUMBER.match(f.text.strip())
            and (f.x + f.width <= left - 0.3 * f.size or f.x >= right + 0.5 * f.size)]


def _body_size(body: Sequence[Fragment]) -> float:
    sizes: Counter = Counter()
    for f in body:
        sizes[round(f.size, 1)] += len(f.text)
    return sizes.most_common(1)[0][0] if sizes else 0.0


def _footnotes(body: Sequence[Fragment], height: float, table_bottom: float) -> list[Fragment]:
    """The lines below the lowest body-size line and any table, in a smaller type, in the page's lower part."""
    size = _body_size(body)
    main = [f for f in body if f.size >= size - 0.5]
    if not main:
        return []
    lowest = min(min(f.y for f in main), table_bottom)
    return [f for f in body if f.y < lowest and f.size < size - 0.5 and f.y < FOOTNOTE_BAND * height]


def _columns(body: Sequence[Fragment], width: float) -> float | None:
    """The x where a second column starts: at least three long lines start there, right of the
    page's middle part, and no long line runs across it beside them."""
    long = [f for f in body if f.width > 0.3 * width]
    if len(long) < 6:
        return None
    left = min(f.x for f in long)
    right = max(f.x + f.width for f in long)
    starts = Counter(round(f.x / 2) for f in long if f.x > left + 0.35 * (right - left))
    if not starts:
        return None
    key, n = starts.most_common(1)[0]
    if n < 3:
        return None
    x = min(f.x for f in long if round(f.x / 2) == key)
    column = [f for f in long if round(f.x / 2) == key]
    low, high = min(f.y for f in column), max(f.y for f in column)
    across = [f for f in long if f.x < x - 5 and f.x + f.width > x + 5 and low <= f.y <= high]
    return x - 1 if len(across) <= n // 10 else None


def _lines(fragments: Sequence[Fragment]) -> list[list[Fragment]]:
    """The fragments by line, top to bottom, each line left to right."""
    by_y: dict[int, list[Fragment]] = defaultdict(list)
    for f in fragments:
        by_y[round(f.y)].append(f)
    return [sorted(by_y[y], key=lambda f: f.x) for y in sorted(by_y, reverse=True)]


def _is_row(line: Sequence[Fragment]) -> bool:
    """Three or more short cells that stand apart (the words of a line drawn one by one do not)."""
    return len(line) >= 3 and all(len(f.text.strip()) <= 20 for f in line) and all(
        b.x - (a.x + a.width) >= 1.5 * a.size for a, b in zip(line, line[1:]))


def _edge_cells(body: Sequence[Fragment]) -> tuple[int | None, int | None]:
    """How many cells the page's top and bottom lines have, where they are table rows."""
    if not body:
        return None, None
    ys = [round(f.y) for f in body]
    first, last = ([f for f, y in zip(body, ys) if y == edge] for edge in (max(ys), min(ys)))
    first.sort(key=lambda f: f.x)
    last.sort(key=lambda f: f.x)
    return (len(first) if _is_row(first) else None), (len(last) if _is_row(last) else None)


def _tables(body: Sequence[Fragment], columns: float | None, top: int | None = None,
            bottom: int | None = None) -> list[list[list[Fragment]]]:
    """Runs of two or more lines of three or more short cells, per column; a single such line
    at the page's top (foot) with ``top`` (``bottom``) cells is the rest of a table cut by the
    page break."""
    tables: list[list[list[Fragment]]] = []
    sides = [[f for f in body if f.x < columns], [f for f in body if f.x >= columns]] if columns else [list(body)]
    lines = _lines(body) if top or bottom else []

    def close(run: list[list[Fragment]]) -> None:
        at_edge = lines and run and ((run[0] == lines[0] and len(run[0]) == top)
                                     or (run[0] == lines[-1] and len(run[0]) == bottom))
        if len(run) >= 2 or at_edge:
            tables.append(run)

    for side in sides:
        run: list[list[Fragment]] = []
        for row in _lines(side):
            is_row = _is_row(row)
            if is_row and run and min(g.y for g in run[-1]) - row[0].y > 3 * max(f.size for f in row):
                close(run)  # too far below the last row: another table
                run = []
            if is_row:
                run.append(row)
                continue
            close(run)
            run = []
        close(run)
    return tables


def _markdown(rows: list[list[str]]) -> str:
    n = max(len(r) for r in rows)
    cells = [[c.replace("|", "\\|") for c in r] + [""] * (n - len(r)) for r in rows]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * n]
    lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
    return "\n".join(lines)


def _text_in_reading_order(body: Sequence[Fragment], columns: float | None) -> str:
    """Lines top to bottom; with columns, the left column's before the right one's."""
    def side(f: Fragment) -> int:
        return 0 if columns is None or f.x < columns else 1

    ordered = sorted(body, key=lambda f: (side(f), -round(f.y), f.x))
    out: list[str] = []
    last: tuple[int, int] | None = None
    for f in ordered:
        here = (side(f), round(f.y))
        if last is not None:
            out.append(" " if here == last else "\n")
        out.append(f.text.strip())
        last = here
    return "\n" + "".join(out) + "\n" if out else ""
