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
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tasks.qa_dataset import QADataset  # noqa: E402
from tasks.retrieval.lexical import TOKENIZERS, tokenize  # noqa: E402
from tasks.retrieval.metrics import metrics_from_scores, question_order  # noqa: E402

SHARED = REPO_ROOT.parent / "shared" / "data"
VARIANTS = ("lucene", "robertson")


def sample_dataset() -> QADataset:
    """The sample PDFs' chunks and the questions people wrote about them."""
    from tasks.chunking import chunk_documents
    from tasks.documents import load_documents
    from tasks.human_questions import load_human_questions, resolve_questions

    chunks = chunk_documents(load_documents(REPO_ROOT / "data" / "pdf").documents, 300, 30)
    return resolve_questions(load_human_questions(REPO_ROOT / "data" / "pdf" / "human_questions.json"),
                             chunks).dataset


def squad_dataset(path: Path) -> QADataset:
    """Every passage of a SQuAD-format file chunked like the pipeline; its questions against all chunks."""
    from bench.cmrc_human import build_documents, human_benchmark, load_cmrc
    from tasks.chunking import chunk_documents

    passages = load_cmrc(path)
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
    lines = ["| data | questions | chunks | tokens | variant | NDCG@10 | Acc@1 |", "|---|---:|---:|---|---|---:|---:|"]
    for name, load in sets.items():
        ds = load()
        for tokenizer in TOKENIZERS:
            for variant in VARIANTS:
                m = bm25_metrics(ds, tokenizer, variant)
                row = {"data": name, "questions": len(question_order(ds)), "chunks": len(ds.corpus),
                       "tokenizer": tokenizer, "variant": variant,
                       "ndcg@10": round(m["bm25_ndcg@10"], 4), "accuracy@1": round(m["bm25_accuracy@1"], 4)}
                results.append(row)
                lines.append(f"| {name} | {row['questions']} | {row['chunks']} | {tokenizer} | {variant} | "
                             f"{row['ndcg@10']:.4f} | {row['accuracy@1']:.4f} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    (args.out / "results.md").write_text(table + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
