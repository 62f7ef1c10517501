"""Benchmark: where a model misses on human questions, and what a title in the chunk is worth.

Takes the held-out human questions of ``bench.training_recipes`` (same passages, same
split, same chunks) and, for one model at a time:

* counts the questions whose right chunk is not ranked first, and of those, how many lost
  to a *sibling*: another chunk of the same passage;
* counts the questions that name their passage's subject (the CMRC title) while their
  answer's chunk does not contain it, and how many of those are missed: a chunk in the
  middle of an article says "本鱼" or nothing where the question says "黄鳍紫鱼";
* measures NDCG@10 and Acc@1 twice, on the chunks as the pipeline embeds them and with the
  passage's title on a line before each chunk (the naive way against a "contextual chunk
  header").

No training and no LLM: about a minute per model on 2 cores::

    .venv/bin/python -m bench.base_failures
    .venv/bin/python -m bench.base_failures --model models/current
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from bench import cmrc_human as ch
from bench.harness import markdown_table
from tasks.chunks.chunking import chunk_documents
from tasks.core.qa_dataset import QADataset
from tasks.core.settings import Settings
from tasks.evaluation.squad import build_documents, human_benchmark, load_squad


@dataclass(frozen=True)
class Misses:
    questions: int
    missed: int  # right chunk not ranked first
    lost_to_sibling: int  # ... and the first one is another chunk of the same passage
    name_subject_absent: int  # questions naming the passage title that their chunk lacks
    name_subject_absent_missed: int


def count_misses(
    dataset: QADataset,
    top1: Mapping[str, str],
    chunk_doc: Mapping[str, str],
    doc_title: Mapping[str, str],
) -> Misses:
    """Tally misses from each question's top-ranked chunk id (``top1``).

    A title's part before a bracket counts as the subject ("蒋巨峰（）" → "蒋巨峰").

    Example::

        >>> ds = QADataset(queries={"q": "黄鳍紫鱼体长多少？"}, corpus={"a": "黄鳍紫鱼……", "b": "体长可达50公分。"},
        ...                relevant_docs={"q": ["b"]})
        >>> count_misses(ds, {"q": "a"}, {"a": "d", "b": "d"}, {"d": "黄鳍紫鱼"}).name_subject_absent_missed
        1
    """
    missed = sibling = absent = absent_missed = 0
    for qid, question in dataset.queries.items():
        relevant = dataset.relevant_docs[qid]
        doc = chunk_doc[relevant[0]]
        subject = doc_title[doc].split("（")[0].split("(")[0].strip()
        names_absent = bool(subject) and subject in question and all(subject not in dataset.corpus[c] for c in relevant)
        absent += names_absent
        if top1[qid] in relevant:
            continue
        missed += 1
        sibling += chunk_doc[top1[qid]] == doc
        absent_missed += names_absent
    return Misses(len(dataset.queries), missed, sibling, absent, absent_missed)


def top1_ids(model, dataset: QADataset, batch_size: int) -> dict[str, str]:
    qids, cids = list(dataset.queries), list(dataset.corpus)
    q = model.encode_query([dataset.queries[i] for i in qids], batch_size=batch_size, normalize_embeddings=True)
    c = model.encode_document([dataset.corpus[i] for i in cids], batch_size=batch_size, normalize_embeddings=True)
    best = (q @ c.T).argmax(axis=1)
    return {qid: cids[int(j)] for qid, j in zip(qids, best)}


def result_table(rows: Sequence[dict]) -> str:
    head = ["model", "questions", "missed @1", "lost to a sibling chunk", "name the subject, chunk lacks it",
            "of those missed", "NDCG@10 chunks", "NDCG@10 title + chunk", "Acc@1 chunks", "Acc@1 title + chunk"]
    return markdown_table(head, ([
        r["model"], r["misses"]["questions"], r["misses"]["missed"], r["misses"]["lost_to_sibling"],
        r["misses"]["name_subject_absent"], r["misses"]["name_subject_absent_missed"],
        f"{r['chunks']['cosine_ndcg@10']:.4f}", f"{r['titled']['cosine_ndcg@10']:.4f}",
        f"{r['chunks']['cosine_accuracy@1']:.4f}", f"{r['titled']['cosine_accuracy@1']:.4f}",
    ] for r in rows))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.base_failures", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=ch.DEFAULT_DATA)
    p.add_argument("--n-passages", type=int, default=60)
    p.add_argument("--heldout-ratio", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--model", action="append", default=[], help="sentence-transformers folders (default: the base)")
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)

    from sentence_transformers import SentenceTransformer

    from tasks.evaluation.evaluate import evaluate_loaded_model

    settings = Settings()
    passages = load_squad(args.data)[: args.n_passages]
    _, heldout = ch.split_passages(passages, args.heldout_ratio, args.seed)
    held_ids = {p.doc_id for p in heldout}
    chunks = [c for c in chunk_documents(build_documents(heldout), settings.chunk_size, settings.chunk_overlap)
              if c.doc_id in held_ids]
    dataset = human_benchmark(heldout, chunks).dataset
    chunk_doc = {c.chunk_id: c.doc_id for c in chunks}
    doc_title = {p.doc_id: p.title for p in heldout}
    titled = ch.titled_dataset(dataset, ch.titled_chunks(chunks, heldout))

    rows = []
    for path in args.model or [ch.resolve_base_model(ch.DEFAULT_BASE_MODEL, settings)]:
        model = SentenceTransformer(str(path))
        pick = lambda r: {k: r[k] for k in ("cosine_ndcg@10", "cosine_accuracy@1")}  # noqa: E731
        rows.append({
            "model": str(path),
            "misses": asdict(count_misses(dataset, top1_ids(model, dataset, args.batch_size), chunk_doc, doc_title)),
            "chunks": pick(evaluate_loaded_model(model, dataset, batch_size=args.batch_size, name="chunks")),
            "titled": pick(evaluate_loaded_model(model, titled, batch_size=args.batch_size, name="titled")),
        })
    print(result_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
