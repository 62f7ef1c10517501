"""The second stage: a cross-encoder re-scores the first stage's top chunks.

A first stage (BM25, the dense model or their fusion) scores every chunk cheaply; a
cross-encoder reads each question together with each of its top ``k`` chunks and scores
the pair, which a bi-encoder or a keyword index cannot do. :func:`rerank` is the single
place where the two become one ranking: the evaluate stage and ``flows.query`` both call
it (through :func:`tasks.retrieval.retriever.ranking`), so what is measured is what is searched.

The reranked scores are the cross-encoder's own for the top ``k`` (or, with a ``weight``
below 1, ``weight · z(cross-encoder) + (1 − weight) · z(first stage)`` over those k: a
reranker trained on a few hundred questions knows less than the first stage about some of
them, and the mix keeps both); every other chunk keeps the first stage's order below them
(so NDCG@10, MRR and a top-50 list stay defined for any ``k``).

Example::

    >>> import numpy as np
    >>> first = np.array([[3.0, 2.0, 1.0, 0.0]])           # one question, four chunks
    >>> pair_score = lambda pairs: np.array([0.1 if j == 0 else 0.9 for _, j in pairs])
    >>> rerank(first, 2, pair_score, ["c0", "c1", "c2", "c3"]).argsort(axis=1)[:, ::-1][0].tolist()
    [1, 0, 2, 3]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sentence_transformers.cross_encoder import CrossEncoder

# A pair scorer: [(question index, chunk index), …] → one score per pair.
PairScorer = Callable[[list[tuple[int, int]]], np.ndarray]


def rerank(first: np.ndarray, k: int, score_pairs: PairScorer, chunk_ids: Sequence[str],
           weight: float = 1.0) -> np.ndarray:
    """Scores of the reranked retriever: each row's top ``k`` by ``first`` get the
    cross-encoder's score of (question, chunk) (mixed with the first stage's by ``weight``,
    see the module docstring); the other chunks follow below them in the first stage's order.
    Rows are questions, columns chunks (``chunk_ids`` order)."""
    from tasks.retrieval.fusion import standardize
    from tasks.retrieval.metrics import top_k

    first = np.asarray(first, dtype=np.float64)
    tops = [top_k(row, k, chunk_ids) for row in first]
    pairs = [(qi, j) for qi, top in enumerate(tops) for j in top]
    scores = np.asarray(score_pairs(pairs), dtype=np.float64) if pairs else np.zeros(0)
    out = np.empty_like(first)
    n = first.shape[1]
    at = 0
    for qi, top in enumerate(tops):
        reranked = scores[at:at + len(top)]
        at += len(top)
        if weight < 1:
            z = standardize(np.stack([reranked, first[qi, top]]))
            reranked = weight * z[0] + (1 - weight) * z[1]
        out[qi, top] = reranked
        rest = np.ones(n, dtype=bool)
        rest[top] = False
        if rest.any():
            # Below the lowest reranked score, in the first stage's order (ties: lower id first).
            order = top_k(np.where(rest, first[qi], -np.inf), int(rest.sum()), chunk_ids)
            floor = (reranked.min() if len(reranked) else 0.0) - 1.0
            out[qi, order] = floor - np.arange(len(order)) / len(order)
    return out


class CrossEncoderReranker:
    """A cross-encoder folder as a pair scorer over one set of questions and chunks.

    Scores are memoised per (question, chunk) pair, so several depths over the same first
    stage (top 20 and top 50) read each pair once.

    Example::

        reranker = CrossEncoderReranker("outputs/finetune_bce/reranker")
        scorer = reranker.scorer(questions, chunk_texts)
        final = rerank(first_stage_scores, 20, scorer, chunk_ids)
    """

    def __init__(self, path: str | Path, batch_size: int = 32, *, trust_remote_code: bool = False,
                 model: CrossEncoder | None = None):
        if model is None:
            from sentence_transformers.cross_encoder import CrossEncoder

            model = CrossEncoder(str(path), trust_remote_code=trust_remote_code)
        self.model = model
        self.path = str(path)
        self.batch_size = batch_size

    def predict(self, pairs: Sequence[tuple[str, str]], show_progress_bar: bool = False) -> np.ndarray:
        """The score of each (question, chunk text) pair, the model's logit: higher is more relevant.

        Logits, not the sigmoid a cross-encoder applies by default: a reranker trained with a
        listwise loss pushes its logits far apart, and past about 17 the sigmoid is 1.0 in
        float32, which would tie the best chunks of a question."""
        import torch

        if not pairs:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self.model.predict(list(pairs), batch_size=self.batch_size, activation_fn=torch.nn.Identity(),
                                             show_progress_bar=show_progress_bar, convert_to_numpy=True),
                          dtype=np.float32).reshape(-1)

    def scorer(self, questions: Sequence[str], texts: Sequence[str], show_progress_bar: bool = False) -> PairScorer:
        """A :data:`PairScorer` over ``questions`` (rows) and chunk ``texts`` (columns)."""
        memo: dict[tuple[int, int], float] = {}

        def score_pairs(pairs: list[tuple[int, int]]) -> np.ndarray:
            new = list(dict.fromkeys(p for p in pairs if p not in memo))
            values = self.predict([(questions[qi], texts[j]) for qi, j in new], show_progress_bar)
            memo.update(zip(new, values.tolist()))
            return np.array([memo[p] for p in pairs], dtype=np.float64)

        return score_pairs
