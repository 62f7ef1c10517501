"""Benchmark: BM25, the base and the tuned dense model, and their fusions, on questions
people wrote — the comparison a user would make before shipping a fine-tuned model.

Data: a SQuAD-format file of passages with human questions (``--data``: CMRC 2018
Wikipedia by default, or CJRC court judgments, ``../shared/data/cjrc_legal_dev.json``).
The first ``--n-passages`` passages are chunked like the pipeline (300/30) and split, as
whole passages, into *train* and *held-out* (``--heldout-ratio``); the train passages
again into *fit* and *validation* (``--val-ratio``), as the pipeline splits documents.

1. The LLM writes questions for the train chunks (the pipeline's generation, through the
   shared per-chunk cache: a rerun asks nothing; ``--generation`` changes its settings,
   e.g. ``max_copied_chars=0`` keeps the questions that copy their chunk).
2. Each ``--config`` trains the base model on the fit questions (best epoch on the
   validation questions).
3. With ``--reranker`` (the default) a cross-encoder is trained for each model on the fit
   questions, its negatives from that model's fused first stage (the pipeline's reranker
   stage), and the first stage + reranker at each ``--rerank-depths`` joins the candidates.
4. For the base model and every tuned model, the retriever a run would ship is chosen on
   the synthetic validation questions (searched among all train chunks, the pipeline's
   ``--val-corpus all``) by the run's rule (``--retriever-margin``) — never on the human
   questions; the plain argmax on validation is shown beside it.
5. Everything is measured on two sets of human questions, chunk-level relevance, the same
   chunks for every row:
   * ``trained``: questions about the train passages, among all train chunks — what a
     user does: search the documents the model was tuned on;
   * ``held-out``: questions about passages the model never saw, among their chunks.

Rows: BM25 alone; BM25 over each chunk with its fit and validation questions (``--expansion``,
the default: no question is scored against its own chunk expanded by it); each dense model alone, fused with BM25 by RRF, its even fusion with the
top k reranked (the reranker's order alone, and mixed with the first stage's), the
retriever a run would ship with it, and the best retriever on validation. Run from the repository root::

    .venv/bin/python -m bench.retrievers --n-passages 40
    .venv/bin/python -m bench.retrievers --data ../shared/data/cjrc_legal_dev.json --n-passages 40 \\
        --config hard_negative_miner=dense --config hard_negative_miner=bm25
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import cmrc_human as ch
from bench.harness import BenchInputError, markdown_table, report_results, setup_logging
from tasks.chunks.chunking import chunk_documents
from tasks.core.qa_dataset import QADataset
from tasks.core.records import Chunk
from tasks.core.settings import SETTING_GROUPS, Settings
from tasks.evaluation.squad import Passage, build_documents, human_benchmark, load_squad
from tasks.questions.prompts import with_examples
from tasks.reporting.tables import metric_value

log = logging.getLogger("bench.retrievers")

DEFAULT_CONFIGS = ("hard_negative_miner=dense", "hard_negative_miner=bm25")
# The question writer's settings that --generation may change; the chunks and the split stay.
PATHS = ("models_dir", "cache_dir")  # where things are kept, not how they are made
GENERATION_FIELDS = tuple(f for f in SETTING_GROUPS["generation"] if f not in PATHS + ("seed",))
SETS = ("trained", "held-out")
RERANKER_FIELDS = tuple(f for f in SETTING_GROUPS["reranking"] if f not in PATHS + ("seed", "profile"))


def split_fit_val(passages: list[Passage], val_ratio: float, seed: int) -> tuple[list[Passage], list[Passage]]:
    """(fit, validation) passages, by the pipeline's document split."""
    return ch.split_passages(passages, val_ratio, seed)


def val_dataset(synthetic: QADataset, val_ids: set[str], train_chunks: list[Chunk]) -> QADataset:
    """The synthetic questions of the validation chunks, searched among all train chunks."""
    queries = {q: t for q, t in synthetic.queries.items() if set(synthetic.relevant_docs[q]) & val_ids}
    return QADataset(queries=queries, corpus={c.chunk_id: c.text for c in train_chunks},
                     relevant_docs={q: synthetic.relevant_docs[q] for q in queries})


def fit_dataset(synthetic: QADataset, fit_ids: set[str]) -> QADataset:
    queries = {q: t for q, t in synthetic.queries.items() if set(synthetic.relevant_docs[q]) <= fit_ids}
    corpus = {c: t for c, t in synthetic.corpus.items() if c in fit_ids}
    return QADataset(queries=queries, corpus=corpus, relevant_docs={q: synthetic.relevant_docs[q] for q in queries})


def without_examples(dataset: QADataset, k: int, seed: int) -> tuple[QADataset, list[str]]:
    """``dataset`` less ``k`` of its questions (chosen as the pipeline chooses prompt
    examples), and those questions' texts."""
    from tasks.evaluation.human_questions import HumanQuestion, pick_examples

    chosen = {q.qid for q in pick_examples([HumanQuestion(qid, text, "") for qid, text in dataset.queries.items()],
                                           k, seed)}
    kept = QADataset(queries={q: t for q, t in dataset.queries.items() if q not in chosen}, corpus=dataset.corpus,
                     relevant_docs={q: d for q, d in dataset.relevant_docs.items() if q not in chosen})
    return kept, [dataset.queries[q] for q in sorted(chosen)]


def retriever_rows(model_label: str, model_path: str, val: QADataset, tests: dict[str, QADataset],
                   settings: Settings, reranker: Path | None = None,
                   expansion: Path | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows for one dense model (alone, hybrid at its validation weight, RRF, with
    ``expansion`` its even fusion with BM25 over the chunks and their questions, and with
    ``reranker`` its even fusion reranked) on every test set."""
    from tasks.evaluation.evaluate import evaluate_retrievers
    from tasks.retrieval.retriever import candidates, choose, gains_over_even_mix

    specs = candidates(settings.fusion_weights, settings.bm25_tokenizer,
                       settings.rerank_depths if reranker else (), settings.rerank_weights, expansion is not None)
    val_grid = evaluate_retrievers(model_path, val, specs, settings.eval_batch_size, name="val", reranker_path=reranker,
                                   expansion=expansion)
    # What a run would ship with this model, chosen on validation by the run's rule, and the
    # plain argmax beside it.
    shipped = choose(val_grid, specs, settings.retriever_margin)
    argmax = choose(val_grid, specs)
    grids = {name: evaluate_retrievers(model_path, ds, [*specs], settings.eval_batch_size, name=name,
                                       reranker_path=reranker, expansion=expansion)
             for name, ds in tests.items()}
    reranked = [(f"{model_label} + BM25 fused, {s.label.split(' + ', 1)[1]}", s.label) for s in specs if s.rerank_k]
    rows = []
    for label, spec_label in ((f"{model_label} (dense)", "dense"), (f"{model_label} + BM25, RRF", "rrf"),
                              (f"{model_label} + BM25 fused, w=0.5", "hybrid w=0.5"),
                              *([(f"{model_label} + expanded BM25 fused, w=0.5", "hybrid w=0.5 (expanded)")]
                                if expansion is not None else []), *reranked,
                              (f"{model_label}, shipped: {shipped.label}", shipped.label),
                              (f"{model_label}, validation's best: {argmax.label}", argmax.label)):
        rows.append({"row": label, **{name: grid[spec_label] for name, grid in grids.items()}})
    # Every candidate on the human questions too: how far the validation choice lands from the best one.
    choice = {"model": model_label, "shipped": shipped.label, "validation_argmax": argmax.label,
              "val_gain_over_even_mix_se": gains_over_even_mix(val_grid, specs, ndigits=2),
              "val_ndcg@10": {k: round(metric_value(v, "ndcg@10"), 4) for k, v in val_grid.items()},
              **{f"{name}_ndcg@10": {k: round(metric_value(v, "ndcg@10"), 4) for k, v in grid.items()}
                 for name, grid in grids.items()}}
    bm25 = [{"row": "BM25", **{name: grid["bm25"] for name, grid in grids.items()}}]
    if expansion is not None:
        bm25.append({"row": "BM25 over each chunk and its questions", **{name: grid["bm25 (expanded)"]
                                                                         for name, grid in grids.items()}})
    return [*bm25, *rows], choice


def result_table(rows: list[dict[str, Any]]) -> str:
    head = ["retriever", *(f"{s} NDCG@10" for s in SETS), *(f"{s} Acc@1" for s in SETS)]
    return markdown_table(head, ([row["row"], *(f"{metric_value(row[s], 'ndcg@10'):.4f}" for s in SETS),
                                  *(f"{metric_value(row[s], 'accuracy@1'):.4f}" for s in SETS)] for row in rows))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.retrievers", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add = p.add_argument
    add("--data", type=Path, default=ch.DEFAULT_DATA, help="SQuAD-format JSON (default: %(default)s)")
    add("--n-passages", type=int, default=40, help="the first N passages (default: %(default)s)")
    add("--heldout-ratio", type=float, default=0.5, help="share of passages held out (default: %(default)s)")
    add("--val-ratio", type=float, default=0.2, help="share of the train passages for validation (default: %(default)s)")
    add("--seed", type=int, default=42)
    add("--retriever-margin", type=float, default=Settings.model_fields["retriever_margin"].default,
        help="the run's rule for the shipped retriever, in standard errors (default: %(default)s)")
    add("--generation", default="", metavar="NAME=VALUE,...",
        help="generation settings for the synthetic questions (e.g. max_copied_chars=0); default: the pipeline's")
    add("--config", action="append", default=None, metavar="NAME=VALUE,...",
        help=f"a training config (Settings fields); repeat for several (default: {' and '.join(DEFAULT_CONFIGS)})")
    add("--llm-backend", default="gguf", choices=["gguf", "openai", "vllm", "extractive"])
    add("--llm-model", default=None)
    add("--cache-dir", type=Path, default=Path(".cache"))
    add("--models-dir", type=Path, default=Path("models"))
    add("--base-model", default=None, help="default: the pipeline's base model (the bundled e5 on the CPU profile)")
    add("--out", type=Path, default=Path("outputs/bench_retrievers"))
    add("--reranker", action=argparse.BooleanOptionalAction, default=True,
        help="train a reranker for each model and add the reranked rows (default: %(default)s)")
    add("--rerank-depths", default=None, help="first-stage chunks the reranker re-scores, e.g. 20,50 "
        "(default: the pipeline's)")
    add("--reranker-config", default="", metavar="NAME=VALUE,...",
        help="reranker settings (e.g. reranker_epochs=2); default: the pipeline's")
    add("--expansion", action=argparse.BooleanOptionalAction, default=True,
        help="add the rows whose BM25 indexes each chunk with its fit and validation questions; no question is "
             "scored against its own chunk expanded by it (default: %(default)s)")
    add("--prompt-examples", type=int, default=0, metavar="N",
        help="show N human questions about the train passages to the question writer as examples of how people "
             "ask; they leave the trained test set (default: %(default)s)")
    add("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None, writer_factory=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    if writer_factory is None:
        from tasks.questions.llm import make_writer as writer_factory
    try:
        if not args.data.is_file():
            raise BenchInputError(f"data file {args.data} does not exist")
        settings = Settings(val_ratio=args.heldout_ratio, seed=args.seed, llm_backend=args.llm_backend,
                            llm_model=args.llm_model, cache_dir=args.cache_dir, models_dir=args.models_dir,
                            base_model=args.base_model, retriever_margin=args.retriever_margin)
        settings = ch.config_settings(settings, ch.parse_config(args.generation, GENERATION_FIELDS))
        settings = ch.config_settings(settings, ch.parse_config(args.reranker_config, RERANKER_FIELDS))
        if args.rerank_depths:
            settings = ch.config_settings(settings, {"rerank_depths": args.rerank_depths})
        configs = [(c, ch.config_settings(settings, ch.parse_config(c))) for c in (args.config or DEFAULT_CONFIGS)]
    except (BenchInputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return _run(args, settings, configs, writer_factory)


def _run(args, settings: Settings, configs, writer_factory) -> int:
    from tasks.training.trainer import train_model

    passages = ch.select_passages(load_squad(args.data), args.n_passages)
    chunks = chunk_documents(build_documents(passages), settings.chunk_size, settings.chunk_overlap)
    train_passages, heldout_passages = ch.split_passages(passages, args.heldout_ratio, args.seed)
    fit_passages, val_passages = split_fit_val(train_passages, args.val_ratio, args.seed)
    train_doc_ids = {p.doc_id for p in train_passages}
    train_chunks = [c for c in chunks if c.doc_id in train_doc_ids]
    heldout_chunks = [c for c in chunks if c.doc_id not in train_doc_ids]
    val_doc_ids = {p.doc_id for p in val_passages}
    val_ids = {c.chunk_id for c in train_chunks if c.doc_id in val_doc_ids}
    fit_ids = {c.chunk_id for c in train_chunks} - val_ids

    tests = {"trained": human_benchmark(train_passages, train_chunks).dataset,
             "held-out": human_benchmark(heldout_passages, heldout_chunks).dataset}
    tests["trained"], examples = without_examples(tests["trained"], args.prompt_examples, args.seed)
    writing = settings.model_copy(update={"prompt_template": with_examples(settings.prompt_template, examples)})
    synthetic, stats = ch.synthetic_train_dataset(train_chunks, writing, writer_factory,
                                                  show_progress=not args.no_progress)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    fit, val = fit_dataset(synthetic, fit_ids), val_dataset(synthetic, val_ids, train_chunks)
    fit.save(out / "fit_dataset.json")
    val.save(out / "val_dataset.json")
    expansion = None
    if args.expansion:
        from tasks.retrieval.expansion import chunk_questions, save_expansion

        expansion = out / "expansion.json"
        save_expansion(chunk_questions([fit, val]), expansion)
    print(f"{args.data.name}: {len(passages)} passages, {len(train_chunks)} train chunks "
          f"({len(fit_ids)} fit / {len(val_ids)} val), {len(heldout_chunks)} held-out chunks; "
          f"{len(fit.queries)} fit and {len(val.queries)} val questions (LLM requests {stats.requests_sent}); "
          f"human questions: trained {len(tests['trained'].queries)}, held-out {len(tests['held-out'].queries)}"
          f"{f' ({len(examples)} more were prompt examples)' if examples else ''}",
          file=sys.stderr)

    base_path = ch.resolve_base_model(args.base_model or settings.resolved_base_model(), settings)
    training = {}
    with tempfile.TemporaryDirectory(prefix="bench-retrievers-") as tmp:
        fit.save(Path(tmp) / "fit.json")
        val.save(Path(tmp) / "val.json")
        reranker = _reranker(args, base_path, base_path, Path(tmp) / "fit.json", Path(tmp) / "reranker-base",
                             settings, training, "base")
        rows, choices = retriever_rows("base", base_path, val, tests, settings, reranker, expansion)
        choices = [choices]
        for label, cfg in configs:
            model_dir = Path(tmp) / ch.config_slug(label)
            result = train_model(base_path, Path(tmp) / "fit.json", model_dir, cfg, val_dataset=Path(tmp) / "val.json")
            training[label] = {"steps": result.steps, "pairs": result.n_pairs, "best_checkpoint": result.best_checkpoint}
            reranker = _reranker(args, base_path, str(model_dir), Path(tmp) / "fit.json",
                                 Path(tmp) / f"reranker-{ch.config_slug(label)}", settings, training, label)
            model_rows, choice = retriever_rows(f"tuned [{label}]", str(model_dir), val, tests, settings, reranker,
                                                expansion)
            rows += model_rows[1 + (expansion is not None):]  # BM25 is the same for every model
            choices.append(choice)
    table = result_table(rows)
    summary = {"data": str(args.data), "generation_settings": args.generation, "prompt_examples": examples,
               "passages": len(passages),
               "train_chunks": len(train_chunks),
               "heldout_chunks": len(heldout_chunks), "fit_questions": len(fit.queries), "val_questions": len(val.queries),
               "human_questions": {k: len(v.queries) for k, v in tests.items()}, "generation": stats.to_dict(),
               "training": training, "choices": choices, "rows": rows}
    notes = [f"{c['model']}: a run would ship {c['shipped']} (margin {settings.retriever_margin:g} standard errors; "
             f"the best on validation: {c['validation_argmax']})" for c in choices]
    report_results(out, summary, table, *notes,
                   markdown=table + "\n\n" + json.dumps(choices, ensure_ascii=False, indent=1) + "\n")
    return 0


def _reranker(args, base_path: str, first_stage: str, fit: Path, out: Path, settings: Settings,
              training: dict, label: str) -> Path | None:
    """The pipeline's reranker, trained on the fit questions with ``first_stage``'s negatives."""
    if not args.reranker:
        return None
    from tasks.models.reranker import prepare_reranker_start
    from tasks.reranking.training import train_reranker

    start = prepare_reranker_start(settings.resolved_reranker_model(), Path(base_path), settings)
    result = train_reranker(str(start), first_stage, fit, out, settings)
    training[f"reranker [{label}]"] = {"steps": result.steps, "pairs": result.n_pairs, "seconds": result.train_seconds}
    return result.path


if __name__ == "__main__":
    sys.exit(main())
