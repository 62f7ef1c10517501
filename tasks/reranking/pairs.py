"""Training rows for the reranker, with negatives from the first stage's top ranks.

For each training question the first stage ranks every training chunk; each of the
question's own chunks makes a row with the best-ranked chunks that are not its own as the
negatives. Why not sentence-transformers' ``mine_hard_negatives``: it ranks with an
embedding model alone, while the reranker sees the fused first stage's top k at search
time, and those are the chunks it must learn to put second.

Example::

    >>> import numpy as np
    >>> from tasks.core.qa_dataset import QADataset
    >>> ds = QADataset(queries={"q1": "谁起诉？"}, corpus={"a": "原告起诉。", "b": "天气好。", "c": "被告答辩。"},
    ...                relevant_docs={"q1": ["a"]})
    >>> first = np.array([[0.5, 0.1, 0.9]])               # the first stage likes c best
    >>> first_stage_rows(ds, first, ["q1"], ["a", "b", "c"], n_negatives=1, depth=20)
    [{'query': '谁起诉？', 'positive': '原告起诉。', 'negative_1': '被告答辩。'}]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tasks.core.qa_dataset import QADataset
from tasks.retrieval.metrics import top_k


def first_stage_rows(
    dataset: QADataset, first: np.ndarray, question_ids: Sequence[str], chunk_ids: Sequence[str],
    n_negatives: int, depth: int,
) -> list[dict[str, str]]:
    """``{"query", "positive", "negative_1", …}`` rows (the n-tuple format of
    sentence-transformers' ranking losses): each question with each of its relevant chunks and
    its best-ranked other chunks among the first stage's top ``depth``. Every row has the same
    number of negatives, ``n_negatives`` or, where some question's top ``depth`` holds fewer
    wrong chunks, that fewer. ``first``: the first stage's scores, rows ``question_ids``,
    columns ``chunk_ids``."""
    found = []
    for qi, qid in enumerate(question_ids):
        relevant = set(dataset.relevant_docs.get(qid, ()))
        if relevant:
            wrong = [chunk_ids[j] for j in top_k(first[qi], depth, chunk_ids) if chunk_ids[j] not in relevant]
            found.append((qid, sorted(relevant), wrong[:n_negatives]))
    n = min((len(wrong) for _, _, wrong in found), default=0)
    return [{"query": dataset.queries[qid], "positive": dataset.corpus[c],
             **{f"negative_{i + 1}": dataset.corpus[w] for i, w in enumerate(wrong[:n])}}
            for qid, relevant, wrong in found for c in relevant]
