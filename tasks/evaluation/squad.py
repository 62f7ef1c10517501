"""Human questions of a SQuAD-format file, as a retrieval test set over pipeline chunks.

SQuAD-format files (CMRC 2018, CJRC, …) hold passages and the questions people wrote
about them, each with its answer span marked by text and character offset. This module
reads such a file into :class:`Passage` records, turns the passages into pipeline
documents (one page per paragraph, the text untouched so the offsets still hold), and
maps each question to the chunk(s) that hold its whole answer span: a
:class:`~tasks.core.qa_dataset.QADataset` whose relevant chunks are found by the answer,
not by an LLM. Questions whose answer is not in the text, or crosses a chunk border, are
dropped and counted.

The benchmarks in ``bench/`` and the guard set (``data/make_guard_set.py``) are built
with it.

Example::

    >>> from tasks.chunks.chunking import chunk_documents
    >>> passages = load_squad(Path("../shared/data/cmrc2018_trial.json"))[:8]
    >>> chunks = chunk_documents(build_documents(passages), 300, 30)
    >>> bench = human_benchmark(passages, chunks)       # bench.dataset.save(path) writes it
    >>> bench.n_questions, len(bench.dataset.queries), len(bench.dataset.corpus) > len(passages)
    (33, 33, True)
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tasks.core.fileio import sha256_text
from tasks.core.qa_dataset import QADataset
from tasks.core.records import Chunk, Document, Page

log = logging.getLogger(__name__)

DROP_NOT_IN_PASSAGE = "answer text not in its passage"
DROP_NO_CHUNK = "answer span inside no single chunk"


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # answer_start as given: a character offset into the paragraph (sometimes off by one)


@dataclass(frozen=True)
class SquadQuestion:
    qid: str
    question: str
    page: int  # 1-based paragraph of the entry the answers point into (= the Page of the document)
    answers: tuple[Answer, ...]


@dataclass(frozen=True)
class Passage:
    """One SQuAD entry: its paragraphs (CMRC trial: always one) and its questions."""

    entry_id: str
    title: str
    paragraphs: tuple[str, ...]
    questions: tuple[SquadQuestion, ...]

    @property
    def doc_id(self) -> str:
        # sha256 of the passage text, like the pipeline's content-hash ids (with one
        # paragraph, exactly sha256 of the context).
        return sha256_text("\n".join(self.paragraphs))


def load_squad(path: Path) -> list[Passage]:
    """Read a SQuAD-format file into passages, in file order.

    Entries with the same passage text are one passage (their questions merged): two
    documents with the same id would put one text on both sides of a split. Answers with
    empty text are left out.
    """
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    by_doc: dict[str, Passage] = {}
    for entry in raw["data"]:
        paragraphs = tuple(p["context"] for p in entry["paragraphs"])
        questions = tuple(
            SquadQuestion(
                qid=qa["id"],
                question=qa["question"],
                page=page,
                answers=tuple(Answer(a["text"], int(a["answer_start"])) for a in qa.get("answers", []) if a["text"]),
            )
            for page, p in enumerate(entry["paragraphs"], 1)
            for qa in p.get("qas", [])
        )
        passage = Passage(str(entry.get("id", "")), str(entry.get("title", "")), paragraphs, questions)
        if passage.doc_id in by_doc:
            first = by_doc[passage.doc_id]
            log.warning("entry %s repeats the passage of %s: merged", passage.entry_id, first.entry_id)
            by_doc[passage.doc_id] = Passage(first.entry_id, first.title, first.paragraphs, first.questions + questions)
        else:
            by_doc[passage.doc_id] = passage
    return list(by_doc.values())


def build_documents(passages: Sequence[Passage]) -> list[Document]:
    """One pipeline Document per passage, one Page per paragraph (no PDF, no text cleaning:
    cleaning would move the answer offsets)."""
    return [
        Document(
            doc_id=p.doc_id,
            source=p.entry_id,
            pages=[
                Page(doc_id=p.doc_id, source=p.entry_id, page=i, text=text) for i, text in enumerate(p.paragraphs, 1)
            ],
            n_pages_total=len(p.paragraphs),
        )
        for p in passages
    ]


def locate_answer(text: str, answer: Answer) -> int | None:
    """Where ``answer`` starts in ``text``: at answer_start if it is there, else at the
    occurrence nearest to it, else None.

    CMRC offsets are sometimes off by one or two (they count a character outside the
    Basic Multilingual Plane, such as 𫚭, as two), so the text is searched for nearby.

    >>> locate_answer("线白𫚭，俗名龙尖", Answer("俗名龙尖", 5))
    4
    """
    if text[answer.start : answer.start + len(answer.text)] == answer.text:
        return answer.start
    hits = [m.start() for m in re.finditer(re.escape(answer.text), text)]
    return min(hits, key=lambda h: abs(h - answer.start)) if hits else None


def chunk_spans(text: str, chunks: Sequence[Chunk]) -> list[tuple[int, int] | None]:
    """Character span of each chunk (in order) inside its page text; None if not found.

    chunk_documents does not keep offsets; the splitter's chunks are substrings of the
    page, in order and overlapping, so each is searched from just after the previous one's
    start (an identical earlier sentence cannot capture it).
    """
    spans: list[tuple[int, int] | None] = []
    cursor = 0
    for chunk in chunks:
        at = text.find(chunk.text, cursor)
        if at < 0:
            at = text.find(chunk.text)
        if at < 0:
            spans.append(None)
            continue
        spans.append((at, at + len(chunk.text)))
        cursor = at + 1
    return spans


def relevant_chunk_ids(text: str, chunks: Sequence[Chunk], answers: Sequence[Answer]) -> tuple[list[str], str | None]:
    """Ids of the chunks of one page that contain a whole answer span, and why none if none.

    A chunk is relevant when its span covers the answer's span; a chunk that could not be
    located in the page counts when its text contains the answer text.
    """
    spans = chunk_spans(text, chunks)
    found: list[str] = []
    reason = DROP_NOT_IN_PASSAGE
    for answer in answers:
        start = locate_answer(text, answer)
        if start is None:
            continue
        reason = DROP_NO_CHUNK
        end = start + len(answer.text)
        for chunk, span in zip(chunks, spans):
            inside = span[0] <= start and end <= span[1] if span is not None else answer.text in chunk.text
            if inside and chunk.chunk_id not in found:
                found.append(chunk.chunk_id)
    return found, (None if found else reason)


@dataclass
class HumanBenchmark:
    dataset: QADataset
    question_doc: dict[str, str]  # qid → doc_id of the passage the question was asked about
    n_questions: int  # questions of the passages, before dropping
    dropped: dict[str, int] = field(default_factory=dict)
    offsets_corrected: int = 0  # answers whose answer_start pointed elsewhere and were found nearby


def human_benchmark(passages: Sequence[Passage], chunks: Sequence[Chunk]) -> HumanBenchmark:
    """The questions of ``passages`` against every chunk of those passages.

    Questions whose answer lies in no single chunk (not in the text, or across a chunk
    border) are dropped and counted: they have no right answer to rank.
    """
    doc_ids = {p.doc_id for p in passages}
    by_page: dict[tuple[str, int], list[Chunk]] = {}
    for c in chunks:
        if c.doc_id in doc_ids:
            by_page.setdefault((c.doc_id, c.page), []).append(c)

    queries: dict[str, str] = {}
    relevant: dict[str, list[str]] = {}
    question_doc: dict[str, str] = {}
    dropped: Counter[str] = Counter()
    corrected = n_questions = 0
    for p in passages:
        for q in p.questions:
            n_questions += 1
            text = p.paragraphs[q.page - 1]
            corrected += sum(1 for a in q.answers if locate_answer(text, a) not in (None, a.start))
            ids, reason = relevant_chunk_ids(text, by_page.get((p.doc_id, q.page), []), q.answers)
            if not ids:
                dropped[reason or DROP_NO_CHUNK] += 1
                continue
            queries[q.qid], relevant[q.qid], question_doc[q.qid] = q.question, ids, p.doc_id
    corpus = {c.chunk_id: c.text for c in chunks if c.doc_id in doc_ids}
    if dropped:
        log.info("human questions: %d of %d kept, dropped %s", len(queries), n_questions, dict(dropped))
    return HumanBenchmark(
        dataset=QADataset(queries=queries, corpus=corpus, relevant_docs=relevant),
        question_doc=question_doc,
        n_questions=n_questions,
        dropped=dict(dropped),
        offsets_corrected=corrected,
    )
