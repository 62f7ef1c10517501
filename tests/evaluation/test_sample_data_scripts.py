"""The scripts behind data/pdf: the shipped questions come back from CMRC, and another
SQuAD-format set (CJRC, which benchmarks typeset outside the repository) keeps its own
attribution instead of CMRC's licence."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"


def _script(name: str) -> ModuleType:
    if f"data_{name}" not in sys.modules:  # the scripts' dataclasses look their module up there
        spec = importlib.util.spec_from_file_location(f"data_{name}", REPO / "data" / f"{name}.py")
        sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[f"data_{name}"]


def _shared(name: str) -> Path:
    path = SHARED / name
    if not path.is_file():
        if os.environ.get("REQUIRE_SHARED_DATA"):
            pytest.fail(f"REQUIRE_SHARED_DATA is set but {path} does not exist")
        pytest.skip(f"{name} not beside the repository ({path})")
    return path


def test_the_shipped_human_questions_come_back_from_cmrc():
    built = _script("make_human_questions").build_human_questions(
        _shared("cmrc2018_trial.json"), REPO / "data" / "pdf" / "sources.json")
    shipped = json.loads((REPO / "data" / "pdf" / "human_questions.json").read_text(encoding="utf-8"))
    assert built == shipped


def test_court_judgments_keep_their_own_attribution(tmp_path):
    cjrc = _shared("cjrc_legal_dev.json")
    make_pdfs = _script("make_sample_pdfs")
    assert make_pdfs.provenance(make_pdfs.DEFAULT_JSON)["licence"] == "CC BY-SA 4.0"
    origin = make_pdfs.provenance(cjrc)
    assert origin["dataset"] == "cjrc_legal_dev.json"
    assert "CC BY" not in json.dumps(origin, ensure_ascii=False)

    # What make_sample_pdfs records for one PDF of CJRC's first two passages: CJRC's entries
    # have no id, so the passages are found by their position.
    data = json.loads(cjrc.read_text(encoding="utf-8"))["data"]
    passages = [{"id": f"{i}-0", "data_index": i, "paragraph_index": 0,
                 "question_ids": [qa["id"] for qa in data[i]["paragraphs"][0]["qas"]]} for i in (0, 1)]
    sources = tmp_path / "sources.json"
    sources.write_text(json.dumps({**origin, "documents": [{"file": "sample_01.pdf", "passages": passages}]}),
                       encoding="utf-8")

    record = _script("make_human_questions").build_human_questions(cjrc, sources)

    assert record["dataset"].startswith("cjrc_legal_dev.json: ")
    assert record["licence"] == origin["licence"] and record["licence_url"] is None
    n_asked = sum(len(p["question_ids"]) for p in passages)
    assert len(record["questions"]) + len(record["answers_not_found"]) == n_asked > 0
    by_id = {qa["id"]: qa for i in (0, 1) for qa in data[i]["paragraphs"][0]["qas"]}
    for q in record["questions"]:
        assert q["source"] == "sample_01.pdf" and q["question"] == by_id[q["id"]]["question"]
        assert by_id[q["id"]]["answers"][0]["text"] in q["evidence"]
