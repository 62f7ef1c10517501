"""The one cache policy: code found from the imports, input files by content, the settings a
stage reads, and the rule that a cached record whose files are gone runs again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tasks.core.caching import code_fingerprint, project_imports
from tasks.core.errors import UndeclaredSettingError
from tasks.core.settings import SETTING_GROUPS, Settings, group_fields


REPO = Path(__file__).resolve().parents[2]
STAGE_MODULES = ["tasks.documents.stage", "tasks.chunks.stage", "tasks.questions.stage", "tasks.models.stage",
                 "tasks.training.stage", "tasks.evaluation.stage"]


@pytest.fixture
def project_copy(tmp_path: Path) -> Path:
    """The project's code in a folder of its own, to edit without touching the checkout."""
    for package in ("tasks", "flows"):
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def _fingerprints(root: Path) -> dict[str, str]:
    return {m: code_fingerprint(m, root) for m in STAGE_MODULES}


def _edit(root: Path, module: str) -> None:
    path = root.joinpath(*module.split(".")).with_suffix(".py")
    path.write_text(path.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")


def test_imports_are_followed_through_packages_and_function_bodies():
    training = project_imports("tasks.training.stage")
    # trainer is imported inside the task's body; the miner only by the trainer.
    assert {"tasks.training.trainer", "tasks.training.hard_negatives", "tasks.training.interpolation",
            "tasks.retrieval.metrics", "tasks.core.settings", "tasks", "tasks.training"} <= set(training)
    assert "tasks.documents.watch" not in training and "flows.finetune_bce" not in training
    assert all(name.startswith(("tasks", "flows")) for name in training)  # no third-party modules


def test_editing_the_hard_negative_miner_reruns_training_and_nothing_before_it(project_copy):
    before = _fingerprints(project_copy)
    assert before == _fingerprints(REPO)  # the copy is the project
    _edit(project_copy, "tasks.training.hard_negatives")
    after = _fingerprints(project_copy)
    changed = {m for m in STAGE_MODULES if before[m] != after[m]}
    # Evaluation follows training through the model's files, not through code.
    assert changed == {"tasks.training.stage"}


def test_editing_a_module_no_stage_imports_reruns_nothing(project_copy):
    before = _fingerprints(project_copy)
    _edit(project_copy, "tasks.documents.watch")  # the PDF watcher: flows.watch_pdfs only
    _edit(project_copy, "flows.query")
    assert _fingerprints(project_copy) == before


def test_editing_shared_code_reruns_every_stage_that_imports_it(project_copy):
    before = _fingerprints(project_copy)
    _edit(project_copy, "tasks.core.fileio")
    after = _fingerprints(project_copy)
    assert all(before[m] != after[m] for m in STAGE_MODULES)


def test_every_setting_belongs_to_a_group():
    assert set(Settings.model_fields) <= group_fields(SETTING_GROUPS)


def test_every_group_but_the_flows_own_is_read_by_a_stage():
    """A group no stage declares would feed no cache key: its fields belong to ``flow``."""
    import importlib

    from tasks.core.caching import StageCache
    from tasks.core.settings import GROUP_NAMES

    declared = set()
    for path in sorted((REPO / "tasks").glob("*/stage.py")):
        module = importlib.import_module(f"tasks.{path.parent.name}.stage")
        for obj in vars(module).values():
            policy = getattr(obj, "cache_policy", None)
            if isinstance(policy, StageCache):
                declared.update(policy.settings)
    assert declared == set(GROUP_NAMES) - {"flow"} == set(SETTING_GROUPS) - {"flow"}


def test_a_stage_sees_only_the_settings_it_declares():
    view = Settings(epochs=5).restricted(["training"], "training")
    assert view.epochs == 5
    with pytest.raises(UndeclaredSettingError, match=r"training stage read settings.llm_temperature"):
        view.llm_temperature  # noqa: B018


def _question_key(settings: Settings, chunks: Path, out: Path) -> str:
    from tasks.questions.stage import generate

    params = {"chunks_path": chunks, "settings": settings, "train_path": out / "t.json", "val_path": out / "v.json",
              "questions_path": out / "q.jsonl"}
    return generate.cache_policy.key(generate.name, params)


def test_keys_follow_input_content_and_the_settings_read(tmp_path):
    chunks = tmp_path / "chunks.jsonl"
    chunks.write_text('{"a": 1}\n', encoding="utf-8")
    base = _question_key(Settings(), chunks, tmp_path)
    assert _question_key(Settings(), chunks, tmp_path) == base
    # Settings of other stages do not count; the questions stage's own do.
    assert _question_key(Settings(epochs=7, fusion_weights=[0.5]), chunks, tmp_path) == base
    assert _question_key(Settings(llm_temperature=0.1), chunks, tmp_path) != base
    # An input counts by its bytes, not its name or its time stamp.
    moved = tmp_path / "elsewhere.jsonl"
    shutil.copy(chunks, moved)
    assert _question_key(Settings(), moved, tmp_path) == base
    chunks.write_text('{"a": 2}\n', encoding="utf-8")
    assert _question_key(Settings(), chunks, tmp_path) != base
    # Where the stage writes counts by path: what is there now does not.
    (tmp_path / "t.json").write_text("anything", encoding="utf-8")
    chunks.write_text('{"a": 1}\n', encoding="utf-8")
    assert _question_key(Settings(), chunks, tmp_path) == base


@pytest.mark.slow  # a Prefect flow, for real
def test_a_cached_record_whose_file_is_gone_runs_again(tmp_path):
    """Real Prefect runs of the real documents stage on a real PDF."""
    from prefect import flow

    from tasks.core.stage import StageRuns
    from tasks.documents.stage import read_documents
    from tests.sample_pdfs import SAMPLES, first_page_pdf

    first_page_pdf(SAMPLES[0], tmp_path / "pdfs" / "a.pdf")
    out = tmp_path / "work" / "documents.jsonl"

    @flow
    def documents_twice() -> list[bool]:
        import logging

        stages = StageRuns(logging.getLogger("test"))
        seen = []
        for delete in (False, False, True):
            if delete:
                out.unlink()
            record = stages.run(read_documents, tmp_path / "pdfs", out, Settings())
            seen.append(stages.runs[-1][2]["cached"])
            assert record.documents_path == out and out.is_file()
        summary = stages.summary()
        assert summary["documents"]["files"] == 1 and summary["documents"]["seconds"] >= 0
        return seen

    assert documents_twice() == [False, True, False]
    assert json.loads(out.read_text(encoding="utf-8").splitlines()[0])["source"] == "a.pdf"
