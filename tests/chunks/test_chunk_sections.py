"""Chunks that stop at headings and carry them (tasks/chunks/sections.py, chunk_documents(by_section=True))."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tasks.core.settings import Settings

from tasks.chunks.sections import document_sections, is_heading, running_headers
from tasks.chunks.chunking import chunk_documents
from tasks.core.records import Document, Page

PDF_DIR = Path(__file__).resolve().parents[2] / "data" / "pdf"


def _doc(*pages: str) -> Document:
    return Document("d", "a.pdf", [Page("d", "a.pdf", i, text) for i, text in enumerate(pages, 1)])


def test_headings_are_short_lines_that_do_not_end_like_sentences() -> None:
    assert is_heading("黄鳍紫鱼") and is_heading("  第二章 方法  ") and is_heading("Introduction")
    assert not is_heading("体长可达50公分。")  # a sentence
    assert not is_heading("分布于：")  # leads into a list
    assert not is_heading("12")  # a page number
    assert not is_heading("")
    assert not is_heading("这是一行很长的文字但是没有标点所以它看起来像标题其实它只是正文的一部分而已")


def test_sections_follow_headings_across_pages_without_running_headers() -> None:
    doc = _doc(
        "样例文档\n前言的一句话。\n黄鳍紫鱼\n黄鳍紫鱼是一种鱼。",
        "样例文档\n体长可达50公分。\n乍都节公园\n\n公园位于曼谷。",
        "样例文档\n每逢星期日都有市集。",
    )
    assert running_headers(doc) == {"样例文档"}
    got = [(s.page, s.heading, s.text) for s in document_sections(doc)]
    assert got == [
        (1, None, "前言的一句话。"),
        (1, "黄鳍紫鱼", "黄鳍紫鱼是一种鱼。"),
        (2, "黄鳍紫鱼", "体长可达50公分。"),  # the section goes on at the top of page 2
        (2, "乍都节公园", "公园位于曼谷。"),
        (3, "乍都节公园", "每逢星期日都有市集。"),
    ]


def test_a_one_page_document_has_no_running_header_and_empty_sections_are_dropped() -> None:
    doc = _doc("第一章\n第一节\n正文从这里开始。")
    assert running_headers(doc) == set()
    assert [(s.heading, s.text) for s in document_sections(doc)] == [("第一节", "正文从这里开始。")]


def test_section_chunks_start_with_their_heading_and_never_cross_one() -> None:
    body_a = "黄鳍紫鱼是一种鱼。" * 3  # short: a page chunk runs on into the next article
    body_b = "公园位于曼谷。" * 40
    doc = _doc(f"黄鳍紫鱼\n{body_a}\n乍都节公园\n{body_b}")
    pages = chunk_documents([doc], chunk_size=120, chunk_overlap=10)
    sections = chunk_documents([doc], chunk_size=120, chunk_overlap=10, by_section=True)
    # Page chunking: one chunk holds the end of one article and the start of the next.
    assert any("黄鳍紫鱼是" in c.text and "公园位于" in c.text for c in pages)
    assert len(sections) > 2 and len({c.text.split("\n", 1)[0] for c in sections}) == 2
    for c in sections:
        heading, body = c.text.split("\n", 1)
        assert heading in ("黄鳍紫鱼", "乍都节公园")
        assert ("公园位于" in body) == (heading == "乍都节公园")
        assert ("黄鳍紫鱼是" in body) == (heading == "黄鳍紫鱼")
    assert len({c.chunk_id for c in sections}) == len(sections)
    assert not {c.chunk_id for c in sections} & {c.chunk_id for c in pages}


def test_real_sample_pdfs_give_chunks_under_their_article_titles() -> None:
    from tasks.documents.reading import load_documents

    sources = json.loads((PDF_DIR / "sources.json").read_text(encoding="utf-8"))
    titles = {p["title"] for d in sources["documents"] for p in d["passages"]}
    docs = load_documents(PDF_DIR, logger=logging.getLogger("test")).documents
    chunks = chunk_documents(docs, 300, 30, by_section=True)
    headed = [c for c in chunks if c.text.split("\n", 1)[0] in titles]
    # Most chunks sit under one of the 28 CMRC article titles. Not all: text extraction
    # sometimes runs a document's title line into its first heading ("…、亚硫酸盐山东女子学院"),
    # and then that article's first chunks have no heading line of their own.
    assert len(headed) >= 0.8 * len(chunks)
    assert len({c.text.split("\n", 1)[0] for c in headed}) >= 0.85 * len(titles)


def test_the_bench_compares_page_chunks_sections_and_headed_sections() -> None:
    from bench import section_chunks as bench
    from tasks.core.settings import Settings

    doc = _doc("黄鳍紫鱼\n" + "黄鳍紫鱼是一种鱼。" * 3 + "\n乍都节公园\n" + "公园位于曼谷。" * 3)
    settings = Settings(chunk_size=200, chunk_overlap=10)
    pages, sections, headed = (bench.way_chunks([doc], way, settings) for way in bench.WAYS)
    assert len(pages) == 1 and "乍都节公园" in pages[0].text  # one chunk for the whole page
    assert [c.text for c in sections] == ["黄鳍紫鱼是一种鱼。" * 3, "公园位于曼谷。" * 3]
    assert [c.text for c in headed] == [f"黄鳍紫鱼\n{sections[0].text}", f"乍都节公园\n{sections[1].text}"]


def test_the_chunk_stage_chunks_by_section_when_asked_and_caches_apart(tmp_path: Path) -> None:
    from tasks.chunks.stage import chunk, load_chunks_file
    from tasks.core.fileio import write_jsonl_atomic

    doc = _doc("黄鳍紫鱼\n" + "黄鳍紫鱼是一种鱼。" * 3 + "\n乍都节公园\n" + "公园位于曼谷。" * 30)
    documents = tmp_path / "documents.jsonl"
    write_jsonl_atomic(documents, [doc.to_dict()])
    plan = {"by": "chunk", "train_ids": [], "val_ids": []}
    plain_settings = Settings(chunk_size=100, chunk_overlap=10, val_ratio=0.5, seed=42)
    headed_settings = plain_settings.model_copy(update={"chunk_by_section": True})
    plain = chunk.fn(documents, plan, plain_settings, tmp_path / "plain")
    headed = chunk.fn(documents, plan, headed_settings, tmp_path / "headed")
    train, val = load_chunks_file(headed.chunks_path)
    assert {c.text.split("\n", 1)[0] for c in train + val} == {"乍都节公园", "黄鳍紫鱼"}
    assert all(("公园" in c.text) != ("鱼是" in c.text) for c in train + val)  # never both articles
    p_train, p_val = load_chunks_file(plain.chunks_path)
    assert any("公园" in c.text and "鱼是" in c.text for c in p_train + p_val)

    params = {"documents_path": documents, "plan": plan, "settings": plain_settings, "out_path": tmp_path / "c"}
    key = chunk.cache_policy.key
    assert key("chunks", params) != key("chunks", {**params, "settings": headed_settings})


def test_a_section_cut_by_a_page_break_is_chunked_across_it() -> None:
    # The page ends mid-sentence, on a line too long to be a heading.
    doc = _doc("黄鳍紫鱼\n黄鳍紫鱼是一种鱼，它和许多其他色彩鲜艳的热带鱼类一样，一年四季都常年生活在", "南海的珊瑚礁中。体长可达50公分。\n乍都节公园\n公园位于曼谷。")
    assert [s.continued for s in document_sections(doc)] == [False, True, False]
    chunks = chunk_documents([doc], chunk_size=200, chunk_overlap=10, by_section=True)
    assert [(c.text, c.pages) for c in chunks] == [
        ("黄鳍紫鱼\n黄鳍紫鱼是一种鱼，它和许多其他色彩鲜艳的热带鱼类一样，一年四季都常年生活在南海的珊瑚礁中。体长可达50公分。", "1–2"),
        ("乍都节公园\n公园位于曼谷。", "2"),
    ]
