"""The two score matrices every first-stage retriever is ranked from: the dense model's and BM25's.

Example::

    >>> from tasks.core.qa_dataset import QADataset
    >>> from tasks.core.settings import Settings
    >>> from tasks.models.base import prepare_base_model
    >>> model = prepare_base_model(Settings(base_model="bundled:multilingual-e5-small")).path
    >>> ds = QADataset(queries={"q": "袋鼠住在哪里？"}, relevant_docs={"q": ["a"]},
    ...                corpus={"a": "尤金袋鼠分布在澳洲南部。", "b": "泡泡战士由韩国Nexon开发。"})
    >>> evaluator, dense, lexical = first_stage_scores(model, ds)
    >>> dense.shape, lexical.shape, evaluator.corpus_ids
    ((1, 2), (1, 2), ['a', 'b'])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tasks.core.qa_dataset import QADataset


def first_stage_scores(
    model_path: str, dataset: QADataset, tokenizer: str = "char", batch_size: int = 32, name: str = "val",
    *, trust_remote_code: bool = False, score_cache: Path | None = None,
) -> tuple[Any, np.ndarray, np.ndarray]:
    """(evaluator, dense scores, BM25 scores) of every question (rows, the evaluator's order)
    against every chunk (columns, the corpus order): what every retriever is ranked from.
    ``score_cache``: a :class:`~tasks.retrieval.dense_cache.DenseScoreCache` folder."""
    from sentence_transformers import SentenceTransformer

    from tasks.retrieval.dense_cache import DenseScoreCache
    from tasks.retrieval.lexical import BM25Index
    from tasks.retrieval.metrics import model_evaluator

    model = SentenceTransformer(model_path, trust_remote_code=trust_remote_code)
    evaluator = model_evaluator(model, dataset, batch_size, name)
    dense = DenseScoreCache(score_cache).scores(model, dataset, batch_size, evaluator)
    lexical = BM25Index.build(evaluator.corpus_ids, evaluator.corpus, tokenizer).score_matrix(evaluator.queries)
    return evaluator, dense, lexical
