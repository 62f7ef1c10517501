"""Against forgetting: mix the fine-tuned weights with the base weights (LM-Cocktail).

``α·tuned + (1−α)·base`` with a single α keeps part of what the base model knew about
text outside the training documents. α is chosen on the validation set (domain) while a
guard set (general questions) must not lose more than a margin against the base model.

Example::

    >>> import torch
    >>> model, base = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    >>> tuned = {k: v.clone() for k, v in model.state_dict().items()}
    >>> load_interpolation(model, tuned, base.state_dict(), 0.5)
    >>> torch.allclose(model.weight, (tuned["weight"] + base.weight) / 2)
    True
    >>> choose_alpha([AlphaResult(0.0, 0.80, 0.90), AlphaResult(1.0, 0.86, 0.88)], margin=0.5).alpha
    0.0
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.retrieval.dense_cache import DenseScoreCache

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlphaResult:
    alpha: float
    val_ndcg: float
    guard_ndcg: float | None
    """None when there is no guard set, or when it was not needed (``guard_skipped``)."""
    guard_skipped: bool = False
    """Its guard score was not computed: an α ahead of it on validation was allowed, so it could not be chosen."""


def load_interpolation(model: Any, tuned: Mapping[str, Any], base: Mapping[str, Any], alpha: float) -> None:
    """Write ``alpha·tuned + (1−alpha)·base`` into ``model``'s own weights, one tensor at a time.

    Floating-point weights are mixed; other entries (integer buffers such as position ids)
    are copied from ``tuned``. Mixed in place rather than into a new state dict: only one
    weight's mix exists at a time, not a third model. ``base`` may live on another device
    (e.g. memory-mapped from disk on the CPU). Weights of ``model`` that ``tuned`` lacks are
    left as they are.

    >>> import torch
    >>> m = torch.nn.Linear(1, 1, bias=False)
    >>> load_interpolation(m, {"weight": torch.tensor([[1.0]])}, {"weight": torch.tensor([[3.0]])}, 0.25)
    >>> m.weight.data
    tensor([[2.5000]])
    """
    import torch

    _check_pair(tuned, base, alpha)
    own = model.state_dict()  # tensors that share storage with the model's parameters and buffers
    if not tuned.keys() <= own.keys():
        only = sorted(set(tuned) - set(own))[:5]
        raise ValueError(f"the model and the tuned weights differ (e.g. {only}): not the same architecture")
    with torch.no_grad():
        for key, t in tuned.items():
            if t.is_floating_point():
                t = alpha * t + (1 - alpha) * base[key].to(device=t.device, dtype=t.dtype)
            own[key].copy_(t)


def _check_pair(tuned: Mapping[str, Any], base: Mapping[str, Any], alpha: float) -> None:
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if tuned.keys() != base.keys():
        only = sorted(set(tuned) ^ set(base))[:5]
        raise ValueError(f"the two models have different weights (e.g. {only}): not the same architecture")
    for key, t in tuned.items():
        b = base[key]
        if t.shape != b.shape:
            raise ValueError(f"weight {key} has shape {tuple(t.shape)} in the tuned model, {tuple(b.shape)} in the base")


def choose_alpha(results: Sequence[AlphaResult], margin: float) -> AlphaResult:
    """The α with the best validation NDCG@10 among those that lose at most ``margin``
    NDCG@10 points (×100) on the guard set against α = 0 (the base model).

    α = 0 must be among ``results``; it always qualifies, so fine-tuning that hurts the
    validation set or the guard set gives back the base model. Ties go to the larger α:
    a small validation set often scores several α the same, and then it gives no reason
    to undo training (the guard margin is what protects against forgetting). Without
    guard scores only validation counts.

    >>> rs = [AlphaResult(0.0, 0.80, 0.90), AlphaResult(0.5, 0.84, 0.898), AlphaResult(1.0, 0.86, 0.88)]
    >>> choose_alpha(rs, margin=0.5).alpha
    0.5
    >>> choose_alpha(rs, margin=5).alpha
    1.0
    """
    base = [r for r in results if r.alpha == 0]
    if not base:
        raise ValueError("results must include alpha 0 (the base model) to measure the guard loss against")
    base_guard = base[0].guard_ndcg

    def allowed(r: AlphaResult) -> bool:
        if r.guard_skipped:
            return False
        if base_guard is None or r.guard_ndcg is None:
            return True
        return _within_margin(base_guard, r.guard_ndcg, margin)

    ok = [r for r in results if allowed(r)]
    return max(ok, key=lambda r: (r.val_ndcg, r.alpha))


def score_guard_as_needed(val_ndcg: Mapping[float, float], guard_ndcg: Callable[[float], float] | None,
                          margin: float) -> list[AlphaResult]:
    """Every α's result, with the guard set scored only where it can change the choice.

    The guard set only vetoes, so it is scored from the best α on validation down until
    one passes: those below could not be chosen whatever their guard score, and
    :func:`choose_alpha` picks the same α as with every guard score known. α = 0 is always
    scored: it is the reference.

    >>> guard = {0.0: 0.90, 0.5: 0.899, 1.0: 0.80}.__getitem__
    >>> [(r.alpha, r.guard_ndcg) for r in score_guard_as_needed({0.0: 0.8, 0.5: 0.84, 1.0: 0.86}, guard, 0.5)]
    [(0.0, 0.9), (0.5, 0.899), (1.0, 0.8)]
    >>> [(r.alpha, r.guard_skipped) for r in score_guard_as_needed({0.0: 0.8, 0.5: 0.84, 1.0: 0.83}, guard, 0.5)]
    [(0.0, False), (0.5, False), (1.0, True)]
    """
    if 0.0 not in val_ndcg:
        raise ValueError("the α grid must include 0 (the base model)")
    if guard_ndcg is None:
        return [AlphaResult(a, v, None) for a, v in sorted(val_ndcg.items())]
    guard = {0.0: guard_ndcg(0.0)}
    for a in sorted((a for a in val_ndcg if a != 0.0), key=lambda a: (-val_ndcg[a], -a)):
        if (val_ndcg[a], a) < (val_ndcg[0.0], 0.0):
            break  # the base model (always allowed) is ahead of this one and of the rest
        guard[a] = guard_ndcg(a)
        if _within_margin(guard[0.0], guard[a], margin):
            break
    return [AlphaResult(a, v, guard.get(a), a not in guard) for a, v in sorted(val_ndcg.items())]


def _within_margin(base_guard: float, guard: float, margin: float) -> bool:
    # A hair of tolerance: 0.5 points computed from floats must not fail on rounding.
    return 100 * (base_guard - guard) <= margin + 1e-9


def alpha_grid(alphas: Sequence[float]) -> list[float]:
    """The αs to evaluate: the configured ones plus 0 (the base) and 1 (the tuned model), sorted.

    >>> alpha_grid([0.5, 0.25])
    [0.0, 0.25, 0.5, 1.0]
    """
    return sorted({0.0, 1.0, *(float(a) for a in alphas)})


def interpolate_with_base(
    model: Any,
    base_state: Mapping[str, Any],
    val: Any,
    guard: Any | None,
    alphas: Sequence[float],
    margin: float,
    batch_size: int = 32,
    scores: DenseScoreCache | None = None,
) -> tuple[AlphaResult, list[AlphaResult]]:
    """Evaluate ``α·model + (1−α)·base`` for every α of :func:`alpha_grid` on ``val`` (and
    ``guard``), load the chosen one into ``model`` (a SentenceTransformer) and return it
    with every α's result.

    Only the weights in ``base_state`` are mixed; the model's others are left as they are
    (weights frozen in training, such as the token embeddings, equal the base already).
    Memory: one copy of the mixed weights besides the model (each α is written into the
    model in place); ``base_state`` can be memory-mapped from disk (``torch.load(...,
    mmap=True)``) so that it need not be held in memory through training.

    ``scores``: a :class:`~tasks.retrieval.dense_cache.DenseScoreCache` that keeps each
    α's score matrices; the evaluate stages find those of α = 0 (the base model) and of
    the α that is saved there instead of embedding every chunk again.

    Example::

        >>> from sentence_transformers import SentenceTransformer
        >>> from tasks.core.qa_dataset import QADataset
        >>> from tasks.core.settings import Settings
        >>> from tasks.models.base import prepare_base_model
        >>> model = SentenceTransformer(prepare_base_model(Settings(base_model="bundled:multilingual-e5-small")).path)
        >>> base = {k: v.clone() for k, v in model.state_dict().items()}  # here the "tuned" model is the base itself
        >>> val = QADataset(queries={"q": "袋鼠住在哪里？"}, relevant_docs={"q": ["a"]},
        ...                 corpus={"a": "尤金袋鼠分布在澳洲南部。", "b": "泡泡战士由韩国Nexon开发。"})
        >>> chosen, rows = interpolate_with_base(model, base, val, None, [0.5], margin=0.5)
        >>> [r.alpha for r in rows], chosen.alpha  # every α scores the same: ties go to the larger α
        ([0.0, 0.5, 1.0], 1.0)
    """
    from tasks.retrieval.dense_cache import DenseScoreCache, weights_digest

    scores = scores or DenseScoreCache(None)
    tuned_state = {k: v.detach().clone() for k, v in model.state_dict().items() if k in base_state}
    digests: dict[float, str | None] = {}

    def load(a: float) -> str | None:
        load_interpolation(model, tuned_state, base_state, a)
        if a not in digests:
            digests[a] = weights_digest(model) if scores.folder is not None else None
        return digests[a]

    val_ndcg = {a: _ndcg(model, val, "val", batch_size, scores, load(a)) for a in alpha_grid(alphas)}
    guard_fn = None if guard is None else lambda a: _ndcg(model, guard, "guard", batch_size, scores, load(a))
    results = score_guard_as_needed(val_ndcg, guard_fn, margin)
    for r in results:
        logger.info("alpha %.2f: validation NDCG@10 %.4f, guard %s", r.alpha, r.val_ndcg,
                    "not needed" if r.guard_skipped else "—" if r.guard_ndcg is None else f"{r.guard_ndcg:.4f}")
    chosen = choose_alpha(results, margin)
    load(chosen.alpha)
    logger.info("chose alpha %.2f", chosen.alpha)
    return chosen, results


def _ndcg(model: Any, dataset: Any, name: str, batch_size: int, scores: DenseScoreCache,
          weights: str | None) -> float:
    """The dense NDCG@10 of ``model`` on ``dataset``, as the evaluate stage computes it."""
    from tasks.retrieval.metrics import metrics_from_scores, model_evaluator

    evaluator = model_evaluator(model, dataset, batch_size, name)
    matrix = scores.scores(model, dataset, batch_size, evaluator, weights=weights)
    return metrics_from_scores(dataset, matrix, "cosine", evaluator)["cosine_ndcg@10"]
