"""Split documents into chunks with LlamaIndex's SentenceSplitter.

A document's running text is split as one text: a chunk may cross a page break, so a
sentence the break cuts in two stays whole, and each chunk records the pages it lies on
(``page`` to ``last_page``). Tables and footnotes the reader kept apart from the running text
(:attr:`~tasks.core.records.Page.asides`) are chunked on their own, one page at a time, and
so is a reference list at the end of the text (after a heading 参考文献 or References).

Sentences end where Chinese and English ones do (:func:`sentences`), and a chunk's
overlap with the one before is made of whole sentences: an answer cut by a chunk border is
whole in one of the two more often.

A chunk's id is derived from its document and its text, so the same PDF gives the
same ids on every run and the per-chunk generation cache lines up across runs.

Example::

    >>> page = Page(doc_id="d1", source="a.pdf", page=1, text="尤金袋鼠分布在澳洲南部。" * 40)
    >>> documents = [Document(doc_id="d1", source="a.pdf", pages=[page])]
    >>> chunks = chunk_documents(documents, chunk_size=128, chunk_overlap=16)
    >>> len(chunks), chunks[0].source, chunks[0].page, chunks[0].last_page
    (7, 'a.pdf', 1, 1)
    >>> chunks[0].chunk_id == chunk_documents(documents, chunk_size=128, chunk_overlap=16)[0].chunk_id
    True
"""

from __future__ import annotations

import re
from bisect import bisect_right

from llama_index.core import Document as LIDocument
from llama_index.core.node_parser import SentenceSplitter

from tasks.chunks.sections import document_sections, is_heading, section_runs
from tasks.core.fileio import sha256_text
from tasks.core.records import Chunk, Document, Page

# Metadata stays out of the text the splitter measures and embeds: it is for
# provenance, and counting it would shrink every chunk.
_META_KEYS = ["doc_id", "source", "page"]
_CJK = re.compile(r"[\u2e80-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff01-\uff9f\U00020000-\U0003134f]")
# A paragraph's first line fills a column (20 CJK characters or more); a heading is shorter.
_FULL_LINE = 20
# After 。！？!? and the closing quotes and brackets that follow them; before the space after
# an English sentence's full stop; at line breaks. Not at the "." of a list number ("1.因").
_SENTENCE_BREAK = re.compile(r"(?<=[。！？!?])[’”」』）)\]】》〉\"']*|(?<=[.!?])(?=\s)|\n+")
# A reference list's heading, on a line of its own.
_REFERENCES_HEADING = re.compile(r"^[ \t]*(?:参\s*考\s*文\s*献|引用文献|references|bibliography|works cited)[ \t]*[:：]?[ \t]*$",
                                 re.IGNORECASE | re.MULTILINE)
# The layout writes a table as markdown: a header row, then its |---| rule.
_MARKDOWN_RULE = re.compile(r"^\|(?:-{3,}\|)+$", re.MULTILINE)
_SENTENCE_END = re.compile(r"[。！？；：…!?;:.．]['\"’”」』）)\]】》〉]*$")


def sentences(text: str) -> list[str]:
    """``text`` cut into sentences, every character kept: the splitter's unit of overlap.

    LlamaIndex's default sentence tokenizer (NLTK's punkt) is trained on English: in Chinese
    it ends a sentence at a list number's "." and never at "。", so a whole paragraph is one
    "sentence" too long to be carried over as overlap, and a chunk may end at "1.".

    >>> sentences("经审理查明，1.被告于2015年签订合同。原告“已付款。”次日\\n交货！OK. Done")
    ['经审理查明，1.被告于2015年签订合同。', '原告“已付款。”', '次日\\n', '交货！', 'OK.', ' Done']
    """
    pieces, start = [], 0
    for m in _SENTENCE_BREAK.finditer(text):
        if m.end() > start:
            pieces.append(text[start:m.end()])
            start = m.end()
    if start < len(text):
        pieces.append(text[start:])
    return pieces


def chunk_id_for(doc_id: str, text: str, occurrence: int = 0) -> str:
    """Stable id of a chunk; ``occurrence`` separates identical texts in one document."""
    return sha256_text(f"{doc_id}\n{occurrence}\n{text}")[:32]


def page_separator(before: str, after: str) -> str:
    """What joins the running text of one page to the next one's.

    A page that ends mid-sentence goes on at the top of the next (joined as the cleaner joins
    wrapped lines: no space between CJK characters); a page that ends with a sentence or a
    heading ends a line or a paragraph.

    >>> page_separator("本院确认以下事实：原告与被告于2015年10月", "17日签订合同。"), page_separator("签订合同。", "次日")
    ('', '\\n')
    >>> page_separator("本院认为", "被告应当赔偿。"), page_separator("The court found that the contract was", "signed")
    ('\\n\\n', ' ')
    """
    before, after = before.rstrip(), after.lstrip()
    if not before or not after:
        return "\n"
    last_line = before.rsplit("\n", 1)[-1]
    if _SENTENCE_END.search(before):
        return "\n"
    if is_heading(last_line) and len(last_line) < _FULL_LINE:
        return "\n\n"
    if _CJK.match(before[-1]) or _CJK.match(after[0]):
        return ""
    return " "


def chunk_documents(
    documents: list[Document], chunk_size: int, chunk_overlap: int, by_section: bool = False
) -> list[Chunk]:
    """Chunk every document's running text, then its tables and footnotes, in document order.

    With ``by_section``, the text is first cut at its headings (:mod:`tasks.chunks.sections`):
    no chunk runs across a heading, and each chunk starts with its section's heading on a
    line of its own; a section's chunks cross page breaks as the running text's do.
    """
    splitter = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap, chunking_tokenizer_fn=sentences)
    chunks: list[Chunk] = []
    seen: dict[tuple[str, str], int] = {}

    def add(doc: Document, text: str, first: int, last: int, kind: str = "text") -> None:
        text = text.strip()
        if not text:
            return
        key = (doc.doc_id, text)
        occurrence = seen.get(key, 0)
        seen[key] = occurrence + 1
        chunks.append(Chunk(chunk_id_for(doc.doc_id, text, occurrence), doc.doc_id, doc.source, first, text, last,
                            kind))

    for doc in documents:
        pages = sorted(doc.pages, key=lambda p: p.page)
        if by_section:
            for run in section_runs(document_sections(doc)):
                text, starts = _running_text([s.text for s in run])
                heading, numbers = run[0].heading, [s.page for s in run]
                for node in splitter.get_nodes_from_documents([_li_document(pages[0], text)]):
                    first, last = _page_range(node, text, starts, numbers)
                    add(doc, f"{heading}\n{node.get_content().strip()}" if heading else node.get_content(), first, last)
        else:
            text, starts = _running_text([p.text for p in pages])
            numbers = [p.page for p in pages]
            for (begin, end), kind in zip(_body_and_references(text), ("text", "references")):
                part = text[begin:end]
                if not part.strip():
                    continue
                shifted = [s - begin for s in starts]
                for node in splitter.get_nodes_from_documents([_li_document(pages[0], part)]):
                    first, last = _page_range(node, part, shifted, numbers)
                    add(doc, node.get_content(), first, last, kind)
        for page in pages:
            for aside in page.asides:
                kind = "table" if _MARKDOWN_RULE.search(aside) else "footnote"
                for node in splitter.get_nodes_from_documents([_li_document(page, aside)]):
                    add(doc, node.get_content(), page.page, page.page, kind)
    return chunks


def _li_document(page: Page, text: str) -> LIDocument:
    return LIDocument(
        text=text,
        metadata={"doc_id": page.doc_id, "source": page.source, "page": page.page},
        excluded_embed_metadata_keys=_META_KEYS,
        excluded_llm_metadata_keys=_META_KEYS,
    )


def _body_and_references(text: str) -> list[tuple[int, int]]:
    """Where the body and the reference list of a running text lie: ``[(0, len)]``, or two
    spans cut at the last line that is a reference-list heading alone (参考文献, References)
    in the second half of the text. Chunked apart, no chunk mixes the two.

    >>> text = "正文第一句。" * 20 + "\\n参考文献\\n[1] 张三. 论文. 2019.\\n"
    >>> [text[b:e][:4] for b, e in _body_and_references(text)]
    ['正文第一', '参考文献']
    """
    heading = None
    for m in _REFERENCES_HEADING.finditer(text):
        heading = m
    if heading is None or heading.start() < len(text) / 2:
        return [(0, len(text))]
    return [(0, heading.start()), (heading.start(), len(text))]


def _running_text(pages: list[str]) -> tuple[str, list[int]]:
    """The texts of pages as one text, and where each page starts in it."""
    text, starts = "", []
    for page_text in pages:
        if not page_text.strip():
            starts.append(len(text))
            continue
        if text:
            text += page_separator(text, page_text)
        starts.append(len(text))
        text += page_text
    return text, starts


def _page_range(node, text: str, starts: list[int], numbers: list[int]) -> tuple[int, int]:
    """The first and last page numbers of the text a node holds (``starts``: where each page begins)."""
    begin, end = node.start_char_idx, node.end_char_idx
    if begin is None or end is None:  # the splitter could not place it: search for it
        begin = max(text.find(node.get_content()), 0)
        end = begin + len(node.get_content())
    first = numbers[max(bisect_right(starts, begin) - 1, 0)]
    last = numbers[max(bisect_right(starts, max(end - 1, begin)) - 1, 0)]
    return first, last
