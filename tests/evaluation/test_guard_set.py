"""The shipped guard set: format, relevance, disjoint from the sample PDFs, reproducible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.core.fileio import sha256_file, sha256_text
from tasks.core.qa_dataset import QADataset
from tasks.core.settings import Settings

REPO = Path(__file__).resolve().parents[2]
GUARD = REPO / "data" / "guard"
CMRC_JSON = REPO.parent / "shared" / "data" / "cmrc2018_trial.json"


def test_settings_point_at_the_shipped_guard_set():
    assert (REPO / Settings().guard_dataset).resolve() == (GUARD / "guard_dataset.json").resolve()
    assert Settings(guard_dataset="none").guard_dataset is None


def test_guard_set_is_a_valid_dataset_with_human_questions_and_answer_chunks():
    ds = QADataset.load(GUARD / "guard_dataset.json")
    raw = json.loads((GUARD / "guard_dataset.json").read_text(encoding="utf-8"))
    assert set(raw) == {"queries", "corpus", "relevant_docs", "mode"}
    sources = json.loads((GUARD / "sources.json").read_text(encoding="utf-8"))
    assert len(ds.queries) == sources["n_questions"] >= 100
    assert len(ds.corpus) == sources["n_chunks"]
    assert sources["dataset_sha256"] == sha256_file(GUARD / "guard_dataset.json")
    assert all(ds.relevant_docs[q] for q in ds.queries)
    assert all(q.startswith("TRIAL_") for q in ds.queries)  # CMRC's own question ids
    # Every question's relevant chunk belongs to the passage the question was asked about.
    by_qid = {q: p["id"] for p in sources["passages"] for q in p["question_ids"]}
    assert set(by_qid) == set(ds.queries)
    assert all(q.rsplit("_QUERY_", 1)[0] == by_qid[q] for q in ds.queries)


def test_guard_passages_are_not_in_the_sample_pdfs_and_licence_is_kept():
    pdf_sources = json.loads((REPO / "data" / "pdf" / "sources.json").read_text(encoding="utf-8"))
    pdf_passages = [p for d in pdf_sources["documents"] for p in d["passages"]]
    guard = json.loads((GUARD / "sources.json").read_text(encoding="utf-8"))["passages"]
    assert not {p["id"] for p in guard} & {p["id"] for p in pdf_passages}
    assert not {p["context_sha256"] for p in guard} & {p["context_sha256"] for p in pdf_passages}
    readme = (GUARD / "README.md").read_text(encoding="utf-8")
    assert "CC BY-SA 4.0" in readme and "Yiming Cui" in readme and "github.com/ymcui/cmrc2018" in readme


@pytest.mark.slow
def test_the_script_rebuilds_the_shipped_bytes(tmp_path):
    if not CMRC_JSON.is_file():
        if os.environ.get("REQUIRE_SHARED_DATA"):
            pytest.fail(f"REQUIRE_SHARED_DATA is set but {CMRC_JSON} does not exist")
        pytest.skip(f"CMRC 2018 trial JSON not beside the repository ({CMRC_JSON})")
    proc = subprocess.run([sys.executable, "data/make_guard_set.py", "--out-dir", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("guard_dataset.json", "sources.json"):
        assert (tmp_path / name).read_bytes() == (GUARD / name).read_bytes(), name
    # The passages really come from the file, text and all.
    data = json.loads(CMRC_JSON.read_text(encoding="utf-8"))["data"]
    texts = {e["paragraphs"][0]["id"]: e["paragraphs"][0]["context"] for e in data}
    for p in json.loads((GUARD / "sources.json").read_text(encoding="utf-8"))["passages"]:
        assert sha256_text(texts[p["id"]].strip()) == p["context_sha256"]


def test_a_missing_guard_set_fails_before_the_run_with_the_fix(tmp_path):
    from tasks.core.errors import PreflightError
    from tasks.core.preflight import check_settings

    with pytest.raises(PreflightError, match="--guard-dataset: .*--guard-dataset none"):
        check_settings(Settings(guard_dataset=tmp_path / "nope.json", output_dir=tmp_path / "out"))
    check_settings(Settings(guard_dataset="none", output_dir=tmp_path / "out"))  # off: nothing to check
