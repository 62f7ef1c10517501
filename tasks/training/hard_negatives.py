"""Hard negatives for question/chunk pairs, mined with the base model or with BM25.

In-batch negatives are mostly easy: random chunks about other things. A *hard* negative
is a chunk the base model ranks high for a question although it is not the question's
chunk, so training has to learn the difference. The risk is a false negative: a chunk
that overlaps the positive (chunks overlap by ``chunk_overlap`` tokens) or says the same
thing. Two guards, as in sentence-transformers' ``mine_hard_negatives`` (``range_min``,
``absolute_margin``, ``sampling_strategy="top"``):

* the ``skip_top`` highest-ranked other chunks are never used;
* a candidate must score at least ``margin`` below the question's positive.

Unlike ``mine_hard_negatives(output_format="n-tuple")``, which drops every pair that
has fewer than ``n`` candidates, a pair here keeps its row: when too few candidates
pass the guards, the next-ranked chunks that are not positives fill it (every row of a
loss batch needs the same number of columns).

Example, mined with BM25 (``miner="dense"`` ranks with the model passed first instead)::

    >>> corpus = ["猫住在山边。", "猫喜欢吃鱼。", "狗住在河边。", "马住在湖边。", "今天下雨了。"]
    >>> negatives, stats = mine_negatives(None, ["猫住在哪里？"], [{"猫住在山边。"}], corpus,
    ...                                   n_negatives=2, skip_top=0, margin=0.02, miner="bm25")
    >>> negatives[0], stats.filled
    (['狗住在河边。', '马住在湖边。'], 0)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MiningStats:
    rows: int
    negatives_per_row: int
    filled: int
    """Negatives that came from below the guards because too few candidates passed them."""


def select_negatives(
    scores: Sequence[float],
    positives: set[int],
    n_negatives: int,
    skip_top: int,
    margin: float,
) -> tuple[list[int], int]:
    """Corpus indices of the hard negatives for one question, and how many were fill-ins.

    Args:
        scores: The base model's similarity of the question to every corpus text.
        positives: Indices of the question's relevant texts (never negatives).
        n_negatives: How many to return (fewer only if the corpus has fewer non-positives).
        skip_top: Highest-ranked non-positive texts to skip.
        margin: A negative must score at most ``min(positive scores) - margin``.

    >>> select_negatives([0.9, 0.85, 0.8, 0.7, 0.5, 0.1], {0}, 2, skip_top=1, margin=0.15)
    ([3, 4], 0)
    >>> select_negatives([0.9, 0.89, 0.88, 0.1], {0}, 2, skip_top=0, margin=0.5)
    ([3, 1], 1)
    """
    ranked = sorted((i for i in range(len(scores)) if i not in positives), key=lambda i: (-scores[i], i))
    ceiling = min(scores[i] for i in positives) - margin
    chosen = [i for i in ranked[skip_top:] if scores[i] <= ceiling][:n_negatives]
    # Fill-ins: best-ranked remaining non-positives, skipped ranks last (they are the
    # likeliest near-duplicates).
    rest = [i for i in ranked[skip_top:] + ranked[:skip_top] if i not in chosen]
    filled = rest[: max(0, n_negatives - len(chosen))]
    return chosen + filled, len(filled)


def mine_negatives(
    model: SentenceTransformer,
    queries: Sequence[str],
    positives: Sequence[set[str]],
    corpus: Sequence[str],
    n_negatives: int,
    skip_top: int,
    margin: float,
    batch_size: int = 32,
    miner: str = "dense",
    tokenizer: str = "char",
) -> tuple[list[list[str]], MiningStats]:
    """Hard negatives for each question, ranked by ``model`` (or BM25) among ``corpus``.

    Args:
        model: The base model (its ``query``/``document`` prompts are used).
        queries: The questions, one per training row.
        positives: For each question, the texts relevant to it (all excluded).
        corpus: Candidate texts (the training chunks).
        n_negatives, skip_top, margin: See :func:`select_negatives`.
        miner: ``dense`` ranks the candidates with ``model``; ``bm25`` with a BM25 index
            (``tokenizer``'s tokens) over them: chunks that share the question's words
            but do not answer it, which is where a keyword index goes wrong and a dense
            model can learn to do better. The margin is a cosine distance and does not
            apply to BM25 scores; a lexical negative may outscore the positive.

    Returns:
        For each question its negatives (texts, hardest first), and counts.
    """
    texts = list(dict.fromkeys(corpus))
    index = {t: i for i, t in enumerate(texts)}
    missing = {p for ps in positives for p in ps} - set(index)
    if missing:
        texts += sorted(missing)
        index = {t: i for i, t in enumerate(texts)}
    n = min(n_negatives, len(texts) - max(len(ps) for ps in positives))
    if n < n_negatives:
        logger.warning("only %d texts besides the positives: %d hard negatives per pair instead of %d", len(texts), n, n_negatives)
    if miner == "bm25":
        from tasks.retrieval.lexical import BM25Index

        sims = BM25Index.build([str(i) for i in range(len(texts))], texts, tokenizer).score_matrix(list(queries)).tolist()
        margin = float("-inf")
    elif miner == "dense":
        q = model.encode_query(list(queries), batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True)
        d = model.encode_document(texts, batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True)
        sims = (q @ d.T).cpu().tolist()
    else:
        raise ValueError(f"unknown hard-negative miner {miner!r}; choose dense or bm25")
    out: list[list[str]] = []
    filled = 0
    for row, pos in zip(sims, positives):
        chosen, n_filled = select_negatives(row, {index[p] for p in pos}, n, skip_top, margin)
        out.append([texts[i] for i in chosen])
        filled += n_filled
    stats = MiningStats(rows=len(out), negatives_per_row=n, filled=filled)
    logger.info("mined %d hard negatives per pair for %d pairs with %s (%d filled in below the guards)",
                n, len(out), miner, filled)
    return out, stats
