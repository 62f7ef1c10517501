"""The stage counter ``[n/total]`` knows its total before the first stage."""

from __future__ import annotations

from flows.finetune_bce import N_STAGES, planned_stages
from tasks.settings import Settings


def test_planned_stages_count_the_optional_ones():
    plain = Settings(guard_dataset=None, human_questions="none")
    assert planned_stages(plain, has_champion=False) == N_STAGES + 1  # + promotion
    guarded = Settings(human_questions="none")
    assert planned_stages(guarded, has_champion=False) == N_STAGES + 2 + 1  # guard base/tuned, promotion
    assert planned_stages(guarded, has_champion=True) == N_STAGES + 2 + 2 + 1  # champion on val and guard
    assert planned_stages(Settings(round_trip_top_k=3, human_questions="none"), has_champion=False) == N_STAGES + 1 + 2 + 1


def test_planned_stages_count_the_human_questions(tmp_path):
    (tmp_path / "human_questions.json").write_text('{"questions": []}', encoding="utf-8")
    auto = Settings(guard_dataset=None, pdf_dir=tmp_path)  # auto: <pdf_dir>/human_questions.json exists
    assert planned_stages(auto, has_champion=False) == N_STAGES + 1 + 3  # match, base, tuned
    assert planned_stages(auto, has_champion=True) == N_STAGES + 1 + 1 + 4  # + champion on val and human
    absent = Settings(guard_dataset=None, pdf_dir=tmp_path / "elsewhere")
    assert planned_stages(absent, has_champion=False) == N_STAGES + 1  # auto without the file: nothing
    named = Settings(guard_dataset=None, pdf_dir=tmp_path / "elsewhere",
                     human_questions=str(tmp_path / "human_questions.json"))
    assert planned_stages(named, has_champion=False) == N_STAGES + 1 + 3
