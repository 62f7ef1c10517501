"""Benchmark: which BM25 tokens and variant find the chunk a person's question is about?

BM25 is the baseline every run now reports and may ship, so its tokenizer is chosen on
data, not on taste. For each data set — the sample PDFs with the questions people wrote
about them (``data/pdf/human_questions.json``), CMRC 2018 (Wikipedia) and CJRC (court
judgments) from ``../shared/data`` — the passages are chunked like the pipeline (300/30)
and every human question is searched among all chunks, with

* the tokenizer: ``char`` (CJK characters + bigrams) or ``jieba`` (words, search mode);
* the BM25 variant of bm25s: ``lucene`` (its default) or ``robertson`` (Okapi).

No model and no LLM: it runs in seconds. Run from the repository root::

    .venv/bin/python -m bench.lexical_tokenizers
    .venv/bin/python -m bench.lexical_tokenizers --out outputs/bench_lexical
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.harness import REPO_ROOT, SHARED_DATA as SHARED, markdown_table, report_results
from tasks.core.qa_dataset import QADataset
from tasks.retrieval.lexical import TOKENIZERS, tokenize
from tasks.retrieval.metrics import metrics_from_scores, question_order

VARIANTS = ("lucene", "robertson")


def sample_dataset() -> QADataset:
    """The sample PDFs' chunks and the questions people wrote about them."""
    from tasks.chunks.chunking import chunk_documents
    from tasks.documents.reading import load_documents
    from tasks.evaluation.human_questions import load_human_questions, resolve_questions

    chunks = chunk_documents(load_documents(REPO_ROOT / "data" / "pdf").documents, 300, 30)
    return resolve_questions(load_human_questions(REPO_ROOT / "data" / "pdf" / "human_questions.json"),
                             chunks).dataset


def squad_dataset(path: Path) -> QADataset:
    """Every passage of a SQuAD-format file chunked like the pipeline; its questions against all chunks."""
    from tasks.chunks.chunking import chunk_documents
    from tasks.evaluation.squad import build_documents, human_benchmark, load_squad

    passages = load_squad(path)
    return human_benchmark(passages, chunk_documents(build_documents(passages), 300, 30)).dataset


def bm25_metrics(dataset: QADataset, tokenizer: str, variant: str) -> dict[str, float]:
    import bm25s

    ids = list(dataset.corpus)
    bm25 = bm25s.BM25(method=variant)
    bm25.index([tokenize(dataset.corpus[c], tokenizer) for c in ids], show_progress=False)
    rows = []
    for qid in question_order(dataset):
        tokens = bm25.get_tokens_ids(tokenize(dataset.queries[qid], tokenizer))
        rows.append(bm25.get_scores_from_ids(tokens) if tokens else [0.0] * len(ids))
    return metrics_from_scores(dataset, rows, "bm25")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_lexical"))
    args = parser.parse_args(argv)

    sets = {"sample PDFs (data/pdf)": sample_dataset}
    for name, file in (("CMRC 2018 trial", "cmrc2018_trial.json"), ("CJRC legal dev", "cjrc_legal_dev.json")):
        if (SHARED / file).is_file():
            sets[name] = lambda f=file: squad_dataset(SHARED / f)
    results = []
    for name, load in sets.items():
        ds = load()
        for tokenizer in TOKENIZERS:
            for variant in VARIANTS:
                m = bm25_metrics(ds, tokenizer, variant)
                row = {"data": name, "questions": len(question_order(ds)), "chunks": len(ds.corpus),
                       "tokenizer": tokenizer, "variant": variant,
                       "ndcg@10": round(m["bm25_ndcg@10"], 4), "accuracy@1": round(m["bm25_accuracy@1"], 4)}
                results.append(row)
    table = markdown_table(
        ["data", "questions", "chunks", "tokens", "variant", "NDCG@10", "Acc@1"],
        ([r["data"], r["questions"], r["chunks"], r["tokenizer"], r["variant"], f"{r['ndcg@10']:.4f}",
          f"{r['accuracy@1']:.4f}"] for r in results),
        left=(0, 3, 4),
    )
    report_results(args.out, results, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
