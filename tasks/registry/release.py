"""What a run ships: the promotion decision, the retriever, the model card and the registry entry.

The flow evaluates; this module decides from those numbers (validation only) and records
the decision everywhere a user looks: ``metrics.json``'s rows, the model card, ``runs/<id>/``
and ``current.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.core.settings import Settings, card_settings
from tasks.registry.model_card import update_model_card
from tasks.registry.runs import Champion, read_champion

__all__ = ["Contenders", "Release", "contenders", "decide", "human_questions_file", "read_champion", "ship_retriever",
           "table_rows", "update_model_card"]

# The settings a model card names (Group(..., card=True) on the field): what data and training made the model.
CARD_SETTINGS = card_settings(Settings)
# A run folder's reranker, beside its model.
RERANKER_DIR = "reranker"


@dataclass
class Contenders:
    """The models a run compares: the base, the champion unless it is this run's model, this
    run's; and the rerankers that go with them (this run's, the champion's)."""

    models: dict[str, Path]  # base, [champion,] finetuned
    rerankers: dict[str, Path]  # [champion,] [finetuned]: the model's own run trained them
    run_id: str
    known_run: bool  # this model and reranker are registered already (a rerun)
    fingerprint: str  # the model's
    reranker_fingerprint: str | None
    champion: Champion | None
    is_champion: bool

    @property
    def rival(self) -> Champion | None:
        return self.champion if self.champion is not None and not self.is_champion else None


def contenders(out: Path, base_path: Path, model_dir: Path, champion: Champion | None,
               reranker_dir: Path | None = None) -> Contenders:
    """A run's models and rerankers. A run is its model and its reranker: a new reranker
    beside the same dense model is a new run, never a changed old one."""
    from tasks.core.caching import model_fingerprint
    from tasks.core.fileio import stable_hash
    from tasks.registry.runs import find_run, new_run_id

    fingerprint = model_fingerprint(model_dir)
    reranker_fingerprint = model_fingerprint(reranker_dir) if reranker_dir is not None else None
    known = find_run(out, fingerprint, reranker_fingerprint)
    is_champion = champion is not None and (champion.model_fingerprint, champion.reranker_fingerprint) == (
        fingerprint, reranker_fingerprint)
    rival = champion if champion is not None and not is_champion else None
    models = {"base": Path(base_path), **({"champion": Path(rival.model_path)} if rival else {}),
              "finetuned": Path(model_dir)}
    rerankers = {"finetuned": Path(reranker_dir)} if reranker_dir is not None else {}
    if rival is not None and (champion_reranker(rival) / "config.json").is_file():
        rerankers["champion"] = champion_reranker(rival)
    run_id = known or new_run_id(datetime.now(timezone.utc), stable_hash([fingerprint, reranker_fingerprint])
                                 if reranker_fingerprint else fingerprint)
    return Contenders(models, rerankers, run_id, known is not None, fingerprint, reranker_fingerprint, champion,
                      is_champion)


def champion_reranker(champion: Champion) -> Path:
    """Where the champion's run keeps its reranker (absent for runs without one)."""
    return Path(champion.model_path).parent / RERANKER_DIR


def table_rows(grids: dict[str, dict[str, dict]], shipped: dict[str, Any] | None = None) -> dict[str, dict]:
    """The rows of one table: ``bm25``, each model's dense row (base, [champion,] finetuned),
    this run's first stage with its reranker at each depth (``reranked@k``) and, with
    ``shipped`` (the retriever record), the shipped retriever on this dataset."""
    from tasks.retrieval.metrics import PER_QUESTION
    from tasks.retrieval.retriever import RERANK_MARK

    rows = {"bm25": next(iter(grids.values()))["bm25"], **{side: grid["dense"] for side, grid in grids.items()}}
    for label, m in grids.get("finetuned", {}).items():
        depth = label.split(RERANK_MARK, 1)[1] if RERANK_MARK in label else ""
        if depth.isdigit():  # the reranker's order alone at each depth (a mix shows as shipped, if it is)
            rows[f"reranked@{depth}"] = m
    if shipped is not None and shipped["model"] in grids:
        rows["shipped"] = grids[shipped["model"]][shipped["label"]]
    return {name: {k: v for k, v in m.items() if k != PER_QUESTION} for name, m in rows.items()}


def ship_retriever(grids: dict[str, dict[str, dict]], serving: str, model_path: Path, settings: Settings,
                   reranker_path: Path | None = None) -> dict:
    """The retriever to ship with the ``serving`` model, chosen on the validation ``grids``:
    the even fusion unless BM25 alone, the dense model alone, another fusion or the first
    stage with the model's reranker (where the grid has it) beats it by
    ``settings.retriever_margin`` standard errors. Its record names the spec, the model,
    every candidate's validation NDCG@10 and its gain over the even fusion in standard errors."""
    from tasks.retrieval.metrics import metric_value
    from tasks.retrieval.retriever import candidates as candidates_of
    from tasks.retrieval.retriever import choose, even_mix, gains_over_even_mix

    grid = grids[serving]
    candidates = [s for s in candidates_of(settings.fusion_weights, settings.bm25_tokenizer, settings.rerank_depths,
                                           settings.rerank_weights) if s.label in grid]
    spec = choose(grid, candidates, settings.retriever_margin)
    default = even_mix(candidates)
    return {**spec.to_dict(), "label": spec.label, "description": spec.describe(), "model": serving,
            "model_path": str(Path(model_path).resolve()),
            **({"reranker_path": str(Path(reranker_path).resolve())} if spec.rerank_k and reranker_path else {}),
            "validation_ndcg@10": {s.label: round(metric_value(grid[s.label], "ndcg@10"), 4) for s in candidates},
            "default": default.label if default is not None else None, "margin_se": settings.retriever_margin,
            "gain_over_default_se": gains_over_even_mix(grid, candidates, ndigits=2)}


@dataclass
class Release:
    """The decision of a run and everything needed to record it."""

    rows: dict[str, dict]  # validation rows (bm25, base, [champion,] finetuned, shipped)
    guard: dict[str, dict]  # the same on the guard set ({} without one)
    retriever: dict[str, Any]  # the retriever shipped now
    promotion: dict[str, Any]  # the summary's promotion record
    record: dict[str, Any]  # runs/<id>/run.json's record
    card: str  # the model card's section

    def metrics(self) -> dict[str, Any]:
        """metrics.json without the questions people wrote."""
        return {**self.rows, **({"guard": self.guard} if self.guard else {}), "retriever": self.retriever}


def decide(c: Contenders, val_grids: dict, guard_grids: dict, trained: dict, val_dataset: Path,
           settings: Settings) -> Release:
    """Promote or not (the dense model on validation, within the guard margin), then choose
    the retriever the serving model ships with; both from validation numbers only."""
    from tasks.registry.model_card import card_section
    from tasks.registry.promotion import already_champion, decide_promotion
    from tasks.retrieval.metrics import metric_value

    rows, guard = table_rows(val_grids), table_rows(guard_grids) if guard_grids else {}
    ndcg = lambda m: metric_value(m, "ndcg@10") if m else None  # noqa: E731
    if c.is_champion:
        decision = already_champion(c.champion.run_id)
    else:
        rival = c.rival
        decision = decide_promotion(
            ndcg(rows["finetuned"]), ndcg(rows.get("champion", rows["base"])),
            challenger_guard=ndcg(guard.get("finetuned")), base_guard=ndcg(guard.get("base")),
            guard_margin_pts=settings.promotion_guard_margin, min_gain_pts=settings.promotion_min_gain,
            incumbent=f"champion (run {rival.run_id})" if rival else "base model",
        )
    wins = decision.promote or c.is_champion
    now_champion = c.run_id if wins else (c.champion.run_id if c.champion else None)
    serving = "finetuned" if wins else "champion" if c.rival else "base"
    retriever = ship_retriever(val_grids, serving, c.models[serving], settings, c.rerankers.get(serving))
    rows, guard = table_rows(val_grids, retriever), table_rows(guard_grids, retriever) if guard_grids else {}
    promotion = {**decision.to_dict(), "run_id": c.run_id, "run_dir": f"runs/{c.run_id}", "new_run": not c.known_run,
                 "champion": now_champion, "retriever": retriever}
    # The retriever this run's model ships with whenever it is the champion (card and run record).
    own = retriever if serving == "finetuned" else ship_retriever(val_grids, "finetuned", c.models["finetuned"],
                                                                  settings, c.rerankers.get("finetuned"))
    card = card_section(
        run_id=c.run_id,
        data={"training pairs": trained.get("n_pairs"), "epochs": trained.get("epochs"),
              "validation questions": len(json.loads(Path(val_dataset).read_text(encoding="utf-8"))["queries"]),
              "guard set": str(settings.guard_dataset) if settings.guard_dataset else "none"},
        settings={k: v for k, v in settings.model_dump(mode="json").items() if k in CARD_SETTINGS},
        validation=rows, guard=guard or None, promotion=promotion, retriever=own,
    )
    record = {"created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              **({"reranker_fingerprint": c.reranker_fingerprint} if c.reranker_fingerprint else {}),
              "base_model": settings.resolved_base_model(),
              "scores": {"validation_ndcg@10": ndcg(rows["finetuned"]), "guard_ndcg@10": ndcg(guard.get("finetuned"))},
              # What flows.query searches with once this run is the champion: its model and this retriever.
              "retriever": {k: v for k, v in own.items() if k not in ("model_path", "reranker_path")}}
    return Release(rows, guard, retriever, promotion, record, card)


def human_questions_file(settings: Settings) -> Path | None:
    """The file of questions people wrote about these PDFs, or None (see ``--human-questions``)."""
    from tasks.evaluation.human_questions import questions_file

    return questions_file(settings.human_questions, Path(settings.pdf_dir))
