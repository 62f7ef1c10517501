"""Benchmark: does fine-tuning on synthetic questions help retrieve HUMAN questions?

The pipeline's own validation set is made of questions the same LLM wrote, so it can
reward a model for learning the LLM's style. What the synthetic questions must
ultimately serve is retrieval of questions people ask. CMRC 2018 has both: Chinese
Wikipedia passages and questions written by people, with the answer span marked. This
script

1. turns CMRC passages into pipeline documents (no PDF, ``tasks.evaluation.squad``) and
   chunks them like the pipeline (``tasks.chunks.chunking``, 300/30 by default);
2. splits the passages into train and held-out (``tasks.chunks.split``: whole passages, by a
   hash of the seed and the passage text);
3. has the LLM write questions for the TRAIN chunks only (``tasks.questions.generation``,
   through the shared per-chunk cache) and builds the training set;
4. builds the human benchmark (``tasks.evaluation.squad.human_benchmark``): queries =
   the human questions of the held-out passages, corpus = every chunk of those
   passages, relevant = the chunk(s) that contain the marked answer span;
5. evaluates the base model and, per training config, a model fine-tuned on the
   synthetic pairs, on the human benchmark;
6. prints and writes the table (``results.json``, ``results.md`` under ``--out``).

Run from the repository root::

    .venv/bin/python -m bench.cmrc_human --n-passages 60 --heldout-ratio 0.5
    .venv/bin/python -m bench.cmrc_human --config 'learning_rate=1e-5,loss_scale=100' --config 'epochs=1'
    .venv/bin/python -m bench.cmrc_human --help

Data: ``../shared/data/cmrc2018_trial.json`` (SQuAD format; CC BY-SA 4.0,
https://github.com/ymcui/cmrc2018).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bench.harness import CMRC_DATA, BenchInputError, markdown_table, report_results, setup_logging
from flows.settings_cli import explain
from tasks.chunks.chunking import chunk_documents
from tasks.chunks.split import split_documents
from tasks.core.errors import PipelineError
from tasks.core.qa_dataset import QADataset, build_dataset
from tasks.core.records import Chunk
from tasks.core.settings import SETTING_GROUPS, Settings
from tasks.evaluation.squad import Passage, build_documents, human_benchmark, load_squad
from tasks.questions.generation import GenerationStats, generate_questions
from tasks.questions.llm.base import QuestionWriter
from tasks.questions.round_trip import keep_by_rank

log = logging.getLogger("bench.cmrc_human")

DEFAULT_DATA = CMRC_DATA
DEFAULT_BASE_MODEL = "models/base/multilingual-e5-small"
DEFAULT_OUT = Path("outputs/bench_cmrc")
DEFAULT_CONFIGS = ("loss_scale=20", "loss_scale=100")

# Only what the training stage reads may differ between configs: the training set and the
# benchmark are built once, so a chunking or generation setting here would be ignored.
TRAIN_FIELDS = SETTING_GROUPS["training"]

# (InformationRetrievalEvaluator key, column title) of the table, in order.
TABLE_METRICS = (("cosine_ndcg@10", "NDCG@10"), ("cosine_accuracy@1", "Acc@1"), ("cosine_mrr@10", "MRR@10"))


# --------------------------------------------------------------------------- data


def select_passages(passages: Sequence[Passage], n_passages: int | None) -> list[Passage]:
    """The first ``n_passages`` in file order (all when None): a larger N keeps the smaller set."""
    return list(passages if n_passages is None else passages[:n_passages])


def titled_chunks(chunks: Sequence[Chunk], passages: Sequence[Passage]) -> list[Chunk]:
    """Each chunk with its passage's title on a line before its text (a "contextual chunk
    header"); the chunk id stays, so relevance computed on the plain chunks still holds.

    A chunk from the middle of an article often never names its subject ("体长可达50公分"),
    while a person's question does ("黄鳍紫鱼体长多少？"). With the title in front, both the
    question writer and the embedding model see what the chunk is about.

    Example::

        >>> p = Passage("e1", "黄鳍紫鱼", ("体长可达50公分。",), ())
        >>> titled_chunks([Chunk("c1", p.doc_id, "e1", 1, "体长可达50公分。")], [p])[0].text
        '黄鳍紫鱼\\n体长可达50公分。'
    """
    titles = {p.doc_id: p.title for p in passages}
    return [replace(c, text=f"{titles[c.doc_id]}\n{c.text}") if titles.get(c.doc_id) else c for c in chunks]


def titled_dataset(dataset: QADataset, chunks: Sequence[Chunk]) -> QADataset:
    """``dataset`` with its corpus texts taken from ``chunks`` (by chunk id), e.g. titled ones."""
    text = {c.chunk_id: c.text for c in chunks}
    corpus = {cid: text.get(cid, t) for cid, t in dataset.corpus.items()}
    return QADataset(queries=dataset.queries, corpus=corpus, relevant_docs=dataset.relevant_docs)


def split_passages(passages: Sequence[Passage], heldout_ratio: float, seed: int) -> tuple[list[Passage], list[Passage]]:
    """(train, held-out) passages by the pipeline's document split."""
    plan = split_documents([p.doc_id for p in passages], heldout_ratio, seed)
    if plan.by != "document":
        raise BenchInputError("need at least two passages to hold some out")
    heldout = set(plan.val_ids)
    return [p for p in passages if p.doc_id not in heldout], [p for p in passages if p.doc_id in heldout]


# ------------------------------------------------------------------ synthetic side


def synthetic_train_dataset(
    chunks: Sequence[Chunk],
    settings: Settings,
    writer_factory: Callable[[Settings], QuestionWriter],
    show_progress: bool = True,
) -> tuple[QADataset, GenerationStats]:
    """LLM questions for ``chunks`` (the train chunks) through the shared per-chunk cache."""
    result = generate_questions(list(chunks), settings, writer_factory, show_progress=show_progress)
    triples = [(q.qid, q.chunk_id, q.question) for q in result.questions]
    return build_dataset({c.chunk_id: c.text for c in chunks}, triples), result.stats


def unfiltered_settings(settings: Settings) -> Settings:
    """``settings`` with every question filter, the chunk skip and the retries off: the
    same cached answers, kept as the LLM wrote them (parsed, nothing else)."""
    return settings.model_copy(update=dict(
        filter_non_questions=False, max_copied_chars=0, min_question_chars=1, max_question_chars=10_000,
        filter_non_chinese=False, filter_prompt_echo=False, filter_duplicates=False,
        skip_low_value_chunks=False, generation_retries=0, max_failed_share=1.0,
    ))


def base_model_ranks(base_path: str, dataset: QADataset, batch_size: int) -> dict[str, int]:
    """Rank of each training question's own chunk among the training chunks, by the base model."""
    from sentence_transformers import SentenceTransformer

    from tasks.questions.round_trip import own_chunk_ranks

    return own_chunk_ranks(SentenceTransformer(base_path), dataset, batch_size)


# ------------------------------------------------------------------ configs, models


def parse_config(text: str, fields: Sequence[str] = TRAIN_FIELDS) -> dict[str, str]:
    """``'learning_rate=2e-5,epochs=3'`` → ``{'learning_rate': '2e-5', 'epochs': '3'}``.

    Only ``fields`` are accepted (default: the training stage's); values stay strings here
    and are converted by the Settings model, which also checks them. ``none`` clears a value.
    """
    out: dict[str, str] = {}
    for part in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not value.strip():
            raise BenchInputError(f"config {text!r}: {part!r} is not NAME=VALUE")
        if key not in fields:
            raise BenchInputError(f"config {text!r}: {key!r} is not one of {', '.join(fields)}")
        if key in out:
            raise BenchInputError(f"config {text!r}: {key} is given twice")
        out[key] = value.strip()
    return out


def config_settings(base: Settings, overrides: dict[str, str]) -> Settings:
    """``base`` with ``overrides`` applied and validated (a typo in a value fails here,
    before any generation)."""
    values = {k: (None if v.lower() in ("none", "null") else v) for k, v in overrides.items()}
    try:
        return Settings(**{**base.model_dump(), **values})
    except ValidationError as e:
        raise BenchInputError(f"config {overrides}: {explain(e)}") from e


def resolve_base_model(spec: str, settings: Settings) -> str:
    """A sentence-transformers folder for ``spec``: used as is when it is one, else
    prepared by the pipeline (bundled e5, a transformers folder, a hub id)."""
    if (Path(spec) / "modules.json").is_file():
        return spec
    from tasks.models.base import prepare_base_model

    return prepare_base_model(Settings(**{**settings.model_dump(), "base_model": spec})).path


def config_slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "default"


# ------------------------------------------------------------------------- report


def result_row(
    label: str, metrics: dict[str, float], train_pairs: int, queries: int, base: dict[str, float] | None
) -> dict[str, Any]:
    """One table row: the metrics and, for a fine-tuned model, the change vs base in points."""
    row: dict[str, Any] = {"config": label, "train_pairs": train_pairs, "human_queries": queries, "metrics": metrics}
    if base is not None:
        row["change_pts"] = {k: round(100 * (metrics[k] - base[k]), 2) for k, _ in TABLE_METRICS}
    return row


def result_table(rows: Sequence[dict[str, Any]]) -> str:
    """The results as a markdown table (also readable on a console)."""
    titles = [t for _, t in TABLE_METRICS]
    head = ["config", "train pairs", "human queries", *titles, *(f"Δ {t} (pts)" for t in titles)]
    body = []
    for row in rows:
        change = row.get("change_pts")
        body.append([
            row["config"],
            str(row["train_pairs"]) if change is not None else "—",
            str(row["human_queries"]),
            *(f"{row['metrics'][k]:.4f}" for k, _ in TABLE_METRICS),
            *((f"{change[k]:+.1f}" for k, _ in TABLE_METRICS) if change is not None else ["—"] * len(titles)),
        ])
    return markdown_table(head, body)


class StageTimer:
    """Wall seconds per named stage, in the order they ran."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(time.perf_counter() - started, 2)
            log.info("%s: %.1f s", name, self.seconds[name])

    def lines(self) -> list[str]:
        rows = [*self.seconds.items(), ("total", sum(self.seconds.values()))]
        width = max(len(name) for name, _ in rows)
        return [f"{name:<{width}}  {s:8.1f} s" for name, s in rows]


def render_markdown(summary: dict[str, Any], table: str, timer: StageTimer) -> str:
    d = summary["data"]
    return "\n".join(
        [
            "# CMRC 2018 human-question benchmark",
            "",
            f"{d['passages']} passages ({d['train_passages']} train, {d['heldout_passages']} held out), "
            f"chunk size {summary['chunk_size']}/{summary['chunk_overlap']}, seed {summary['seed']}. "
            f"Train: {d['train_chunks']} chunks, {d['train_pairs']} synthetic pairs "
            f"({summary['llm_backend']}{': ' + summary['llm_model'] if summary['llm_model'] else ''}). "
            f"Held out: {d['human_queries']} human questions (of {d['human_questions_total']}; dropped "
            f"{d['human_dropped'] or 'none'}) against {d['heldout_chunks']} chunks. "
            f"Base model: `{summary['base_model']}`. Change is in points (×100) vs the base model.",
            "",
            table,
            "",
            "## Stage timings",
            "",
            "```",
            *timer.lines(),
            "```",
            "",
        ]
    )


# --------------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench.cmrc_human",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Configs: --config 'learning_rate=2e-5,epochs=3,loss_scale=20' (repeatable) sets training "
            f"fields ({', '.join(TRAIN_FIELDS)}); the rest are the pipeline's defaults. "
            f"Default: {' and '.join(repr(c) for c in DEFAULT_CONFIGS)}."
        ),
    )
    add = p.add_argument
    add("--data", type=Path, default=DEFAULT_DATA, help="CMRC SQuAD-format JSON (default: %(default)s)")
    add("--n-passages", type=int, default=None, metavar="N",
        help="use the first N passages in file order (default: all)")
    add("--heldout-ratio", type=float, default=0.5, metavar="R",
        help="share of passages held out for the human benchmark (default: %(default)s)")
    add("--seed", type=int, default=42, help="split, generation and training seed (default: %(default)s)")
    add("--chunk-size", type=int, default=300, help="SentenceSplitter tokens (default: %(default)s)")
    add("--chunk-overlap", type=int, default=30, help="SentenceSplitter overlap (default: %(default)s)")
    add("--chunk-titles", action="store_true",
        help="put each passage's title on a line before each of its chunks: in what the LLM is asked about, "
             "what is trained on and what is searched (relevance is still found on the plain chunks)")
    add("--llm-backend", default="gguf", choices=["gguf", "openai", "vllm", "extractive"],
        help="question writer (default: %(default)s)")
    add("--llm-model", default=None, help="model for the backend (default: the backend's, e.g. the bundled GGUF)")
    add("--llm-base-url", default=None, help="for --llm-backend openai (default: the pipeline's)")
    add("--llm-threads", type=int, default=None,
        help="CPU threads for the gguf backend (default: all cores; 1 when another process is busy)")
    add("--cache-dir", type=Path, default=Path(".cache"),
        help="per-chunk generation cache, shared with the pipeline (default: %(default)s)")
    add("--models-dir", type=Path, default=Path("models"), help="converted and bundled models (default: %(default)s)")
    add("--base-model", default=DEFAULT_BASE_MODEL,
        help="sentence-transformers folder, or anything the pipeline's --base-model takes (default: %(default)s)")
    add("--config", action="append", default=None, metavar="NAME=VALUE,...",
        help="a training config; repeat for several")
    add("--human-train", action="store_true",
        help="also train each config on the HUMAN questions of the train passages (a control)")
    add("--unfiltered", action="store_true",
        help="also train each config on the questions with every filter off (no chunk skipped, no retry)")
    add("--round-trip-top-k", type=int, action="append", default=None, metavar="K",
        help="round-trip filter of the training questions with the base model: keep a question if its chunk "
             "is in the top K; repeat for several rows, 0 = off (default: the pipeline's round_trip_top_k)")
    add("--generation-retries", type=int, default=None, metavar="N",
        help="ask chunks without a usable question again up to N times (default: the pipeline's; "
             "0 keeps a run on cached answers only)")
    add("--eval-batch-size", type=int, default=32, help="texts per encoding batch in evaluation (default: %(default)s)")
    add("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: %(default)s)")
    add("--keep-models", action="store_true",
        help="keep the fine-tuned models under OUT/models (default: temporary, deleted)")
    add("--no-progress", action="store_true", help="no progress bars for generation")
    add("-v", "--verbose", action="store_true", help="log what the libraries do too")
    return p


def base_settings(args: argparse.Namespace) -> Settings:
    """The pipeline settings the bench shares with it (chunking, generation, model cache)."""
    values: dict[str, Any] = dict(
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        val_ratio=args.heldout_ratio,
        seed=args.seed,
        llm_backend=args.llm_backend,
        llm_model=args.llm_model,
        llm_threads=args.llm_threads,
        cache_dir=args.cache_dir,
        models_dir=args.models_dir,
        base_model=args.base_model,
        eval_batch_size=args.eval_batch_size,
    )
    if args.llm_base_url:
        values["llm_base_url"] = args.llm_base_url
    if args.generation_retries is not None:
        values["generation_retries"] = args.generation_retries
    try:
        return Settings(**values)
    except ValidationError as e:
        raise BenchInputError(explain(e)) from e


def main(argv: list[str] | None = None, writer_factory: Callable[[Settings], QuestionWriter] | None = None) -> int:
    """Run the benchmark; 0 on success, 2 for a bad command line, 1 for unusable data."""
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if writer_factory is None:
        from tasks.questions.llm import make_writer as writer_factory

    try:
        if args.n_passages is not None and args.n_passages < 2:
            raise BenchInputError("--n-passages must be at least 2 (one to train on, one to hold out)")
        if not 0 < args.heldout_ratio < 1:
            raise BenchInputError("--heldout-ratio must be between 0 and 1")
        if not args.data.is_file():
            raise BenchInputError(f"CMRC data file {args.data} does not exist")
        settings = base_settings(args)
        configs = [(c, config_settings(settings, parse_config(c))) for c in (args.config or DEFAULT_CONFIGS)]
        if len({label for label, _ in configs}) < len(configs):
            raise BenchInputError("a --config is given twice")
    except BenchInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    try:
        return _run(args, settings, configs, writer_factory)
    except (PipelineError, BenchInputError) as e:
        # Expected failures (too few pairs for a batch, too few passages): one line, no traceback.
        print(f"error: {e}", file=sys.stderr)
        return 1


def _run(
    args: argparse.Namespace,
    settings: Settings,
    configs: list[tuple[str, Settings]],
    writer_factory: Callable[[Settings], QuestionWriter],
) -> int:
    from tasks.evaluation.evaluate import evaluate_model
    from tasks.training.trainer import train_model

    out: Path = args.out
    timer = StageTimer()
    with timer("passages + chunks"):
        passages = select_passages(load_squad(args.data), args.n_passages)
        chunks = chunk_documents(build_documents(passages), settings.chunk_size, settings.chunk_overlap)
    with timer("split"):
        train_passages, heldout_passages = split_passages(passages, args.heldout_ratio, settings.seed)
        train_ids = {p.doc_id for p in train_passages}
        train_chunks = [c for c in chunks if c.doc_id in train_ids]
        heldout_chunks = [c for c in chunks if c.doc_id not in train_ids]
        # What the LLM, training and search see; relevance is found on the plain chunks.
        shown = titled_chunks(chunks, passages) if args.chunk_titles else chunks
        train_shown = [c for c in shown if c.doc_id in train_ids]
    print(
        f"{len(passages)} passages → {len(chunks)} chunks; train {len(train_passages)} passages / "
        f"{len(train_chunks)} chunks, held out {len(heldout_passages)} passages / {len(heldout_chunks)} chunks",
        file=sys.stderr,
    )
    with timer("questions (train chunks)"):
        train_ds, gen_stats = synthetic_train_dataset(
            train_shown, settings, writer_factory, show_progress=not args.no_progress
        )
        train_ds.save(out / "train_dataset.json")
    with timer("human benchmark"):
        bench = human_benchmark(heldout_passages, heldout_chunks)
        bench.dataset = titled_dataset(bench.dataset, shown)
        bench.dataset.save(out / "human_heldout_dataset.json")
    n_pairs, n_queries = len(train_ds.pairs()), len(bench.dataset.queries)
    if not n_queries:
        raise BenchInputError("no held-out human question has its answer inside a chunk: nothing to evaluate")
    print(
        f"train pairs: {n_pairs} (LLM requests {gen_stats.requests_sent}, cache hits {gen_stats.cache_hits}, "
        f"dropped {gen_stats.dropped or 'none'}); human queries: {n_queries} of {bench.n_questions} "
        f"(dropped {bench.dropped or 'none'}, answer offsets corrected {bench.offsets_corrected})",
        file=sys.stderr,
    )

    with timer("base model"):
        base_path = resolve_base_model(args.base_model, settings)
    with timer("evaluate base"):
        base_metrics = evaluate_model(base_path, bench.dataset, batch_size=settings.eval_batch_size, name="human")
    rows = [result_row("base", base_metrics, 0, n_queries, None)]
    training: dict[str, dict[str, Any]] = {}
    # What to train on: the synthetic pairs (filtered, and round-trip filtered for each K > 0),
    # with --unfiltered the same answers without any filter, and with --human-train the human
    # questions of the train passages (the same chunks): how far better questions could take the model.
    sources = []
    extra: dict[str, Any] = {}
    if args.unfiltered:
        with timer("questions, unfiltered"):
            raw_ds, raw_stats = synthetic_train_dataset(
                train_shown, unfiltered_settings(settings), writer_factory, show_progress=not args.no_progress
            )
            raw_ds.save(out / "train_dataset_unfiltered.json")
        extra["unfiltered_generation"] = raw_stats.to_dict()
        sources.append(("unfiltered: ", out / "train_dataset_unfiltered.json", len(raw_ds.pairs())))
    ks = args.round_trip_top_k if args.round_trip_top_k is not None else [settings.round_trip_top_k]
    if any(k > 0 for k in ks):
        with timer("round trip"):
            ranks = base_model_ranks(base_path, train_ds, settings.eval_batch_size)
        extra["round_trip"] = {}
    for k in ks:
        if k <= 0:
            sources.append(("", out / "train_dataset.json", n_pairs))
            continue
        kept, report = keep_by_rank(train_ds, ranks, k)
        kept.save(out / f"train_dataset_round_trip_k{k}.json")
        extra["round_trip"][str(k)] = report.to_dict()
        print(f"round trip k={k}: kept {report.kept} of {report.questions} (own chunk's rank: {report.rank_histogram})",
              file=sys.stderr)
        sources.append((f"round-trip k={k}: ", out / f"train_dataset_round_trip_k{k}.json", len(kept.pairs())))
    if args.human_train:
        human_train = titled_dataset(human_benchmark(train_passages, train_chunks).dataset, shown)
        human_train.save(out / "human_train_dataset.json")
        sources.append(("human-train: ", out / "human_train_dataset.json", len(human_train.pairs())))
    with tempfile.TemporaryDirectory(prefix="bench-cmrc-") as tmp:
        models_root = out / "models" if args.keep_models else Path(tmp)
        for prefix, dataset_path, pairs in sources:
            for config, cfg in configs:
                label = prefix + config
                model_dir = models_root / config_slug(label)
                with timer(f"train {label}"):
                    result = train_model(base_path, dataset_path, model_dir, cfg)
                with timer(f"evaluate {label}"):
                    metrics = evaluate_model(
                        str(model_dir), bench.dataset, batch_size=cfg.eval_batch_size, name="human"
                    )
                rows.append(result_row(label, metrics, pairs, n_queries, base_metrics))
                training[label] = {
                    "train_dataset": dataset_path.name,
                    **{k: getattr(cfg, k) for k in TRAIN_FIELDS},
                    "steps": result.steps,
                    "loss": result.loss,
                    "model_path": str(model_dir) if args.keep_models else None,
                }

    table = result_table(rows)
    summary = {
        "data": {
            "file": str(args.data),
            "passages": len(passages),
            "train_passages": len(train_passages),
            "heldout_passages": len(heldout_passages),
            "train_chunks": len(train_chunks),
            "heldout_chunks": len(heldout_chunks),
            "train_pairs": n_pairs,
            "chunk_titles": args.chunk_titles,
            "human_questions_total": bench.n_questions,
            "human_queries": n_queries,
            "human_dropped": bench.dropped,
            "answer_offsets_corrected": bench.offsets_corrected,
            "heldout_entries": [p.entry_id for p in heldout_passages],
        },
        "generation": gen_stats.to_dict(),
        **extra,
        "chunk_size": settings.chunk_size,
        "chunk_overlap": settings.chunk_overlap,
        "seed": settings.seed,
        "llm_backend": settings.resolved_llm_backend(),
        # The extractive writer has no model (Settings still names the GPU default for it).
        "llm_model": None if settings.resolved_llm_backend() == "extractive" else settings.resolved_llm_model(),
        "base_model": base_path,
        "rows": rows,
        "training": training,
        "seconds": timer.seconds,
    }
    report_results(out, summary, table, "\nstage timings:", *timer.lines(), f"\nOutput folder: {out.resolve()}",
                   markdown=render_markdown(summary, table, timer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
