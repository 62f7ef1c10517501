"""What a run ships: the promotion decision, the retriever, the model card and the registry entry.

The flow evaluates; this module decides from those numbers (validation only). What search
serves after the run is one record, ``current.json`` (:mod:`tasks.registry.runs`): the run's
model and retriever if it was promoted; the champion's, unchanged, if it was not; before any
promotion, the base model with the retriever this run chose for it. The report's ``shipped``
row, ``metrics.json``'s ``retriever``, ``summary.json``, the console and the model card all
name that record (:func:`shipped`), and ``flows.query`` searches with it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tasks.core.settings import Settings, card_settings
from tasks.registry.model_card import update_model_card
from tasks.registry.runs import EXPANSION_FILE, RERANKER_DIR, Champion, read_champion, read_serving
from tasks.retrieval.retriever import EXPANDED_BM25

__all__ = ["Contenders", "Release", "contenders", "decide", "human_questions_file", "read_champion", "read_serving",
           "report_rows", "serving_line", "ship_retriever", "shipped", "table_rows", "update_model_card"]

# The settings a model card names (Group(..., card=True) on the field): what data and training made the model.
CARD_SETTINGS = card_settings(Settings)
EXPANDED_ROW = "bm25 expanded"  # the tables' row of BM25 over each chunk with its questions
# What the retriever record keeps in run.json and current.json: the spec and why it was chosen,
# not this run's names for the models or their paths.
_RUN_ONLY = ("model", "model_path", "reranker_path", "expansion_path")


@dataclass
class Contenders:
    """The models a run compares: the base, the champion unless it is this run's model, this
    run's; the rerankers that go with them (this run's, the champion's); and the questions
    their BM25 may index with the chunks (this run's for the base and its model, the
    champion run's for the champion)."""

    models: dict[str, Path]  # base, [champion,] finetuned
    rerankers: dict[str, Path]  # [champion,] [finetuned]: the model's own run trained them
    expansions: dict[str, Path]  # [base,] [champion,] [finetuned]: tasks.retrieval.expansion's files
    run_id: str
    known_run: bool  # this model and reranker are registered already (a rerun)
    fingerprint: str  # the model's
    reranker_fingerprint: str | None
    champion: Champion | None
    is_champion: bool

    @property
    def rival(self) -> Champion | None:
        return self.champion if self.champion is not None and not self.is_champion else None

    def served_side(self) -> str | None:
        """The model (``champion``, or ``finetuned`` on a rerun of the champion) whose recorded
        retriever search serves now; None before any promotion."""
        return None if self.champion is None else "finetuned" if self.is_champion else "champion"

    def retrievers(self, side: str, settings: Settings) -> list:
        """The retrievers to evaluate ``side`` with: the candidates (each reranked one only
        where the side has a reranker) and, for the model search serves now, the retriever it
        serves with, as recorded, so the report can show what search keeps serving."""
        from dataclasses import replace

        from tasks.registry.runs import served_spec
        from tasks.retrieval.retriever import candidates

        reranker = self.rerankers.get(side)
        expansion = side in self.expansions
        served = served_spec(self.champion.serving) if side == self.served_side() else None
        tokenizer = served.tokenizer if served is not None and served.uses_bm25 else settings.bm25_tokenizer
        specs = candidates(settings.fusion_weights, tokenizer, settings.rerank_depths if reranker else (),
                           settings.rerank_weights, expansion and settings.bm25_expansion)
        if (served is not None and served.label not in {s.label for s in specs} and (reranker or not served.rerank_k)
                and (expansion or not served.expanded)):
            specs.append(replace(served, tokenizer=tokenizer))  # one BM25 tokenizer per evaluation
        return specs


def contenders(out: Path, base_path: Path, model_dir: Path, champion: Champion | None,
               reranker_dir: Path | None = None, expansion: Path | None = None) -> Contenders:
    """A run's models, rerankers and BM25 expansions (``expansion``: this run's questions by
    chunk). A run is its model and its reranker: a new reranker beside the same dense model
    is a new run, never a changed old one."""
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
    expansions = {side: Path(expansion) for side in ("base", "finetuned")} if expansion is not None else {}
    if rival is not None and (Path(rival.model_path).parent / EXPANSION_FILE).is_file():
        expansions["champion"] = Path(rival.model_path).parent / EXPANSION_FILE
    run_id = known or new_run_id(datetime.now(timezone.utc), stable_hash([fingerprint, reranker_fingerprint])
                                 if reranker_fingerprint else fingerprint)
    return Contenders(models, rerankers, expansions, run_id, known is not None, fingerprint, reranker_fingerprint,
                      champion, is_champion)


def champion_reranker(champion: Champion) -> Path:
    """Where the champion's run keeps its reranker (absent for runs without one)."""
    return Path(champion.model_path).parent / RERANKER_DIR


def table_rows(grids: dict[str, dict[str, dict]], shipped: dict[str, Any] | None = None) -> dict[str, dict]:
    """The rows of one table: ``bm25``, BM25 over the chunks with their questions
    (``bm25 expanded``, where evaluated), each model's dense row (base, [champion,] finetuned),
    this run's first stage with its reranker at each depth (``reranked@k``) and, with
    ``shipped`` (:func:`shipped`), the retriever search serves, on this dataset."""
    from tasks.retrieval.metrics import PER_QUESTION
    from tasks.retrieval.retriever import RERANK_MARK

    rows = {"bm25": next(iter(grids.values()))["bm25"]}
    expanded = next((grid[EXPANDED_BM25] for grid in grids.values() if EXPANDED_BM25 in grid), None)
    if expanded is not None:
        rows[EXPANDED_ROW] = expanded
    rows.update({side: grid["dense"] for side, grid in grids.items()})
    for label, m in grids.get("finetuned", {}).items():
        depth = label.split(RERANK_MARK, 1)[1] if RERANK_MARK in label else ""
        if depth.isdigit():  # the reranker's order alone at each depth (a mix shows as shipped, if it is)
            rows[f"reranked@{depth}"] = m
    if shipped is not None and shipped["label"] in grids.get(shipped["model"], {}):
        rows["shipped"] = grids[shipped["model"]][shipped["label"]]
    return {name: {k: v for k, v in m.items() if k != PER_QUESTION} for name, m in rows.items()}


def ship_retriever(grids: dict[str, dict[str, dict]], serving: str, model_path: Path, settings: Settings,
                   reranker_path: Path | None = None, expansion_path: Path | None = None) -> dict:
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
                                           settings.rerank_weights, settings.bm25_expansion) if s.label in grid]
    spec = choose(grid, candidates, settings.retriever_margin)
    default = even_mix(candidates)
    return {**spec.to_dict(), "label": spec.label, "description": spec.describe(), "model": serving,
            "model_path": str(Path(model_path).resolve()),
            **({"reranker_path": str(Path(reranker_path).resolve())} if spec.rerank_k and reranker_path else {}),
            **({"expansion_path": str(Path(expansion_path).resolve())} if spec.expanded and expansion_path else {}),
            "validation_ndcg@10": {s.label: round(metric_value(grid[s.label], "ndcg@10"), 4) for s in candidates},
            "default": default.label if default is not None else None, "margin_se": settings.retriever_margin,
            "gain_over_default_se": gains_over_even_mix(grid, candidates, ndigits=2)}


@dataclass
class Release:
    """The decision of a run and everything needed to record it."""

    promotion: dict[str, Any]  # the summary's promotion record (without the served retriever: see shipped())
    record: dict[str, Any]  # runs/<id>/run.json's record
    serving: dict[str, Any]  # current.json after this run: what search serves
    card: str  # the model card's section


def decide(c: Contenders, val_grids: dict, guard_grids: dict, trained: dict, val_dataset: Path,
           settings: Settings) -> Release:
    """Promote or not (the dense model on validation, within the guard margin); choose the
    retriever this run's model ships with whenever it is served; and say what search serves
    after the run: all from validation numbers only."""
    from tasks.registry.model_card import card_section
    from tasks.registry.promotion import already_champion, decide_promotion
    from tasks.registry.runs import champion_record
    from tasks.retrieval.index import INDEX_SETTINGS
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
    created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    dumped = settings.model_dump(mode="json")
    index_settings = {k: dumped[k] for k in INDEX_SETTINGS}
    # The retriever this run's model ships with whenever it is served (card and run record).
    own = ship_retriever(val_grids, "finetuned", c.models["finetuned"], settings, c.rerankers.get("finetuned"),
                         c.expansions.get("finetuned"))
    record = {"created_at": created_at,
              **({"reranker_fingerprint": c.reranker_fingerprint} if c.reranker_fingerprint else {}),
              "base_model": settings.resolved_base_model(),
              "scores": {"validation_ndcg@10": ndcg(rows["finetuned"]), "guard_ndcg@10": ndcg(guard.get("finetuned"))},
              "retriever": _kept(own),
              # How the PDFs were read and chunked: flows.query chunks them the same way for this model.
              "index_settings": index_settings}
    if decision.promote:
        serving = champion_record(c.run_id, {"model_fingerprint": c.fingerprint, **record},
                                  {"promoted_at": created_at, **record["scores"], "retriever": record["retriever"],
                                   "index_settings": index_settings})
    elif c.champion is not None:
        serving = c.champion.serving  # search keeps serving the champion, as it was recorded
    else:
        base = ship_retriever(val_grids, "base", c.models["base"], settings, expansion_path=c.expansions.get("base"))
        serving = {"run_id": None, "model_path": str(Path(c.models["base"]).resolve()), "chosen_by": c.run_id,
                   "chosen_at": created_at, "retriever": _kept(base), "index_settings": index_settings,
                   **({"expansion_path": base["expansion_path"]} if "expansion_path" in base else {})}
    promotion = {**decision.to_dict(), "run_id": c.run_id, "run_dir": f"runs/{c.run_id}", "new_run": not c.known_run,
                 "champion": c.run_id if decision.promote or c.is_champion else (
                     c.champion.run_id if c.champion else None)}
    served = shipped(serving, c)
    card = card_section(
        run_id=c.run_id,
        data={"training pairs": trained.get("n_pairs"), "epochs": trained.get("epochs"),
              "validation questions": len(json.loads(Path(val_dataset).read_text(encoding="utf-8"))["queries"]),
              "guard set": str(settings.guard_dataset) if settings.guard_dataset else "none"},
        settings={k: v for k, v in dumped.items() if k in CARD_SETTINGS},
        validation=table_rows(val_grids, served), guard=table_rows(guard_grids, served) if guard_grids else None,
        promotion={**promotion, "serving": serving_line(served, decision.promote)}, retriever=own,
    )
    return Release(promotion, record, serving, card)


def _kept(retriever: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in retriever.items() if k not in _RUN_ONLY}


def shipped(serving: dict[str, Any], c: Contenders) -> dict[str, Any]:
    """The report's record of what search serves (``current.json``'s ``serving``): its
    retriever, and which of this run's models it ranks with (``model``: the table's column,
    whose ``shipped`` row is that retriever on this run's questions) and whose run it is."""
    from tasks.registry.runs import served_spec

    run_id = serving.get("run_id")
    side = "base" if run_id is None else "finetuned" if run_id == c.run_id else "champion"
    spec = served_spec(serving)
    return {**(serving.get("retriever") or {**spec.to_dict(), "label": spec.label}), "description": spec.describe(),
            "model": side, "run_id": run_id}


def serving_line(served: dict[str, Any], promoted: bool) -> str:
    """One sentence on what search serves after the run.

    >>> serving_line({"run_id": "r1", "description": "BM25 alone (char tokens)", "model": "champion"}, False)
    'not promoted: search keeps serving run r1: BM25 alone (char tokens)'
    """
    if served.get("run_id") is None:
        return f"no run promoted yet: search serves the base model: {served['description']}"
    if promoted:
        return f"promoted: search now serves run {served['run_id']}: {served['description']}"
    return f"not promoted: search keeps serving run {served['run_id']}: {served['description']}"


def report_rows(val_grids: dict, guard_grids: dict, served: dict[str, Any]) -> dict[str, Any]:
    """metrics.json without the questions people wrote: the validation rows, the guard set's,
    and the retriever search serves (:func:`shipped`)."""
    guard = table_rows(guard_grids, served) if guard_grids else {}
    return {**table_rows(val_grids, served), **({"guard": guard} if guard else {}), "retriever": served}


def human_questions_file(settings: Settings) -> Path | None:
    """The file of questions people wrote about these PDFs, or None (see ``--human-questions``)."""
    from tasks.evaluation.human_questions import questions_file

    return questions_file(settings.human_questions, Path(settings.pdf_dir))
