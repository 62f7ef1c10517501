"""The reranker stage: a cross-encoder trained on the run's own questions.

The first stage (BM25 fused with the tuned dense model) ranks every chunk; the reranker
re-reads the top few with each question. It is trained on the same synthetic questions as
the dense model, with its negatives taken from the first stage's own top ranks — the
chunks it will have to put below the right one at search time (:mod:`.pairs`,
:mod:`.training`). Applying it is retrieval code (:mod:`tasks.retrieval.rerank`), shared
by the evaluation and ``flows.query``.
"""
