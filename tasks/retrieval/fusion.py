"""Fusing a lexical and a dense ranking of the same chunks.

Scores of BM25 (unbounded, grows with question length) and of an embedding model
(cosine, packed in a narrow band) are not on one scale, so they are standardised per
question before they are mixed:

    fused = w · z(dense) + (1 − w) · z(bm25),  z(s) = (s − mean(s)) / std(s) over all chunks

``w = 1`` ranks exactly as the dense model, ``w = 0`` exactly as BM25, so one weight
grid covers both baselines and every mix. Reciprocal rank fusion (RRF, Cormack et al.
2009: ``Σ 1 / (k + rank)``) needs no weight and is reported beside it.

Example::

    >>> import numpy as np
    >>> dense, bm25 = np.array([[0.9, 0.8, 0.1]]), np.array([[0.0, 5.0, 1.0]])
    >>> zscore_fusion(dense, bm25, w_dense=0.5).argmax(axis=1)
    array([1])
    >>> rrf_fusion(dense, bm25).argmax(axis=1)
    array([1])
"""

from __future__ import annotations

import numpy as np

RRF_K = 60


def standardize(scores: np.ndarray) -> np.ndarray:
    """Each row as z-scores; a row where every chunk scores the same becomes zeros."""
    scores = np.asarray(scores, dtype=np.float64)
    std = scores.std(axis=1, keepdims=True)
    return np.divide(scores - scores.mean(axis=1, keepdims=True), std, out=np.zeros_like(scores), where=std > 0)


def zscore_fusion(dense: np.ndarray, lexical: np.ndarray, w_dense: float) -> np.ndarray:
    """``w_dense · z(dense) + (1 − w_dense) · z(lexical)``, row by row (one row per question)."""
    if not 0.0 <= w_dense <= 1.0:
        raise ValueError(f"w_dense must lie in [0, 1], got {w_dense}")
    if w_dense == 1.0:
        return standardize(dense)
    if w_dense == 0.0:
        return standardize(lexical)
    return w_dense * standardize(dense) + (1.0 - w_dense) * standardize(lexical)


def ranks(scores: np.ndarray) -> np.ndarray:
    """1-based rank of every chunk per row, best first; ties go to the earlier chunk."""
    order = np.argsort(-np.asarray(scores), axis=1, kind="stable")
    out = np.empty_like(order)
    rows = np.arange(order.shape[0])[:, None]
    out[rows, order] = np.arange(1, order.shape[1] + 1)
    return out


def rrf_fusion(dense: np.ndarray, lexical: np.ndarray, k: int = RRF_K) -> np.ndarray:
    """Reciprocal rank fusion of the two rankings: ``1/(k + rank_dense) + 1/(k + rank_lexical)``."""
    return 1.0 / (k + ranks(dense)) + 1.0 / (k + ranks(lexical))
