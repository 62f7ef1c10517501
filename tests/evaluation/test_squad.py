"""The SQuAD reader and the answer-span → chunk mapping (tasks/evaluation/squad.py).

The data tests read a few entries of the real CMRC 2018 trial file beside the repository
(the ``cmrc_json`` fixture); they are skipped when it is absent, unless
REQUIRE_SHARED_DATA is set.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.chunks.chunking import chunk_documents
from tasks.core.fileio import sha256_text
from tasks.core.qa_dataset import QADataset
from tasks.evaluation.squad import (
    DROP_NO_CHUNK,
    DROP_NOT_IN_PASSAGE,
    Answer,
    Passage,
    SquadQuestion,
    build_documents,
    chunk_spans,
    human_benchmark,
    load_squad,
    locate_answer,
)


@pytest.fixture(scope="module")
def few(cmrc_json: Path) -> list[Passage]:
    return load_squad(cmrc_json)[:8]


# --- reading ---------------------------------------------------------------------------------


def test_a_small_real_sample_reads_into_passages_with_repeats_merged(cmrc_json: Path, tmp_path: Path) -> None:
    entries = json.loads(cmrc_json.read_text(encoding="utf-8"))["data"][:3]
    # A fourth entry repeating the first passage's text, with one more question and an empty answer.
    repeat = {"id": "REPEAT", "title": "again", "paragraphs": [{
        "context": entries[0]["paragraphs"][0]["context"],
        "qas": [{"id": "REPEAT_Q", "question": "再问一次？", "answers": [{"text": "", "answer_start": 0}]}],
    }]}
    sample = tmp_path / "sample.json"
    sample.write_text(json.dumps({"version": "v1.0", "data": [*entries, repeat]}, ensure_ascii=False), encoding="utf-8")

    passages = load_squad(sample)
    assert [p.entry_id for p in passages] == [e["id"] for e in entries]  # file order, the repeat merged
    first, raw = passages[0], entries[0]
    assert first.title == raw["title"]
    assert first.paragraphs == (raw["paragraphs"][0]["context"],)
    assert first.doc_id == sha256_text(raw["paragraphs"][0]["context"])
    qas = raw["paragraphs"][0]["qas"]
    assert [q.qid for q in first.questions] == [qa["id"] for qa in qas] + ["REPEAT_Q"]
    assert first.questions[0] == SquadQuestion(
        qas[0]["id"], qas[0]["question"], 1,
        tuple(Answer(a["text"], int(a["answer_start"])) for a in qas[0]["answers"]),
    )
    assert first.questions[-1].answers == ()  # an empty answer text is no answer


def test_one_document_per_entry_with_the_passage_as_its_page(few, cmrc_json: Path) -> None:
    raw = json.loads(cmrc_json.read_text(encoding="utf-8"))["data"][:8]
    docs = build_documents(few)
    assert [d.source for d in docs] == [e["id"] for e in raw]
    for doc, entry in zip(docs, raw):
        context = entry["paragraphs"][0]["context"]
        assert doc.doc_id == sha256_text(context)
        assert [(p.page, p.text, p.doc_id) for p in doc.pages] == [(1, context, doc.doc_id)]


def test_chunks_are_pieces_of_their_passage(few) -> None:
    docs = build_documents(few)
    chunks = chunk_documents(docs, 300, 30)
    text_of = {d.doc_id: d.pages[0].text for d in docs}
    assert {c.doc_id for c in chunks} == set(text_of)  # every passage gives chunks
    assert len(chunks) > len(docs)  # CMRC passages are longer than one 300-token chunk
    assert len({c.chunk_id for c in chunks}) == len(chunks)
    for c in chunks:
        assert c.text in text_of[c.doc_id]
    # Offsets are recovered for every chunk, in order.
    for doc in docs:
        mine = [c for c in chunks if c.doc_id == doc.doc_id]
        spans = chunk_spans(doc.pages[0].text, mine)
        assert None not in spans
        assert [s for s, _ in spans] == sorted(s for s, _ in spans)


# --- answers → chunks ------------------------------------------------------------------------


def test_every_kept_question_points_at_a_chunk_of_its_passage_holding_the_answer(few) -> None:
    chunks = chunk_documents(build_documents(few), 300, 30)
    hb = human_benchmark(few, chunks)
    ds = hb.dataset
    chunk_doc = {c.chunk_id: c.doc_id for c in chunks}
    questions = {q.qid: (p, q) for p in few for q in p.questions}

    assert hb.n_questions == len(questions)
    assert len(ds.queries) + sum(hb.dropped.values()) == hb.n_questions
    assert len(ds.queries) >= 0.9 * hb.n_questions
    assert set(ds.corpus) == set(chunk_doc)  # every chunk of the passages, asked about or not
    for qid, cids in ds.relevant_docs.items():
        passage, q = questions[qid]
        assert ds.queries[qid] == q.question
        assert hb.question_doc[qid] == passage.doc_id
        assert cids
        for cid in cids:
            assert chunk_doc[cid] == passage.doc_id
            assert any(a.text in ds.corpus[cid] for a in q.answers)


def test_benchmark_file_is_an_embedding_qa_dataset(few, tmp_path: Path) -> None:
    chunks = chunk_documents(build_documents(few), 300, 30)
    ds = human_benchmark(few, chunks).dataset
    ds.save(tmp_path / "human.json")
    raw = json.loads((tmp_path / "human.json").read_text(encoding="utf-8"))
    assert set(raw) == {"queries", "corpus", "relevant_docs", "mode"}
    assert QADataset.load(tmp_path / "human.json") == ds


def test_answer_offsets_off_by_one_are_found_nearby() -> None:
    text = "线白𫚭，俗名龙尖，为辐鳍鱼纲。"
    assert locate_answer(text, Answer("俗名龙尖", 5)) == 4  # CMRC counted 𫚭 as two
    assert locate_answer(text, Answer("俗名龙尖", 4)) == 4
    assert locate_answer(text, Answer("鲨鱼", 0)) is None


def test_answers_across_a_chunk_border_or_not_in_the_text_are_dropped_and_counted() -> None:
    sentences = [f"第{i}句讲的是编号为{i}的一种鱼，它生活在第{i}片海域里。" for i in range(1, 13)]
    text = "".join(sentences)
    questions = (
        SquadQuestion("q_in", "第3句讲什么？", 1, (Answer(sentences[2], text.index(sentences[2])),)),
        SquadQuestion("q_all", "全文讲什么？", 1, (Answer(text, 0),)),
        SquadQuestion("q_none", "鲨鱼呢？", 1, (Answer("鲨鱼", 3),)),
    )
    passage = Passage("P1", "鱼", (text,), questions)
    chunks = chunk_documents(build_documents([passage]), 40, 5)
    assert len(chunks) > 1

    hb = human_benchmark([passage], chunks)
    assert list(hb.dataset.queries) == ["q_in"]
    assert all(sentences[2] in hb.dataset.corpus[c] for c in hb.dataset.relevant_docs["q_in"])
    assert hb.dropped == {DROP_NO_CHUNK: 1, DROP_NOT_IN_PASSAGE: 1}
