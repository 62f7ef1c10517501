"""The retriever a run ships: BM25, a dense model, or the two fused, optionally with a
reranker on top, and how it is chosen.

A :class:`RetrieverSpec` names one way of ranking chunks. :func:`candidates` lists the
ones a run compares — BM25 alone, the dense model alone, z-score fusion at each weight of
a grid, RRF, and, when the run trained a reranker, the even fusion with its top ``k``
reranked (:mod:`tasks.retrieval.rerank`) — :func:`score_grid` ranks a dataset every way at
once, and :func:`choose` picks the best on the validation questions (never on the
questions people wrote, which only report). :func:`combine` is the single place where the
two score matrices become the first stage's ranking, and :func:`ranking` adds the
reranker: the evaluate stage and ``flows.query`` both call them, so what is measured is
what is searched.

Example::

    >>> spec = RetrieverSpec.hybrid(0.4)
    >>> spec.label, RetrieverSpec.from_dict(spec.to_dict()) == spec
    ('hybrid w=0.4', True)
    >>> [s.label for s in candidates([0.0, 0.5, 1.0])]
    ['bm25', 'hybrid w=0.5', 'dense', 'rrf']
    >>> [s.label for s in candidates([0.5], rerank_depths=[20], rerank_weights=[0.5, 1.0])][-2:]
    ['hybrid w=0.5 + rerank@20 mix 0.5', 'hybrid w=0.5 + rerank@20']
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np

from tasks.retrieval.fusion import rrf_fusion, zscore_fusion

Kind = Literal["bm25", "dense", "hybrid", "rrf"]

RERANK_MARK = " + rerank@"  # in the label of every reranked retriever
EXPANDED_MARK = " (expanded)"  # in the label of every retriever whose BM25 indexes the chunks' questions
DEFAULT_WEIGHTS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass(frozen=True)
class RetrieverSpec:
    kind: Kind
    w_dense: float | None = None  # hybrid only: the dense share of the z-score fusion
    tokenizer: str = "char"  # BM25's (tasks.retrieval.lexical)
    rerank_k: int | None = None  # the first stage's top k re-scored by the run's reranker; None: no reranker
    rerank_weight: float = 1.0  # the reranker's share of the top k's score; the rest is the first stage's
    expanded: bool = False  # BM25 indexes each chunk with its questions (tasks.retrieval.expansion)

    @classmethod
    def hybrid(cls, w_dense: float, tokenizer: str = "char") -> "RetrieverSpec":
        """The fusion at ``w_dense``; 0 and 1 are BM25 and the dense model themselves."""
        w = round(float(w_dense), 4)
        if w == 0.0:
            return cls("bm25", tokenizer=tokenizer)
        if w == 1.0:
            return cls("dense", tokenizer=tokenizer)
        return cls("hybrid", w, tokenizer)

    @property
    def label(self) -> str:
        first = f"hybrid w={self.w_dense:g}" if self.kind == "hybrid" else self.kind
        first += EXPANDED_MARK if self.expanded and self.uses_bm25 else ""
        if not self.rerank_k:
            return first
        return f"{first}{RERANK_MARK}{self.rerank_k}" + (f" mix {self.rerank_weight:g}" if self.rerank_weight < 1 else "")

    @property
    def first_stage(self) -> "RetrieverSpec":
        """This retriever without its reranker."""
        return replace(self, rerank_k=None, rerank_weight=1.0)

    def with_expansion(self) -> "RetrieverSpec":
        """This retriever with BM25 over each chunk and its questions."""
        return replace(self, expanded=self.uses_bm25)

    def reranked(self, k: int, weight: float = 1.0) -> "RetrieverSpec":
        """This first stage with its top ``k`` reranked (``weight`` < 1: mixed with the first stage)."""
        return replace(self, rerank_k=int(k), rerank_weight=round(float(weight), 4))

    @property
    def uses_dense(self) -> bool:
        return self.kind != "bm25"

    @property
    def uses_bm25(self) -> bool:
        return self.kind != "dense"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RetrieverSpec":
        return cls(data["kind"], data.get("w_dense"), data.get("tokenizer", "char"), data.get("rerank_k"),
                   data.get("rerank_weight", 1.0), bool(data.get("expanded", False)))

    def describe(self) -> str:
        """One line for logs and reports."""
        if self.kind == "hybrid":
            first = f"BM25 + dense, z-score fusion with dense weight {self.w_dense:g}"
        else:
            first = {
                "bm25": f"BM25 alone ({self.tokenizer} tokens)",
                "dense": "the dense model alone",
                "rrf": "BM25 + dense, reciprocal rank fusion",
            }[self.kind]
        if self.expanded and self.uses_bm25:
            first += ", BM25 over each chunk with its questions"
        if not self.rerank_k:
            return first
        if self.rerank_weight < 1:
            return (f"{first}, its top {self.rerank_k} reranked by {self.rerank_weight:g} · z(cross-encoder) + "
                    f"{1 - self.rerank_weight:g} · z(first stage)")
        return f"{first}, its top {self.rerank_k} reranked by the cross-encoder"


EXPANDED_BM25 = RetrieverSpec("bm25", expanded=True).label  # BM25 over each chunk with its questions


def candidates(weights: Sequence[float] = DEFAULT_WEIGHTS, tokenizer: str = "char",
               rerank_depths: Sequence[int] = (), rerank_weights: Sequence[float] = (1.0,),
               expansion: bool = False) -> list[RetrieverSpec]:
    """BM25, the fusions by increasing dense weight, the dense model, RRF (no duplicates);
    with ``expansion``, BM25 and the even fusion (:func:`even_mix`) with BM25 over each chunk
    and its questions (:mod:`tasks.retrieval.expansion`); then the even fusion (BM25 without
    a fusion) with its top k reranked for each of ``rerank_depths`` and each reranker share
    of ``rerank_weights`` (:func:`tasks.retrieval.rerank.rerank`). Why only that first stage:
    each depth costs k cross-encoder passes a question, and the even fusion is what ships
    by default."""
    specs = [RetrieverSpec.hybrid(w, tokenizer) for w in sorted({0.0, *weights, 1.0})]
    specs = list(dict.fromkeys(specs)) + [RetrieverSpec("rrf", tokenizer=tokenizer)]
    first = even_mix(specs) or RetrieverSpec("bm25", tokenizer=tokenizer)
    if expansion:
        specs += list(dict.fromkeys(s.with_expansion() for s in (RetrieverSpec("bm25", tokenizer=tokenizer), first)))
    return specs + [first.reranked(k, w) for k in sorted(set(rerank_depths)) for w in sorted(set(rerank_weights))]


def combine(spec: RetrieverSpec, dense: np.ndarray | None, lexical: np.ndarray | None) -> np.ndarray:
    """Scores of ``spec``'s first stage from the dense and BM25 score matrices (rows: questions)."""
    if spec.uses_dense and dense is None:
        raise ValueError(f"{spec.label} needs the dense model's scores")
    if spec.uses_bm25 and lexical is None:
        raise ValueError(f"{spec.label} needs BM25's scores")
    if spec.kind == "dense":
        return np.asarray(dense)
    if spec.kind == "bm25":
        return np.asarray(lexical)
    if spec.kind == "rrf":
        return rrf_fusion(dense, lexical)
    return zscore_fusion(dense, lexical, spec.w_dense)


def ranking(spec: RetrieverSpec, dense: np.ndarray | None, lexical: np.ndarray | None,
            score_pairs: Any = None, chunk_ids: Sequence[str] = ()) -> np.ndarray:
    """Scores of ``spec``: its first stage (:func:`combine`), then, for a reranked spec, its
    top ``rerank_k`` re-scored by ``score_pairs`` (a :data:`tasks.retrieval.rerank.PairScorer`)."""
    first = combine(spec, dense, lexical)
    if not spec.rerank_k:
        return first
    if score_pairs is None:
        raise ValueError(f"{spec.label} needs the run's reranker")
    from tasks.retrieval.rerank import rerank

    return rerank(first, spec.rerank_k, score_pairs, chunk_ids, spec.rerank_weight)


def score_grid(
    dataset: Any, dense: np.ndarray, lexical: np.ndarray, specs: Sequence[RetrieverSpec], evaluator: Any = None,
    score_pairs: Any = None, expanded: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """``{spec.label: metrics}`` of every spec on ``dataset``, from one pair of score matrices
    (BM25's over the expanded chunks, ``expanded``, for the specs that use it; the reranker's
    ``score_pairs`` for reranked specs); each metrics dict also keeps its per-question
    NDCG@10 (what :func:`choose` compares)."""
    from tasks.retrieval.metrics import ir_evaluator, metrics_from_scores

    evaluator = evaluator or ir_evaluator(dataset)
    return {s.label: metrics_from_scores(dataset, ranking(s, dense, expanded if s.expanded else lexical, score_pairs,
                                                          evaluator.corpus_ids),
                                         "rerank" if s.rerank_k else s.kind, evaluator, per_question=True)
            for s in specs}


def even_mix(specs: Sequence[RetrieverSpec]) -> RetrieverSpec | None:
    """The fusion nearest an even mix (w = 0.5; the lower weight of two as near): the
    retriever a run ships unless validation shows clearly better. None without a fusion."""
    fused = [s for s in specs if s.kind == "hybrid" and not s.rerank_k and not s.expanded]
    return min(fused, key=lambda s: (abs(s.w_dense - 0.5), s.w_dense)) if fused else None


def choose(grid: Mapping[str, Mapping[str, Any]], specs: Sequence[RetrieverSpec],
           margin_se: float = 0.0) -> RetrieverSpec:
    """The retriever to ship, from the validation ``grid`` (``{spec.label: metrics}``).

    With ``margin_se`` > 0 the even fusion (:func:`even_mix`) is kept unless another spec
    beats it on validation by more than ``margin_se`` standard errors of the paired
    per-question NDCG@10 difference (:data:`~tasks.retrieval.metrics.PER_QUESTION`); of
    those that do, the best wins. Why: a few dozen synthetic validation questions put a
    dozen candidates within a point or two of each other, and their plain argmax lands
    on an extreme (BM25 alone, w = 0.9) that questions people wrote then disprove, while
    an even fusion is rarely worse than either side.

    With ``margin_se`` = 0 (or no per-question scores) the best NDCG@10 wins, then the
    best MRR@10; still tied, the fusion nearest an even mix.
    """
    from tasks.retrieval.metrics import metric_value

    def key(spec: RetrieverSpec) -> tuple[float, float, float]:
        m = grid[spec.label]
        balance = 0.5 if spec.kind == "rrf" else abs((spec.w_dense if spec.kind == "hybrid" else
                                                     1.0 if spec.kind == "dense" else 0.0) - 0.5)
        # Still tied: no reranker (or the shallower one) before a deeper one, the cheaper search.
        return (round(metric_value(m, "ndcg@10"), 6), round(metric_value(m, "mrr@10"), 6), -balance,
                -(spec.rerank_k or 0), spec.rerank_weight)

    gains = gains_over_even_mix(grid, specs)
    if margin_se <= 0 or not gains:
        return max(specs, key=key)
    clearly_better = [s for s in specs if gains.get(s.label, 0.0) > margin_se]
    return max(clearly_better, key=key) if clearly_better else even_mix(specs)


def gains_over_even_mix(grid: Mapping[str, Mapping[str, Any]], specs: Sequence[RetrieverSpec],
                        ndigits: int | None = None) -> dict[str, float]:
    """Each spec's validation gain over :func:`even_mix` in standard errors (what
    :func:`choose` compares with its margin), by label; {} without a fusion among ``specs``
    or without per-question scores. ``ndigits``: rounded for a report."""
    from tasks.retrieval.metrics import PER_QUESTION

    default = even_mix(specs)
    if default is None or any(PER_QUESTION not in grid[s.label] for s in specs):
        return {}
    gains = {s.label: paired_gain(grid[s.label][PER_QUESTION], grid[default.label][PER_QUESTION])
             for s in specs if s != default}
    return gains if ndigits is None else {label: round(g, ndigits) for label, g in gains.items()}


def paired_gain(challenger: Sequence[float], incumbent: Sequence[float]) -> float:
    """How many standard errors the challenger's mean per-question score lies above the
    incumbent's, on the same questions (the paired t statistic; ±inf when every question
    moves by the same amount, 0 when none moves).

    >>> paired_gain([1.0, 1.0, 0.5, 1.0], [1.0, 0.5, 0.5, 1.0])  # one question of four better
    1.0
    >>> paired_gain([0.0, 1.0], [0.0, 1.0])
    0.0
    """
    d = np.asarray(challenger, dtype=float) - np.asarray(incumbent, dtype=float)
    if d.shape != np.shape(incumbent) or d.ndim != 1:
        raise ValueError(f"paired scores need the same questions, got {len(challenger)} and {len(incumbent)}")
    if len(d) < 2 or not d.any():
        return 0.0
    se = d.std(ddof=1) / np.sqrt(len(d))
    return float(d.mean() / se) if se > 0 else float(np.sign(d.mean()) * np.inf)
