"""The generation report, rendered from a real generation run's statistics."""

from __future__ import annotations

import json

from tasks.questions.generation import generate_questions
from tasks.reporting.generation_report import JSON_NAME, MD_NAME, render_generation_report, write_generation_report
from tasks.core.records import Chunk
from tasks.core.settings import Settings
from tests.questions.test_generation import CountingWriter, _chunks


def _stats(tmp_path):
    toc = Chunk("目录", "d", "toc.pdf", 2, "目 录\n第一章 绪论 ........ 1\n第二章 方法 ........ 5\n第三章 实验 ........ 9")
    w = CountingWriter(answers={
        "内容第1段": "段落内容第1段，讲的是一件事。",  # a statement: not a question
        "内容第2段": "What is this about?",  # not Chinese
        "内容第3段": "",  # no question at all
    })
    s = Settings(cache_dir=tmp_path / "cache", llm_backend="openai", generation_retries=1)
    return generate_questions(_chunks(5) + [toc], s, lambda _: w, show_progress=False).stats.to_dict()


def test_report_counts_and_shows_examples_of_every_reason(tmp_path):
    stats = _stats(tmp_path)
    md = render_generation_report(stats)
    assert md.startswith("# Question generation\n")
    assert "| chunks | 6 |" in md and "| skipped as not worth a question | 1 |" in md
    assert "| LLM requests sent | 8 |" in md  # 5 chunks, then the 3 without a question again
    assert "| chunks asked again (another seed) | 3 |" in md
    assert "| questions kept | 2 |" in md and "| questions dropped | 6 |" in md
    # Each reason with its count and an example of what was dropped or skipped.
    assert "| not a question | 2 | “段落内容第1段，讲的是一件事。”" in md
    assert "| not Chinese (the chunk is) | 2 | “What is this about?”" in md
    assert "| no question in the answer | 2 | “(empty answer)”" in md
    assert "| table of contents | 1 | “目 录 第一章 绪论 ........ 1" in md
    # The chunks left without a question, failures (no question at all) first.
    section = md.split("## Chunks without a question", 1)[1]
    assert section.index("段落3") < section.index("段落1")
    assert "| d.pdf | 4–5 | `段落3` | no question in the answer |" in section
    assert "every question dropped by the filters" in section


def test_round_trip_and_table_safe_text(tmp_path):
    stats = {"chunks": 1, "questions_kept": 1, "dropped": {"copies the chunk": 1},
             "examples": {"copies the chunk": [{"chunk_id": "c", "text": "a|b\n换行？"}]}}
    rt = {"top_k": 3, "questions": 10, "kept": 8, "dropped": 2, "examples": [{"question": "这段讲了什么？", "rank": 7}]}
    md = render_generation_report(stats, rt)
    assert "“a\\|b 换行？”" in md  # a pipe or newline in a question cannot break the table
    assert "| round trip (top 3): training questions kept | 8 of 10 |" in md
    assert "| 这段讲了什么？ | 7 |" in md


def test_report_files_are_written_together(tmp_path):
    stats = _stats(tmp_path)
    md = write_generation_report(tmp_path / "out", stats)
    assert (tmp_path / "out" / MD_NAME).read_text(encoding="utf-8") == md
    saved = json.loads((tmp_path / "out" / JSON_NAME).read_text(encoding="utf-8"))
    assert saved == {"generation": stats, "round_trip": None}
