"""The stage counter ``[n/total]`` knows its total before the first stage."""

from __future__ import annotations

from flows.finetune_bce import N_STAGES, planned_stages
from tasks.settings import Settings


def test_planned_stages_count_the_optional_ones():
    plain = Settings(guard_dataset=None)
    assert planned_stages(plain, has_champion=False) == N_STAGES + 1  # + promotion
    guarded = Settings()
    assert planned_stages(guarded, has_champion=False) == N_STAGES + 2 + 1  # guard base/tuned, promotion
    assert planned_stages(guarded, has_champion=True) == N_STAGES + 2 + 2 + 1  # champion on val and guard
    assert planned_stages(Settings(round_trip_top_k=3), has_champion=False) == N_STAGES + 1 + 2 + 1
