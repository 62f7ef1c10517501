"""Benchmark: what the reranker's recipe is worth, on people's questions about court judgments.

The legal bench's split (``bench.retrievers``: the first ``--n-passages`` passages, half held
out, the trained half split into fit and validation; the LLM's questions through the shared
per-chunk cache). The first stage is the even fusion of BM25 and the base model, over each
set's chunks. One cross-encoder per ``--variant`` is trained from the base model's encoder
on the fit questions (or, ``src=human``, on the questions people wrote about the passages
after the first ``--n-passages``: a control that says what better training questions would
buy), its negatives the first stage's best wrong chunks. Rows per set (validation,
people's questions about the trained and the held-out passages): BM25, the dense model,
the fusion, the fusion's top ``depth`` (20) in the reranker's order, and mixed half and half
(z-scores) with the fusion's. NDCG@10 / accuracy@1, and the reranking milliseconds a question.

    .venv/bin/python -m bench.reranker_recipes --variant loss=mnrl,epochs=2 --variant loss=bce,epochs=2
    .venv/bin/python -m bench.reranker_recipes --variant loss=mnrl,epochs=2,src=human

A variant's fields: ``loss`` (``mnrl``: listwise, the pipeline's; ``bce``: binary
cross-entropy, positives weighted by the negatives), ``epochs``, ``lr``, ``bs`` (questions a
step for mnrl, pairs for bce), ``nneg`` (hard negatives), ``inbatch`` (mnrl's in-batch
negatives), ``head`` (``cls``: the library's head on the first token; ``pool``: a linear head
on the model's own pooling), ``src`` (``fit`` or ``human``), ``hn`` (with ``src=human``: that
many of those questions, drawn at random, e.g. as many as the fit set has, so that only their
quality differs), ``maxlen`` (tokens a pair), ``layers`` (keep the encoder's first N layers:
a smaller, faster reranker), ``pooler`` (``init``: an all-zero pooler initialised afresh, as
the pipeline does; ``zero``: kept as loaded, as the pipeline did before), ``depth`` (the
first stage's chunks the negatives are mined from and the reranker re-scores, as the
pipeline's ``rerank_k`` does both).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from bench import cmrc_human as ch
from bench.harness import BenchInputError, markdown_table, report_results, setup_logging

DEFAULTS = {"loss": "mnrl", "epochs": "2", "lr": "3e-4", "bs": "8", "nneg": "4", "inbatch": "4", "head": "cls",
            "src": "fit", "maxlen": "256", "layers": "all", "hn": "all", "pooler": "init", "depth": "20"}


def parse_variant(text: str) -> dict[str, str]:
    out = dict(DEFAULTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in DEFAULTS:
            raise BenchInputError(f"variant {text!r}: {part!r} is not one of {', '.join(DEFAULTS)}=VALUE")
        out[key] = value
    return out


def bench_sets(data: Path, n_passages: int, settings, writer_factory) -> dict:
    """fit, val (synthetic), trained, held-out (people's), and the people's questions about
    the passages after the first ``n_passages`` (the ``src=human`` control)."""
    from bench.retrievers import fit_dataset, split_fit_val, val_dataset
    from tasks.chunks.chunking import chunk_documents
    from tasks.evaluation.squad import build_documents, human_benchmark, load_squad

    everything = load_squad(data)
    passages = ch.select_passages(everything, n_passages)
    chunks = chunk_documents(build_documents(passages), settings.chunk_size, settings.chunk_overlap)
    train_p, held_p = ch.split_passages(passages, 0.5, settings.seed)
    fit_p, val_p = split_fit_val(train_p, 0.2, settings.seed)
    train_ids = {p.doc_id for p in train_p}
    train_chunks = [c for c in chunks if c.doc_id in train_ids]
    val_docs = {p.doc_id for p in val_p}
    val_ids = {c.chunk_id for c in train_chunks if c.doc_id in val_docs}
    synthetic, _ = ch.synthetic_train_dataset(train_chunks, settings, writer_factory, show_progress=False)
    rest = list(everything[n_passages:])
    rest_chunks = chunk_documents(build_documents(rest), settings.chunk_size, settings.chunk_overlap)
    return {"fit": fit_dataset(synthetic, {c.chunk_id for c in train_chunks} - val_ids),
            "val": val_dataset(synthetic, val_ids, train_chunks),
            "trained": human_benchmark(train_p, train_chunks).dataset,
            "held-out": human_benchmark(held_p, [c for c in chunks if c.doc_id not in train_ids]).dataset,
            "human": human_benchmark(rest, rest_chunks).dataset}


def first_stage(model, dataset):
    from tasks.retrieval.fusion import zscore_fusion
    from tasks.retrieval.lexical import BM25Index
    from tasks.retrieval.metrics import dense_scores, model_evaluator

    evaluator = model_evaluator(model, dataset, 32)
    dense = dense_scores(model, dataset, 32, evaluator)
    bm25 = BM25Index.build(evaluator.corpus_ids, evaluator.corpus).score_matrix(evaluator.queries)
    return evaluator, dense, bm25, zscore_fusion(dense, bm25, 0.5)


def train_variant(base: str, model, dataset, v: dict[str, str], seed: int, out: Path):
    """A cross-encoder trained on ``dataset`` by variant ``v``; (model, seconds)."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder, CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder import losses

    from tasks.reranking.pairs import first_stage_rows

    from tasks.core.settings import Settings
    from tasks.reranking.training import initialise_blank_pooler, max_length

    limit = max_length(base, Settings(reranker_max_length=int(v["maxlen"])))  # no more than the model's positions
    if v["hn"] != "all":
        dataset = sample_questions(dataset, int(v["hn"]), seed)
    evaluator, _, _, fused = first_stage(model, dataset)
    rows = first_stage_rows(dataset, fused, evaluator.queries_ids, evaluator.corpus_ids, int(v["nneg"]),
                            int(v["depth"]))
    torch.manual_seed(seed)
    if v["head"] == "pool":
        from sentence_transformers.base.modules import Dense
        from torch import nn

        encoder = [m for m in model if type(m).__name__ != "Normalize"]
        ce = CrossEncoder(modules=[*encoder, Dense(model.get_sentence_embedding_dimension(), 1,
                                                   activation_function=nn.Identity(), module_output_name="scores")])
        ce.max_seq_length = limit
    else:
        ce = CrossEncoder(base, num_labels=1, max_length=limit)
        if v["pooler"] == "init":
            initialise_blank_pooler(ce)
    if v["layers"] != "all":
        keep_layers(ce, int(v["layers"]))
    ce.model.get_input_embeddings().weight.requires_grad_(False)
    if v["loss"] == "bce":
        pairs = [(r["query"], r[k], float(k == "positive")) for r in rows for k in r if k != "query"]
        train = Dataset.from_dict({"query": [p[0] for p in pairs], "passage": [p[1] for p in pairs],
                                   "label": [p[2] for p in pairs]})
        loss = losses.BinaryCrossEntropyLoss(ce, pos_weight=torch.tensor(float(v["nneg"])))
    else:
        train = Dataset.from_list(rows)
        loss = losses.MultipleNegativesRankingLoss(ce, num_negatives=int(v["inbatch"]))
    args = CrossEncoderTrainingArguments(output_dir=str(out), num_train_epochs=float(v["epochs"]),
                                         per_device_train_batch_size=int(v["bs"]), learning_rate=float(v["lr"]),
                                         warmup_steps=0.1, save_strategy="no", report_to="none", seed=seed,
                                         use_cpu=True, activation_checkpointing=True,  # as the pipeline trains it
                                         batch_sampler="no_duplicates" if v["loss"] == "mnrl" else "batch_sampler")
    started = time.monotonic()
    CrossEncoderTrainer(model=ce, args=args, train_dataset=train.shuffle(seed=seed), loss=loss).train()
    return ce, time.monotonic() - started


def sample_questions(dataset, n: int, seed: int):
    """``n`` of ``dataset``'s questions drawn at random, with the whole corpus."""
    import random

    from tasks.core.qa_dataset import QADataset

    keep = set(random.Random(seed).sample(sorted(dataset.queries), min(n, len(dataset.queries))))
    return QADataset(queries={q: t for q, t in dataset.queries.items() if q in keep}, corpus=dataset.corpus,
                     relevant_docs={q: d for q, d in dataset.relevant_docs.items() if q in keep})


def keep_layers(ce, n: int) -> None:
    """Cut the cross-encoder's encoder to its first ``n`` layers."""
    encoder = ce.model.base_model
    encoder.encoder.layer = encoder.encoder.layer[:n]
    encoder.config.num_hidden_layers = n


def rows_for(name: str, dataset, model, reranker, depth: int) -> list[dict]:
    from tasks.retrieval.metrics import metrics_from_scores
    from tasks.retrieval.rerank import rerank

    evaluator, dense, bm25, fused = first_stage(model, dataset)
    scorer = reranker.scorer(evaluator.queries, evaluator.corpus)
    started = time.monotonic()
    alone = rerank(fused, depth, scorer, evaluator.corpus_ids)
    ms = (time.monotonic() - started) * 1000 / len(evaluator.queries)
    mixed = rerank(fused, depth, scorer, evaluator.corpus_ids, 0.5)
    reranked = f"+ rerank@{depth}"
    out = []
    for label, scores in (("bm25", bm25), ("dense", dense), ("fused w=0.5", fused), (reranked, alone),
                          (f"{reranked} mix 0.5", mixed)):
        m = metrics_from_scores(dataset, scores, "x", evaluator)
        out.append({"set": name, "retriever": label, "ndcg@10": round(m["x_ndcg@10"], 4),
                    "accuracy@1": round(m["x_accuracy@1"], 4), "questions": len(evaluator.queries),
                    **({"rerank_ms_per_question": round(ms)} if label == reranked else {})})
    return out


def main(argv: list[str] | None = None) -> int:
    import tempfile

    from sentence_transformers import SentenceTransformer

    from tasks.core.settings import Settings
    from tasks.questions.llm import make_writer
    from tasks.retrieval.rerank import CrossEncoderReranker

    p = argparse.ArgumentParser(prog="python -m bench.reranker_recipes", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("../shared/data/cjrc_legal_dev.json"))
    p.add_argument("--n-passages", type=int, default=40)
    p.add_argument("--variant", action="append", default=None, metavar="NAME=VALUE,...")
    p.add_argument("--cache-dir", type=Path, default=Path(".cache"))
    p.add_argument("--llm-backend", default="gguf")
    p.add_argument("--base-model", default=None, help="default: the pipeline's (the bundled e5 on the CPU profile)")
    p.add_argument("--out", type=Path, default=Path("outputs/bench_reranker_recipes"))
    args = p.parse_args(argv)
    setup_logging()
    try:
        variants = [(v, parse_variant(v)) for v in (args.variant or ["loss=mnrl"])]
        if not args.data.is_file():
            raise BenchInputError(f"data file {args.data} does not exist")
    except BenchInputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    settings = Settings(val_ratio=0.5, seed=42, llm_backend=args.llm_backend, cache_dir=args.cache_dir)
    base = ch.resolve_base_model(args.base_model or settings.resolved_base_model(), settings)
    model = SentenceTransformer(base)
    sets = bench_sets(args.data, args.n_passages, settings, make_writer)
    results, table = [], []
    for label, v in variants:
        with tempfile.TemporaryDirectory() as tmp:
            ce, seconds = train_variant(base, model, sets["human" if v["src"] == "human" else "fit"], v, settings.seed,
                                        Path(tmp))
        reranker = CrossEncoderReranker("(in memory)", model=ce)
        for name in ("val", "trained", "held-out"):
            for row in rows_for(name, sets[name], model, reranker, int(v["depth"])):
                results.append({"variant": label, "train_seconds": round(seconds), **row})
                table.append([label, name, row["retriever"], f"{row['ndcg@10']:.4f}", f"{row['accuracy@1']:.4f}"])
    report_results(args.out, {"data": str(args.data), "n_passages": args.n_passages, "rows": results},
                   markdown_table(["variant", "set", "retriever", "NDCG@10", "Acc@1"], table, left=(0, 1, 2)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
