"""Questions people wrote about the PDFs: the file, its checks, and matching evidence to chunks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.settings_cli import build_parser, settings_from_args
from tasks.core.errors import HumanQuestionsError
from tasks.evaluation.human_questions import (
    HumanQuestion,
    load_human_questions,
    questions_file,
    resolve_questions,
)
from tasks.core.preflight import check_settings
from tasks.core.qa_dataset import QADataset
from tasks.core.records import Chunk
from tasks.reporting.tables import HUMAN_TITLE, render_report
from tasks.core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "data" / "pdf" / "human_questions.json"


def _write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    return path


def _chunk(cid: str, text: str, source: str = "a.pdf") -> Chunk:
    return Chunk(chunk_id=cid, doc_id="d-" + source, source=source, page=1, text=text)


# --- the file ---------------------------------------------------------------------------


def test_a_valid_file_loads_with_default_ids_and_extra_keys(tmp_path):
    path = _write(tmp_path / "q.json", {
        "licence": "CC BY-SA 4.0",
        "questions": [
            {"question": " 谁开发了泡泡战士？ ", "evidence": "韩国Nexon开发", "source": "./sub/a.pdf"},
            {"id": "mine", "question": "在哪里？", "evidence": "澳洲南部"},
        ],
    })
    qs = load_human_questions(path)
    assert qs == [
        HumanQuestion("q1", "谁开发了泡泡战士？", "韩国Nexon开发", "sub/a.pdf"),
        HumanQuestion("mine", "在哪里？", "澳洲南部", None),
    ]


@pytest.mark.parametrize("content, problem", [
    ("{not json", "not valid JSON (line 1"),
    ([{"question": "谁？", "evidence": "他"}], 'a list "questions"'),
    ({"questions": [{"question": "谁？", "evidence": "他"}, {"question": "哪？"}]}, 'question #2 has no "evidence"'),
    ({"questions": [{"question": "  ", "evidence": "他"}]}, 'question #1 has no "question"'),
    ({"questions": ["谁？"]}, "question #1 is not an object"),
    ({"questions": [{"id": "x", "question": "谁？", "evidence": "他"},
                    {"id": "x", "question": "哪？", "evidence": "这"}]}, 'the id "x" is used twice'),
    ({"questions": [{"question": "谁？", "evidence": "他", "source": ["a.pdf"]}]}, '"source" must be a string'),
])
def test_bad_files_name_the_file_the_problem_and_the_fix(tmp_path, content, problem):
    path = _write(tmp_path / "bad.json", content)
    with pytest.raises(HumanQuestionsError) as err:
        load_human_questions(path)
    message = str(err.value)
    assert str(path) in message and problem in message
    assert '"evidence": "a verbatim snippet' in message and "--human-questions none" in message


def test_a_missing_file_says_how_to_turn_it_off(tmp_path):
    with pytest.raises(HumanQuestionsError, match=r"no such file.*--human-questions.*'none'"):
        load_human_questions(tmp_path / "nope.json")


def test_the_setting_auto_none_or_a_path(tmp_path):
    assert questions_file("auto", tmp_path) is None  # no file: no human evaluation
    _write(tmp_path / "human_questions.json", {"questions": []})
    assert questions_file("auto", tmp_path) == tmp_path / "human_questions.json"
    assert questions_file("none", tmp_path) is None
    assert questions_file("other.json", tmp_path) == Path("other.json")
    # From the command line, like every setting; "off" and "none" mean the same.
    parser = build_parser("python -m flows.finetune_bce", "")
    assert settings_from_args(parser.parse_args(["--human-questions", "OFF"])).human_questions == "none"
    assert settings_from_args(parser.parse_args(["--human-questions", "my/q.json"])).human_questions == "my/q.json"
    assert Settings().human_questions == "auto"


def test_preflight_rejects_a_named_missing_or_broken_file(tmp_path):
    (tmp_path / "pdfs").mkdir()
    common = dict(pdf_dir=tmp_path / "pdfs", output_dir=tmp_path / "out", models_dir=tmp_path / "m",
                  cache_dir=tmp_path / "c", llm_backend="extractive", guard_dataset=None)
    check_settings(Settings(**common))  # auto without a file: fine
    with pytest.raises(HumanQuestionsError, match="no such file"):
        check_settings(Settings(**common, human_questions=str(tmp_path / "missing.json")))
    _write(tmp_path / "pdfs" / "human_questions.json", "[]")
    with pytest.raises(HumanQuestionsError, match="human_questions.json"):
        check_settings(Settings(**common))  # auto finds it, and it is broken


# --- matching evidence to chunks ----------------------------------------------------------


def test_evidence_matches_across_the_line_breaks_of_pdf_text():
    chunks = [_chunk("c1", "泡泡战士由韩国\nNexon 开发与\n发行。"), _chunk("c2", "尤金袋鼠分布在澳洲南部。")]
    r = resolve_questions([HumanQuestion("q", "谁开发？", "韩国 Nexon\n开发与发行")], chunks)
    assert r.dataset.relevant_docs == {"q": ["c1"]}
    assert r.dataset.corpus == {"c1": chunks[0].text, "c2": chunks[1].text}  # every chunk is a candidate
    assert (r.n_questions, r.n_resolved, r.unresolved) == (1, 1, [])


def test_source_restricts_the_chunks_searched():
    chunks = [_chunk("a1", "同一句话在两份文件里。", "a.pdf"), _chunk("b1", "同一句话在两份文件里。", "sub/b.pdf")]
    both = resolve_questions([HumanQuestion("q", "？", "同一句话")], chunks)
    assert both.dataset.relevant_docs == {"q": ["a1", "b1"]}
    only_b = resolve_questions([HumanQuestion("q", "？", "同一句话", "sub/b.pdf")], chunks)
    assert only_b.dataset.relevant_docs == {"q": ["b1"]}
    assert set(only_b.dataset.corpus) == {"a1", "b1"}


def test_evidence_in_the_overlap_of_two_chunks_makes_both_relevant():
    chunks = [_chunk("c1", "第一句。第二句在重叠里。"), _chunk("c2", "第二句在重叠里。第三句。"), _chunk("c3", "别的。")]
    r = resolve_questions([HumanQuestion("q", "？", "第二句在重叠里")], chunks)
    assert r.dataset.relevant_docs == {"q": ["c1", "c2"]}


def test_unresolved_questions_are_listed_with_the_reason_not_fatal():
    chunks = [_chunk("c1", "泡泡战士由韩国Nexon开发。", "a.pdf")]
    r = resolve_questions([
        HumanQuestion("found", "谁？", "韩国Nexon"),
        HumanQuestion("elsewhere", "谁？", "韩国Nexon", "b.pdf"),
        HumanQuestion("absent", "谁？", "盛大网络", "a.pdf"),
    ], chunks)
    assert r.n_questions == 3 and r.n_resolved == 1 and list(r.dataset.queries) == ["found"]
    assert [u["id"] for u in r.unresolved] == ["elsewhere", "absent"]
    assert "no chunk comes from b.pdf" in r.unresolved[0]["reason"]
    assert "evidence not found in the chunks of a.pdf" in r.unresolved[1]["reason"]


def test_no_question_found_gives_an_empty_dataset():
    r = resolve_questions([HumanQuestion("q", "？", "不存在")], [_chunk("c1", "别的。")])
    assert r.n_resolved == 0 and r.dataset.queries == {} and len(r.unresolved) == 1


def test_the_stage_writes_the_dataset_or_removes_a_stale_one(tmp_path):
    from tasks.evaluation.stage import human_questions

    chunks = tmp_path / "chunks.jsonl"
    chunks.write_text("".join(json.dumps({**_chunk(cid, text).to_dict(), "split": split}, ensure_ascii=False) + "\n"
                              for cid, text, split in (("t1", "训练块：泡泡战士。", "train"),
                                                       ("v1", "验证块：尤金袋鼠。", "val"))), encoding="utf-8")
    questions = _write(tmp_path / "q.json", {"questions": [
        {"id": "a", "question": "什么游戏？", "evidence": "泡泡战士"},
        {"id": "b", "question": "什么动物？", "evidence": "尤金 袋鼠"},
        {"id": "c", "question": "？", "evidence": "没有"}]})
    out = tmp_path / "out" / "human_dataset.json"
    record = human_questions.fn(str(questions), str(chunks), out)
    assert (record.n_questions, record.n_resolved, record.n_on_train_chunks) == (3, 2, 1)
    assert [u["id"] for u in record.unresolved] == ["c"]
    ds = QADataset.load(Path(record.dataset))
    assert ds.relevant_docs == {"a": ["t1"], "b": ["v1"]} and set(ds.corpus) == {"t1", "v1"}

    _write(questions, {"questions": [{"question": "？", "evidence": "没有"}]})
    record = human_questions.fn(str(questions), str(chunks), out)
    assert record.dataset is None and record.n_resolved == 0 and not out.exists()


def test_prompt_examples_are_chosen_by_id_and_leave_the_evaluation(tmp_path):
    from tasks.evaluation.human_questions import pick_examples
    from tasks.evaluation.stage import human_questions, prompt_examples

    qs = [HumanQuestion(f"q{i}", f"问题{i}？", f"证据{i}") for i in range(12)]
    chosen = [q.qid for q in pick_examples(qs, 3, seed=7)]
    assert len(set(chosen)) == 3
    assert [q.qid for q in pick_examples(list(reversed(qs)), 3, seed=7)] == chosen  # not by position

    chunks = tmp_path / "chunks.jsonl"
    chunks.write_text("".join(json.dumps({**_chunk(f"c{i}", f"证据{i}在这里。").to_dict(), "split": "train"},
                                         ensure_ascii=False) + "\n" for i in range(12)), encoding="utf-8")
    path = _write(tmp_path / "q.json", {"questions": [{"id": q.qid, "question": q.question, "evidence": q.evidence}
                                                      for q in qs]})
    examples = prompt_examples.fn(str(path), 3, 7)
    assert [e["id"] for e in examples] == chosen and all(e["question"].endswith("？") for e in examples)

    record = human_questions.fn(str(path), str(chunks), tmp_path / "human.json", [e["id"] for e in examples])
    assert (record.n_questions, record.n_examples, record.n_resolved, len(record.unresolved)) == (12, 3, 9, 0)
    assert not set(QADataset.load(Path(record.dataset)).queries) & set(chosen)


def test_report_section_shows_the_table_and_what_was_not_found():
    rows = {"base": {"cosine_ndcg@10": 0.5}, "finetuned": {"cosine_ndcg@10": 0.6}}
    summary = {"stages": {"human-questions": {
        "file": "data/pdf/human_questions.json", "questions": 3, "resolved": 2, "on_training_chunks": 1,
        "unresolved_questions": [{"id": "q9", "reason": "evidence not found in any chunk"}]}}}
    report = render_report(rows, summary, {}, human=rows)
    section = report.split(f"## {HUMAN_TITLE}", 1)[1]
    assert "| ndcg@10 | 0.5000 | 0.6000 | +10.0 |" in section
    assert "2 of 3 questions in `data/pdf/human_questions.json` were found" in section
    assert "report only" in section and "`q9`: evidence not found in any chunk" in section
    assert HUMAN_TITLE not in render_report(rows, summary, {})


# --- the shipped file for the sample PDFs ---------------------------------------------------


def test_shipped_questions_resolve_against_the_sample_pdfs_default_chunks():
    from tasks.chunks.chunking import chunk_documents
    from tasks.documents.reading import load_documents

    raw = json.loads(SHIPPED.read_text(encoding="utf-8"))
    assert raw["licence"] == "CC BY-SA 4.0" and "Cui" in raw["citation"]
    questions = load_human_questions(SHIPPED)
    settings = Settings()
    chunks = chunk_documents(load_documents(REPO / "data" / "pdf").documents, settings.chunk_size,
                             settings.chunk_overlap)
    r = resolve_questions(questions, chunks)
    assert len(questions) >= 100
    assert r.n_resolved >= 0.9 * len(questions), r.unresolved
    # Every question names its PDF, and its chunks come from that PDF only.
    by_id = {c.chunk_id: c.source for c in chunks}
    sources = {q.qid: q.source for q in questions}
    for qid, cids in r.dataset.relevant_docs.items():
        assert {by_id[c] for c in cids} == {sources[qid]}
