"""Benchmark: what each addition to the training recipe is worth on HUMAN questions.

Same data, same epochs, same machine for every row; only the recipe changes:

* ``base``: the base model, untrained;
* ``plain``: what the original recipe and LlamaIndex's fine-tuning engine do:
  MultipleNegativesRankingLoss at its default scale 20, plain random batches (a chunk
  can meet itself as a negative), the LLM's questions without the quality filters (copies of
  the chunk, answers without a question mark and low-value chunks all kept), no hard
  negatives, last epoch. The prompt-echo, language and duplicate checks stay on, so this
  baseline is if anything stronger than the naive recipe;
* ``ours: …``: the additions one at a time, each row adding to the one before:
  no-duplicate batches + scale 100 (e5's temperature) + question filters + the best
  epoch by validation NDCG@10; + hard negatives; + cached MNRL with a bigger batch;
  + α interpolation of the row above with the base weights (α chosen on validation
  under the α-guard).

Data (``../shared/data/cmrc2018_trial.json``, CC BY-SA 4.0), built with
``tasks.evaluation.squad`` and ``bench.cmrc_human``'s helpers: the first ``--n-passages``
passages are split into train and held-out passages; the train passages again into train and validation (like
the pipeline: synthetic questions of validation documents). Synthetic questions come from
the shared per-chunk generation cache only: this script never starts an LLM and stops
with an error if a chunk is not cached. Measured on

* the human questions of the held-out passages, chunk-level relevance (the chunk holding
  the answer span) — the target;
* ``guard``: human questions of later passages (disjoint from all of the above), the
  forgetting check reported in the table;
* ``α-guard``: human questions of yet other passages, used only to choose α, so the
  reported guard is not the one α was fitted to.

``--extra-train-passages N`` trains on the N passages after the α-guard ones as well: more
training data for every row, with the held-out, validation and guard sets unchanged. Their
questions must be in the cache too (``python -m bench.cmrc_human`` with a larger ``--n-passages``
asks for them, or any run of the pipeline's generation on those chunks).

Run from the repository root (about 35 minutes on 2 shared cores)::

    .venv/bin/python -m bench.training_recipes
    .venv/bin/python -m bench.training_recipes --rows base,plain,ours --epochs 1
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench import cmrc_human as ch
from bench.harness import BenchInputError, markdown_table, setup_logging, write_results
from tasks.chunks.chunking import chunk_documents
from tasks.core.qa_dataset import QADataset
from tasks.core.records import Chunk
from tasks.core.settings import Settings
from tasks.evaluation.squad import HumanBenchmark, Passage, build_documents, human_benchmark, load_squad

log = logging.getLogger("bench.training_recipes")

# (label, training overrides, question filters on?, from which earlier row to interpolate)
RECIPES: dict[str, dict[str, Any]] = {
    "plain": dict(
        filters=False,
        train=dict(loss_scale=20, no_duplicate_batches=False, keep_best_checkpoint=False, hard_negatives=0),
    ),
    "ours": dict(filters=True, train=dict(loss_scale=100, no_duplicate_batches=True, keep_best_checkpoint=True,
                                          hard_negatives=0)),
    "ours+neg": dict(filters=True, train=dict(loss_scale=100, hard_negatives=1, keep_best_checkpoint=True)),
    # No training of its own: the model of the last trained row before it, mixed with the base.
    "+alpha": dict(filters=True, interpolate=True, train={}),
    "ours+neg+cached": dict(
        filters=True,
        train=dict(loss_scale=100, hard_negatives=1, cached_loss=True, batch_size=16, mini_batch_size=8,
                   keep_best_checkpoint=True),
    ),
}
LABELS = {
    "plain": "plain (MNRL scale 20, plain batches, unfiltered questions)",
    "ours": "ours: no-dup batches + scale 100 + filters + best epoch",
    "ours+neg": "ours + 1 hard negative",
    "+alpha": "row above + α interpolation",
    "ours+neg+cached": "ours + 1 hard negative + cached MNRL, batch 16",
}
METRICS = (("cosine_ndcg@10", "NDCG@10"), ("cosine_accuracy@1", "Acc@1"))


class NotCachedError(RuntimeError):
    """A chunk's questions are not in the generation cache: this bench never runs the LLM."""


def no_llm(settings: Settings):
    raise NotCachedError(
        "a train chunk is not in the generation cache; run python -m bench.cmrc_human with the same "
        "--n-passages/--seed first (it asks the LLM), then rerun this"
    )


def guard_benchmark(passages: Sequence[Passage], settings: Settings, titles: bool = False) -> QADataset:
    """The human questions of ``passages`` against their chunks (titled ones with ``titles``)."""
    chunks = chunk_documents(build_documents(passages), settings.chunk_size, settings.chunk_overlap)
    dataset = human_benchmark(passages, chunks).dataset
    return ch.titled_dataset(dataset, ch.titled_chunks(chunks, passages)) if titles else dataset


def heldout_benchmark(
    eval_on: str,
    fit_passages: Sequence[Passage],
    fit_chunks: Sequence[Chunk],
    heldout_passages: Sequence[Passage],
    heldout_chunks: Sequence[Chunk],
) -> HumanBenchmark:
    """The human questions every row is measured on; never trained on in either case.

    ``unseen-passages``: questions about passages no row trained on (does the tuning carry
    over to other documents?). ``trained-passages``: questions about the passages whose
    chunks the synthetic questions were written for, searched among those chunks: what the
    pipeline does, where the model is tuned on the documents it will later search.
    """
    if eval_on == "trained-passages":
        return human_benchmark(fit_passages, fit_chunks)
    if eval_on == "unseen-passages":
        return human_benchmark(heldout_passages, heldout_chunks)
    raise ValueError(f"eval_on must be unseen-passages or trained-passages, not {eval_on!r}")


def table_rows(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with changes in points vs base and vs plain (where those rows exist)."""
    base, plain = results.get("base"), results.get("plain")
    rows = []
    for name, r in results.items():
        row = {"row": name, "label": LABELS.get(name, name), **r}
        for ref_name, ref in (("base", base), ("plain", plain)):
            if ref is not None and name != ref_name:
                row[f"vs_{ref_name}"] = {
                    "heldout_ndcg": round(100 * (r["heldout"]["cosine_ndcg@10"] - ref["heldout"]["cosine_ndcg@10"]), 2),
                    "heldout_acc1": round(100 * (r["heldout"]["cosine_accuracy@1"] - ref["heldout"]["cosine_accuracy@1"]), 2),
                    "guard_ndcg": round(100 * (r["guard"]["cosine_ndcg@10"] - ref["guard"]["cosine_ndcg@10"]), 2),
                }
        rows.append(row)
    return rows


def result_table(rows: Sequence[dict[str, Any]]) -> str:
    head = [
        "config", "held-out NDCG@10", "held-out Acc@1", "guard NDCG@10",
        "Δ NDCG vs base", "Δ Acc@1 vs base", "Δ guard vs base", "Δ NDCG vs plain", "Δ guard vs plain",
    ]

    def d(row: dict[str, Any], ref: str, key: str) -> str:
        return f"{row[f'vs_{ref}'][key]:+.1f}" if f"vs_{ref}" in row else "—"

    return markdown_table(head, ([
        r["label"] + (f" (α={r['alpha']:g})" if r.get("alpha") is not None else ""),
        f"{r['heldout']['cosine_ndcg@10']:.4f}",
        f"{r['heldout']['cosine_accuracy@1']:.4f}",
        f"{r['guard']['cosine_ndcg@10']:.4f}",
        d(r, "base", "heldout_ndcg"), d(r, "base", "heldout_acc1"), d(r, "base", "guard_ndcg"),
        d(r, "plain", "heldout_ndcg"), d(r, "plain", "guard_ndcg"),
    ] for r in rows))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.training_recipes", description=__doc__.splitlines()[0])
    add = p.add_argument
    add("--data", type=Path, default=ch.DEFAULT_DATA)
    add("--n-passages", type=int, default=60, help="passages for train + held out (default: %(default)s, the cached ones)")
    add("--heldout-ratio", type=float, default=0.5)
    add("--val-ratio", type=float, default=0.2, help="share of the train passages used for validation")
    add("--guard-passages", type=int, default=40, help="passages of the reported guard set (after the first N)")
    add("--alpha-guard-passages", type=int, default=40, help="passages of the α-choosing guard set (after those)")
    add("--extra-train-passages", type=int, default=0,
        help="more passages to train on, taken after the α-guard ones (never held out, validated or guarded)")
    add("--eval-on", choices=("unseen-passages", "trained-passages"), default="unseen-passages",
        help="whose human questions are the held-out set: those of passages never trained on (default), or "
             "those of the passages the synthetic questions were written for, as in the pipeline, where the "
             "model is tuned on the documents it will search (the human questions are never trained on)")
    add("--chunk-titles", action="store_true",
        help="put each passage's title on a line before each of its chunks, everywhere: what the LLM was asked "
             "about (python -m bench.cmrc_human --chunk-titles fills the cache), what is trained on and searched")
    add("--seed", type=int, default=42)
    add("--train-seed", type=int, default=None,
        help="seed of the training rows only (batch order, hard-negative sampling); the split and the cached "
             "questions keep --seed. Rerun a row with other values to see how far it moves by chance "
             "(default: --seed)")
    add("--epochs", type=int, default=3)
    add("--questions-per-chunk", type=int, default=Settings().questions_per_chunk,
        help="questions the LLM was asked per chunk (picks the cached answers; default: the pipeline's)")
    add("--cache-dir", type=Path, default=Path(".cache"))
    add("--base-model", default=ch.DEFAULT_BASE_MODEL)
    add("--rows", default=",".join(["base", *RECIPES]), help="comma-separated rows to run, in order")
    add("--out", type=Path, default=Path("outputs/bench_training_recipes"))
    add("--eval-batch-size", type=int, default=32)
    add("--alphas", type=lambda t: [float(a) for a in t.split(",")], default=Settings().interpolation_alphas,
        help="α grid for +alpha (0 and 1 are always tried; default: the pipeline's)")
    add("--model", action="append", default=[], metavar="ROW=PATH",
        help="a model an earlier run trained for ROW (e.g. to interpolate it with +alpha without retraining)")
    add("--include", action="append", metavar="RESULTS_JSON",
        help="rows of an earlier run on the same data (e.g. base and plain), to share one table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    unknown = [r for r in rows if r != "base" and r not in RECIPES]
    if unknown:
        print(f"error: unknown rows {unknown}; choose from base, {', '.join(RECIPES)}", file=sys.stderr)
        return 2
    try:
        return _run(args, rows)
    except (NotCachedError, BenchInputError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace, rows: list[str]) -> int:
    from sentence_transformers import SentenceTransformer

    from tasks.evaluation.evaluate import evaluate_loaded_model, evaluate_model
    from tasks.training.interpolation import interpolate_with_base
    from tasks.training.trainer import train_model

    out: Path = args.out
    common = dict(
        seed=args.seed, llm_backend="gguf", cache_dir=args.cache_dir, epochs=args.epochs,
        questions_per_chunk=args.questions_per_chunk,
        eval_batch_size=args.eval_batch_size, interpolation_alphas=[],
        # Only what the cache holds: a retry would ask the LLM again with another seed.
        generation_retries=0, max_failed_share=1.0,
    )
    filtered = Settings(**common)
    unfiltered = Settings(**common, filter_non_questions=False, max_copied_chars=0, skip_low_value_chunks=False)

    everything = load_squad(args.data)
    passages = everything[: args.n_passages]
    guard_passages = everything[args.n_passages : args.n_passages + args.guard_passages]
    after_guards = args.n_passages + args.guard_passages + args.alpha_guard_passages
    alpha_guard_passages = everything[args.n_passages + args.guard_passages : after_guards]
    extra_passages = everything[after_guards : after_guards + args.extra_train_passages]
    chunks = chunk_documents(build_documents(passages + extra_passages), filtered.chunk_size,
                             filtered.chunk_overlap)
    train_passages, heldout_passages = ch.split_passages(passages, args.heldout_ratio, args.seed)
    fit_passages, val_passages = ch.split_passages(train_passages, args.val_ratio, args.seed)
    fit_passages += extra_passages
    ids = {name: {p.doc_id for p in ps} for name, ps in
           (("fit", fit_passages), ("val", val_passages), ("heldout", heldout_passages),
            ("guard", guard_passages), ("alpha_guard", alpha_guard_passages))}
    names = list(ids)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not ids[a] & ids[b], f"{a} and {b} passages overlap"

    fit_chunks = [c for c in chunks if c.doc_id in ids["fit"]]
    val_chunks = [c for c in chunks if c.doc_id in ids["val"]]
    heldout_chunks = [c for c in chunks if c.doc_id in ids["heldout"]]
    # Relevance is found on the plain chunks (their offsets in the passage); titles come after.
    heldout = heldout_benchmark(args.eval_on, fit_passages, fit_chunks, heldout_passages, heldout_chunks).dataset
    if args.chunk_titles:
        all_passages = passages + extra_passages
        heldout = ch.titled_dataset(heldout, ch.titled_chunks(chunks, all_passages))
        fit_chunks, val_chunks = ch.titled_chunks(fit_chunks, all_passages), ch.titled_chunks(val_chunks, all_passages)
    # The cache was filled for all train passages' chunks by bench.cmrc_human.
    datasets: dict[str, Path] = {}
    for tag, settings in (("filtered", filtered), ("unfiltered", unfiltered)):
        ds, stats = ch.synthetic_train_dataset(fit_chunks, settings, no_llm, show_progress=False)
        datasets[tag] = out / f"train_{tag}.json"
        ds.save(datasets[tag])
        log.info("%s train pairs: %d (cache hits %d, dropped %s)", tag, len(ds.pairs()), stats.cache_hits, stats.dropped)
    val_ds, _ = ch.synthetic_train_dataset(val_chunks, filtered, no_llm, show_progress=False)
    val_ds.save(out / "val_dataset.json")
    guard = guard_benchmark(guard_passages, filtered, args.chunk_titles)
    alpha_guard = guard_benchmark(alpha_guard_passages, filtered, args.chunk_titles)
    heldout.save(out / "human_heldout_dataset.json")
    guard.save(out / "guard_dataset.json")
    alpha_guard.save(out / "alpha_guard_dataset.json")
    data = {
        "questions_per_chunk": args.questions_per_chunk, "eval_on": args.eval_on, "chunk_titles": args.chunk_titles,
        "passages": len(passages), "extra_train_passages": len(extra_passages),
        "fit_passages": len(fit_passages), "val_passages": len(val_passages),
        "heldout_passages": len(heldout_passages), "guard_passages": len(guard_passages),
        "alpha_guard_passages": len(alpha_guard_passages),
        "train_pairs_filtered": len(QADataset.load(datasets["filtered"]).pairs()),
        "train_pairs_unfiltered": len(QADataset.load(datasets["unfiltered"]).pairs()),
        "val_queries": len(val_ds.queries), "val_chunks": len(val_ds.corpus),
        "heldout_queries": len(heldout.queries), "heldout_chunks": len(heldout.corpus),
        "guard_queries": len(guard.queries), "guard_chunks": len(guard.corpus),
        "alpha_guard_queries": len(alpha_guard.queries), "alpha_guard_chunks": len(alpha_guard.corpus),
    }
    print(f"data: {data}", file=sys.stderr)
    base_path = ch.resolve_base_model(args.base_model, filtered)

    def measure(model) -> dict[str, dict[str, float]]:
        pick = lambda m: {k: m[k] for k, _ in METRICS}  # noqa: E731
        return {
            "heldout": pick(evaluate_loaded_model(model, heldout, batch_size=args.eval_batch_size, name="heldout")),
            "guard": pick(evaluate_loaded_model(model, guard, batch_size=args.eval_batch_size, name="guard")),
        }

    results: dict[str, dict[str, Any]] = {}
    for earlier in args.include or []:
        prior = json.loads(Path(earlier).read_text(encoding="utf-8"))
        if prior["data"] != data or prior["epochs"] != args.epochs:
            raise BenchInputError(f"{earlier} was measured on other data or epochs: cannot share a table")
        for row in prior["rows"]:
            if row["row"] not in rows:
                results[row["row"]] = {k: v for k, v in row.items() if k not in ("row", "label", "vs_base", "vs_plain")}

    def save() -> str:
        table = result_table(table_rows(results))
        write_results(out, {"data": data, "epochs": args.epochs, "rows": table_rows(results)},
                      f"# Training recipes on human CMRC questions\n\n{data}\n\n{table}\n")
        return table

    with tempfile.TemporaryDirectory(prefix="bench-recipes-") as tmp:
        models: dict[str, Path] = {}
        for spec in args.model:
            row, _, path = spec.partition("=")
            if row not in RECIPES or not (Path(path) / "modules.json").is_file():
                raise BenchInputError(f"--model {spec}: need ROW=PATH of a sentence-transformers folder")
            models[row] = Path(path)
        for name in rows:
            if name == "base":
                results["base"] = measure(SentenceTransformer(base_path))
            elif RECIPES[name].get("interpolate"):
                if not models:
                    raise BenchInputError(f"row {name} needs a trained row before it")
                source = list(models)[-1]
                model = SentenceTransformer(str(models[source]))
                base_state = SentenceTransformer(base_path).state_dict()
                chosen, grid = interpolate_with_base(
                    model, base_state, val_ds, alpha_guard, args.alphas,
                    Settings().alpha_guard_margin, batch_size=args.eval_batch_size,
                )
                results[name] = {
                    **measure(model), "alpha": chosen.alpha, "of": source, "alpha_grid": [asdict(r) for r in grid],
                }
            else:
                recipe = RECIPES[name]
                train_seed = args.seed if args.train_seed is None else args.train_seed
                cfg = Settings(**{**common, **recipe["train"], "seed": train_seed})
                model_dir = Path(tmp) / name
                r = train_model(
                    base_path, datasets["filtered" if recipe["filters"] else "unfiltered"], model_dir, cfg,
                    val_dataset=out / "val_dataset.json" if cfg.keep_best_checkpoint else None,
                )
                models[name] = model_dir
                results[name] = {
                    **measure(SentenceTransformer(str(model_dir))),
                    "training": {k: getattr(r, k) for k in ("steps", "n_pairs", "seconds", "loss", "learning_rate",
                                                            "hard_negatives", "best_checkpoint", "best_val_ndcg")},
                    "settings": recipe["train"], "train_seed": train_seed,
                }
            log.info("%s: %s", name, {k: v for k, v in results[name].items() if k in ("heldout", "guard", "alpha")})
            save()
    print()
    print(save())
    print(f"\nOutput folder: {out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
