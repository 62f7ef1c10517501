"""Retrieval over the chunks: BM25, dense, and the two fused.

What a user would otherwise deploy is a keyword index (BM25) or BM25 beside an
off-the-shelf embedding model, so every evaluation ranks the same chunks four ways —
BM25, the base model, the fine-tuned model, and a fusion of BM25 with a dense model —
and the run ships whichever wins on the validation questions.

* :mod:`tasks.retrieval.lexical` — Chinese tokenization and a BM25 index (bm25s);
* :mod:`tasks.retrieval.fusion` — score fusion (z-score with a weight, reciprocal rank);
* :mod:`tasks.retrieval.retriever` — the shipped retriever: its spec, how it is chosen,
  and the one ranking function that evaluation and ``flows.query`` both call;
* :mod:`tasks.retrieval.metrics` — sentence-transformers' IR metrics from a score matrix.
"""
