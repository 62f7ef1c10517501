"""Train/validation split by document and content-derived chunk ids."""

from __future__ import annotations

import random

import pytest

from tasks.chunks.chunking import chunk_documents
from tasks.core.records import Chunk, Document, Page
from tasks.chunks.split import assign_chunks, split_documents

TEXT = (
    "尤金袋鼠是袋鼠科中细小的成员，通常是袋鼠及有袋类的研究对象。尤金袋鼠分布在澳洲南部岛屿及西岸地区。"
    "由于它们每季在袋鼠岛都大量繁殖，破坏了针鼹岛上的生活环境而被认为是害虫。"
    "尤金袋鼠最初是于1628年船难的生还者在西澳发现的，是欧洲人最早有纪录的袋鼠发现。"
) * 3


def _doc(doc_id: str, text: str = TEXT, pages: int = 2) -> Document:
    return Document(doc_id=doc_id, source=f"{doc_id}.pdf",
                    pages=[Page(doc_id, f"{doc_id}.pdf", p + 1, text) for p in range(pages)])


def test_split_ignores_listing_order_and_keeps_both_sides_non_empty():
    ids = [f"doc{i}" for i in range(10)]
    plan = split_documents(ids, 0.2, seed=7)
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    assert split_documents(shuffled, 0.2, seed=7) == plan
    assert len(plan.val_ids) == 2 and len(plan.train_ids) == 8
    assert not set(plan.val_ids) & set(plan.train_ids)
    assert split_documents(ids, 0.2, seed=8) != plan or True  # another seed may differ
    assert split_documents(["a", "b"], 0.01, seed=0).val_ids  # at least one validation document
    assert split_documents(["a", "b"], 0.99, seed=0).train_ids  # and at least one training document


def test_adding_a_document_moves_no_other_document():
    ids = [f"doc{i}" for i in range(20)]
    before = split_documents(ids, 0.25, seed=3)
    after = split_documents(ids + ["new"], 0.25, seed=3)
    moved_to_train = set(before.val_ids) - set(after.val_ids) - {"new"}
    assert len(moved_to_train) <= 1  # only when the validation count itself changes


def test_single_document_splits_its_chunks():
    plan = split_documents(["only"], 0.2, seed=1)
    assert plan.by == "chunk"
    chunks = [Chunk(f"c{i}", "only", "only.pdf", 1, f"text {i}") for i in range(10)]
    train, val = assign_chunks(chunks, plan, 0.2, seed=1)
    assert len(val) == 2 and len(train) == 8
    with pytest.raises(ValueError, match="only 1 chunk"):
        assign_chunks(chunks[:1], plan, 0.2, seed=1)


def test_chunks_are_stable_and_keep_provenance():
    docs = [_doc("d1"), _doc("d2", TEXT[::-1])]
    a = chunk_documents(docs, chunk_size=80, chunk_overlap=10)
    b = chunk_documents(docs, chunk_size=80, chunk_overlap=10)
    assert [c.chunk_id for c in a] == [c.chunk_id for c in b]
    assert len(a) > 4
    assert len({c.chunk_id for c in a}) == len(a), "identical text on two pages still gets two ids"
    assert {c.page for c in a} == {1, 2} and {c.source for c in a} == {"d1.pdf", "d2.pdf"}
    # Every chunk's text comes from its page (the splitter adds nothing, e.g. metadata).
    for c in a:
        page_text = TEXT if c.doc_id == "d1" else TEXT[::-1]
        assert c.text in page_text


def test_chunks_end_and_overlap_at_chinese_sentence_ends():
    """The splitter's sentences are Chinese ones: a chunk ends after 。, never at a list
    number's "." ("1.因…"), and the next chunk starts with the last whole sentence(s) of the
    one before, so an answer the border cuts is whole in one of them."""
    sentences = [f"第{i}项，{i}.因被告人未按期支付第{i}期货款，原告于2015年{i % 12 + 1}月起诉。" for i in range(1, 30)]
    page = Page(doc_id="d1", source="d1.pdf", page=1, text="".join(sentences))
    chunks = chunk_documents([Document(doc_id="d1", source="d1.pdf", pages=[page])], chunk_size=120, chunk_overlap=40)
    assert len(chunks) > 3
    for before, after in zip(chunks, chunks[1:]):
        assert before.text.endswith("。"), before.text[-20:]
        last_sentence = before.text[before.text.rstrip("。").rfind("。") + 1:]
        assert after.text.startswith(last_sentence), (before.text[-60:], after.text[:60])
    for s in sentences:  # each sentence whole in some chunk
        assert any(s in c.text for c in chunks), s
