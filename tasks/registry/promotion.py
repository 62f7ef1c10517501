"""Champion/challenger: should a newly trained model replace the one in use?

A run's fine-tuned model (the challenger) is promoted only if

1. it beats the incumbent — the current champion, or the base model when no run has
   been promoted yet — on the domain validation set by more than ``min_gain_pts``
   NDCG@10 points (strictly: a tie keeps the incumbent), and
2. it loses no more than ``guard_margin_pts`` NDCG@10 points on the guard set against
   the base model.

The guard is measured against the base model, not the champion: what it guards
against is forgetting what the base model knew, and a reference that moved with every
promotion would let small losses add up run after run.

Pure: numbers in, a decision out. ``tasks.registry.runs`` acts on it.

Example::

    >>> d = decide_promotion(0.80, 0.78, challenger_guard=0.895, base_guard=0.90,
    ...                      guard_margin_pts=0.5, incumbent="base model")
    >>> d.promote, d.val_gain_pts, d.guard_loss_pts
    (True, 2.0, 0.5)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

PROMOTION_METRIC = "ndcg@10"

# Metrics are means over a few hundred questions at most; differences below this are
# float noise, not a model being better.
_EPS_PTS = 1e-6


@dataclass(frozen=True)
class PromotionDecision:
    promote: bool
    reason: str
    incumbent: str  # "base model" or "run <id>"
    metric: str = PROMOTION_METRIC
    challenger_val: float | None = None
    incumbent_val: float | None = None
    val_gain_pts: float | None = None
    challenger_guard: float | None = None
    base_guard: float | None = None
    guard_loss_pts: float | None = None
    guard_margin_pts: float | None = None
    min_gain_pts: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide_promotion(
    challenger_val: float,
    incumbent_val: float,
    *,
    challenger_guard: float | None,
    base_guard: float | None,
    guard_margin_pts: float,
    min_gain_pts: float = 0.0,
    incumbent: str = "base model",
) -> PromotionDecision:
    """Decide on NDCG@10 values in [0, 1]; margins are in points (×100).

    ``challenger_guard``/``base_guard`` None means no guard set was evaluated: the guard
    condition is then not checked, and the reason says so.

    >>> decide_promotion(0.80, 0.80, challenger_guard=None, base_guard=None, guard_margin_pts=0.5).promote
    False
    """
    gain = round((challenger_val - incumbent_val) * 100, 4)
    guard_loss = None
    if challenger_guard is not None and base_guard is not None:
        guard_loss = round((base_guard - challenger_guard) * 100, 4)
    common = dict(
        incumbent=incumbent,
        challenger_val=challenger_val,
        incumbent_val=incumbent_val,
        val_gain_pts=gain,
        challenger_guard=challenger_guard,
        base_guard=base_guard,
        guard_loss_pts=guard_loss,
        guard_margin_pts=guard_margin_pts,
        min_gain_pts=min_gain_pts,
    )
    if not gain > min_gain_pts + _EPS_PTS:
        need = "more than " + (f"{min_gain_pts:+.1f}" if min_gain_pts else "0")
        return PromotionDecision(
            False, f"validation {PROMOTION_METRIC} {gain:+.1f} pts vs the {incumbent} (needs {need})", **common
        )
    if guard_loss is not None and guard_loss > guard_margin_pts + _EPS_PTS:
        return PromotionDecision(
            False,
            f"guard {PROMOTION_METRIC} {-guard_loss:+.1f} pts vs the base model: loses more than the "
            f"margin of {guard_margin_pts:.1f}",
            **common,
        )
    guard_text = (
        f"guard {-guard_loss:+.1f} pts vs the base model (margin {guard_margin_pts:.1f})"
        if guard_loss is not None
        else "no guard set evaluated"
    )
    return PromotionDecision(
        True, f"validation {PROMOTION_METRIC} {gain:+.1f} pts vs the {incumbent}; {guard_text}", **common
    )


def already_champion(run_id: str) -> PromotionDecision:
    """The decision when the run's model is the champion already (an unchanged rerun)."""
    return PromotionDecision(False, f"this model is already the champion (run {run_id})", incumbent=f"run {run_id}")
