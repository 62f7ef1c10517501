"""Weight interpolation with the base model and the choice of α (tasks/training/interpolation.py)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tasks.training.interpolation import (AlphaResult, alpha_grid, choose_alpha, load_interpolation,
                                          score_guard_as_needed)


class _Weights(torch.nn.Module):
    def __init__(self, w: list[float], ids: list[int]) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w))
        self.register_buffer("ids", torch.tensor(ids))


def test_interpolation_mixes_float_weights_and_keeps_integer_buffers() -> None:
    tuned = {"w": torch.tensor([1.0, 2.0]), "ids": torch.tensor([0, 1, 2])}
    base = {"w": torch.tensor([3.0, 6.0]), "ids": torch.tensor([5, 5, 5])}
    model = _Weights([9.0, 9.0], [7, 7, 7])
    load_interpolation(model, tuned, base, 0.25)
    assert torch.allclose(model.w, torch.tensor([2.5, 5.0]))
    assert model.ids.tolist() == [0, 1, 2]
    load_interpolation(model, tuned, base, 1.0)
    assert torch.equal(model.w.data, tuned["w"])
    load_interpolation(model, tuned, base, 0.0)
    assert torch.equal(model.w.data, base["w"])
    # The model's own weights change; the two it mixes do not.
    assert tuned["w"].tolist() == [1.0, 2.0] and base["w"].tolist() == [3.0, 6.0]


def test_mixing_is_alpha_tuned_plus_one_minus_alpha_base_bit_for_bit() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.LayerNorm(5), torch.nn.Embedding(11, 5))
    model.register_buffer("ids", torch.arange(3))
    tuned = {k: v.clone() for k, v in model.state_dict().items()}
    base = {k: torch.randn_like(v) if v.is_floating_point() else v + 7 for k, v in tuned.items()}
    for alpha in (0.0, 0.3, 0.6, 1.0):
        load_interpolation(model, tuned, base, alpha)
        got = model.state_dict()
        for k, t in tuned.items():
            expected = alpha * t + (1 - alpha) * base[k] if t.is_floating_point() else t
            assert torch.equal(got[k], expected), (alpha, k)


def test_interpolation_refuses_other_architectures_and_bad_alpha() -> None:
    model, w = _Weights([0.0, 0.0], [0]), {"w": torch.zeros(2), "ids": torch.zeros(1, dtype=torch.long)}
    with pytest.raises(ValueError, match="different weights"):
        load_interpolation(model, w, {"v": torch.zeros(2), "ids": w["ids"]}, 0.5)
    with pytest.raises(ValueError, match="shape"):
        load_interpolation(model, w, {"w": torch.zeros(3), "ids": w["ids"]}, 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        load_interpolation(model, w, w, 1.5)
    with pytest.raises(ValueError, match="the model and the tuned weights differ"):
        load_interpolation(torch.nn.Linear(7, 5), w, w, 0.5)


RESULTS = [
    AlphaResult(0.0, 0.800, 0.900),
    AlphaResult(0.25, 0.820, 0.899),
    AlphaResult(0.5, 0.840, 0.896),  # loses 0.4 points on the guard
    AlphaResult(0.75, 0.850, 0.893),  # loses 0.7
    AlphaResult(1.0, 0.860, 0.880),  # loses 2.0
]


def test_choose_alpha_takes_the_best_validation_within_the_guard_margin() -> None:
    assert choose_alpha(RESULTS, margin=0.5).alpha == 0.5
    assert choose_alpha(RESULTS, margin=1.0).alpha == 0.75
    assert choose_alpha(RESULTS, margin=2.0).alpha == 1.0
    assert choose_alpha(RESULTS, margin=0.0).alpha == 0.0


def test_choose_alpha_falls_back_to_the_base_when_tuning_hurts_validation() -> None:
    worse = [AlphaResult(0.0, 0.80, 0.9), AlphaResult(0.5, 0.79, 0.9), AlphaResult(1.0, 0.70, 0.9)]
    assert choose_alpha(worse, margin=0.5).alpha == 0.0


def test_choose_alpha_breaks_ties_towards_the_tuned_model_and_works_without_guard() -> None:
    tie = [AlphaResult(0.0, 0.8, None), AlphaResult(0.5, 0.9, None), AlphaResult(1.0, 0.9, None)]
    assert choose_alpha(tie, margin=0.0).alpha == 1.0
    # …but never past the guard margin.
    guarded = [AlphaResult(0.0, 0.9, 0.90), AlphaResult(0.5, 0.9, 0.899), AlphaResult(1.0, 0.9, 0.88)]
    assert choose_alpha(guarded, margin=0.5).alpha == 0.5
    with pytest.raises(ValueError, match="alpha 0"):
        choose_alpha(RESULTS[1:], margin=0.5)


def test_alpha_grid_always_has_the_base_and_the_tuned_model() -> None:
    assert alpha_grid([]) == [0.0, 1.0]
    assert alpha_grid([0.75, 0.5, 1.0]) == [0.0, 0.5, 0.75, 1.0]


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from([0.25, 0.5, 0.75, 1.0]), st.tuples(st.sampled_from([0.8, 0.82, 0.84, 0.86]),
                                                                         st.sampled_from([0.88, 0.895, 0.9, 0.91]))),
       st.tuples(st.sampled_from([0.8, 0.82, 0.84]), st.sampled_from([0.895, 0.9])),
       st.sampled_from([0.0, 0.5, 1.0]))
def test_guard_scored_as_needed_chooses_as_if_every_guard_score_were_known(others, base, margin) -> None:
    table = {0.0: base, **others}
    asked = []

    def guard(a: float) -> float:
        asked.append(a)
        return table[a][1]

    lazy = score_guard_as_needed({a: v for a, (v, _) in table.items()}, guard, margin)
    full = [AlphaResult(a, v, g) for a, (v, g) in sorted(table.items())]
    assert choose_alpha(lazy, margin) == next(r for r in lazy if r.alpha == choose_alpha(full, margin).alpha)
    assert asked[0] == 0.0 and len(asked) == len(set(asked)) <= len(table)
    assert {r.alpha for r in lazy if r.guard_skipped} == set(table) - set(asked)
