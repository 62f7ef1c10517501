"""Round-trip consistency (Promptagator): keep a question only if it finds its own chunk.

A generated question that the base embedding model cannot lead back to the chunk it
was written about is often vague ("这段资料讲了什么？") or about something several
chunks share. Promptagator (Dai et al., 2022) keeps a synthetic query only when its
source passage comes back in the top k. Here the ranking is over the training
chunks, with the base model's query and document prompts, by the model's own
similarity (cosine for every model of this project).

Applied to the training set only: filtering the validation questions by what the
base model already finds would hand the base model its own test.

Example, with the bundled e5 (the flow uses the run's base model) and a question that is
about another chunk than its own::

    >>> from sentence_transformers import SentenceTransformer
    >>> from tasks.core.settings import Settings
    >>> from tasks.models.base import prepare_base_model
    >>> model = SentenceTransformer(prepare_base_model(Settings(base_model="bundled:multilingual-e5-small")).path)
    >>> train = QADataset(queries={"q1": "袋鼠住在哪里？", "q2": "泡泡战士由哪家公司开发？", "q3": "袋鼠吃什么？"},
    ...                   corpus={"a": "尤金袋鼠分布在澳洲南部，以草为食。", "b": "泡泡战士由韩国Nexon开发与发行。"},
    ...                   relevant_docs={"q1": ["a"], "q2": ["b"], "q3": ["b"]})
    >>> kept, report = round_trip_filter(train, model, top_k=1)
    >>> sorted(kept.queries), report.kept, report.dropped
    (['q1', 'q2'], 2, 1)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from tasks.core.qa_dataset import QADataset

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

EXAMPLES = 3


@dataclass
class RoundTripReport:
    top_k: int
    questions: int = 0
    kept: int = 0
    dropped: int = 0
    # rank of the own chunk -> questions (ranks above 10 together as "11+")
    rank_histogram: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)  # a few dropped questions with their rank

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def own_chunk_ranks(model: "SentenceTransformer", dataset: QADataset, batch_size: int = 32) -> dict[str, int]:
    """For every question, the rank (1 = first) of its best relevant chunk among all the
    dataset's chunks; ties count in the question's favour.

    Example::

        >>> from sentence_transformers import SentenceTransformer
        >>> from tasks.core.settings import Settings
        >>> from tasks.models.base import prepare_base_model
        >>> model = SentenceTransformer(prepare_base_model(Settings(base_model="bundled:multilingual-e5-small")).path)
        >>> own_chunk_ranks(model, QADataset(queries={"q": "袋鼠住在哪里？"},
        ...     corpus={"a": "袋鼠分布在澳洲。", "b": "泡泡战士是游戏。"}, relevant_docs={"q": ["a"]}))
        {'q': 1}
    """
    import torch

    qids = [q for q, docs in dataset.relevant_docs.items() if docs]
    if not qids:
        return {}
    cids = list(dataset.corpus)
    index = {c: i for i, c in enumerate(cids)}
    # The same prompts evaluation uses (tasks.evaluation.evaluate): what training will see.
    q_emb = model.encode(
        [dataset.queries[q] for q in qids], prompt=model.prompts.get("query") or None,
        batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
    )
    d_emb = model.encode(
        [dataset.corpus[c] for c in cids], prompt=model.prompts.get("document") or None,
        batch_size=batch_size, convert_to_tensor=True, normalize_embeddings=True,
    )
    scores = model.similarity(q_emb, d_emb)
    ranks = {}
    for row, qid in enumerate(qids):
        own = torch.stack([scores[row, index[c]] for c in dataset.relevant_docs[qid]]).max()
        ranks[qid] = 1 + int((scores[row] > own).sum())
    return ranks


def keep_by_rank(dataset: QADataset, ranks: dict[str, int], top_k: int) -> tuple[QADataset, RoundTripReport]:
    """The dataset without the questions ranked below ``top_k`` (its corpus unchanged).

    Example::

        >>> ds = QADataset(queries={"a": "甲？", "b": "乙？"}, corpus={"c": "甲乙"}, relevant_docs={"a": ["c"], "b": ["c"]})
        >>> kept, report = keep_by_rank(ds, {"a": 1, "b": 4}, top_k=3)
        >>> list(kept.queries), report.dropped
        (['a'], 1)
    """
    report = RoundTripReport(top_k=top_k, questions=len(ranks))
    keep = {q for q, r in ranks.items() if r <= top_k}
    for qid, rank in ranks.items():
        bucket = str(rank) if rank <= 10 else "11+"
        report.rank_histogram[bucket] = report.rank_histogram.get(bucket, 0) + 1
        if qid not in keep and len(report.examples) < EXAMPLES:
            report.examples.append({"question": dataset.queries[qid], "rank": rank})
    report.kept, report.dropped = len(keep), len(ranks) - len(keep)
    report.rank_histogram = dict(sorted(report.rank_histogram.items(), key=lambda kv: (kv[0] == "11+", int(kv[0].rstrip("+")))))
    kept = QADataset(
        queries={q: t for q, t in dataset.queries.items() if q in keep},
        corpus=dict(dataset.corpus),
        relevant_docs={q: d for q, d in dataset.relevant_docs.items() if q in keep},
        mode=dataset.mode,
    )
    return kept, report


def round_trip_filter(
    dataset: QADataset, model: "SentenceTransformer", top_k: int, batch_size: int = 32
) -> tuple[QADataset, RoundTripReport]:
    """Keep the questions whose own chunk the model ranks in the top ``top_k``."""
    if top_k < 1:
        raise ValueError(f"top_k must be at least 1 (0 means: do not call the round-trip filter), got {top_k}")
    kept, report = keep_by_rank(dataset, own_chunk_ranks(model, dataset, batch_size), top_k)
    log.info("round trip (top %d): kept %d of %d questions", top_k, report.kept, report.questions)
    return kept, report
