"""BM25 over each chunk together with the questions written about it (Doc2Query).

A question the LLM wrote about a chunk names what the chunk is about in the words a reader
asks with; indexed with the chunk, it lets BM25 match a question whose words the chunk's
text lacks. Only questions that passed the run's filters are used (the question filters,
and the round-trip filter when it is on: the "--" of Doc2Query--, which keeps the
questions that find their own chunk).

**No question meets itself.** A question may never be searched against an index in which
it is written beside its own chunk: it would find its chunk by its own words. When a set
of questions is evaluated (:func:`expanded_scores`), each question whose text is among
its chunk's expansion is scored against an index where that chunk is expanded by its
*other* questions only (leave one out, per chunk). The questions are asked in rounds: in
round j each chunk sets aside its j-th question, if that question is asked; chunks hold a
handful of questions, so this costs a handful of BM25 indexes, not one per question.
Searching (``flows.query``) indexes every chunk with all its questions: the questions people
ask there are not among them.

Example::

    >>> expansion = {"c1": ["谁起诉了被告？", "原告是谁？"]}
    >>> expanded_texts(["c1", "c2"], ["张某起诉李某", "天气很好"], expansion)
    ['张某起诉李某\\n谁起诉了被告？\\n原告是谁？', '天气很好']
    >>> scores = expanded_scores(["c1", "c2"], ["张某起诉李某", "天气很好"], expansion,
    ...                          ["原告是谁？"], [["c1"]])
    >>> scores.shape, bool(scores[0, 0] > 0)  # found by "谁" of its sibling, not by itself
    ((1, 2), True)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tasks.core.qa_dataset import QADataset
from tasks.retrieval.lexical import BM25Index

Expansion = dict[str, list[str]]  # chunk id -> the questions written about it, in dataset order


def chunk_questions(datasets: Iterable[QADataset]) -> Expansion:
    """``{chunk id: its questions}`` from question/chunk datasets (a question with several
    chunks expands each); each question once per chunk."""
    expansion: Expansion = {}
    for dataset in datasets:
        for qid, question in dataset.queries.items():
            for chunk_id in dataset.relevant_docs.get(qid, ()):
                kept = expansion.setdefault(chunk_id, [])
                if question not in kept:
                    kept.append(question)
    return expansion


def save_expansion(expansion: Mapping[str, Sequence[str]], path: Path) -> None:
    """Write ``expansion`` as JSON (``{chunk id: [questions]}``), atomically."""
    from tasks.core.fileio import write_json_atomic

    write_json_atomic(Path(path), {c: list(qs) for c, qs in sorted(expansion.items())})


def load_expansion(path: Path) -> Expansion:
    """The expansion :func:`save_expansion` wrote."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot read the BM25 expansion {path} ({e}): run the pipeline again to rewrite it") from None
    return {str(c): [str(q) for q in qs] for c, qs in data.items()}


def expanded_texts(chunk_ids: Sequence[str], texts: Sequence[str], expansion: Mapping[str, Sequence[str]],
                   withheld: Mapping[str, set[str]] | None = None) -> list[str]:
    """Each chunk's text with its questions on lines after it, less those ``withheld`` from it."""
    withheld = withheld or {}
    return ["\n".join([text, *(q for q in expansion.get(c, ()) if q not in withheld.get(c, ()))])
            for c, text in zip(chunk_ids, texts)]


def expanded_index(chunk_ids: Sequence[str], texts: Sequence[str], expansion: Mapping[str, Sequence[str]],
                   tokenizer: str = "char") -> BM25Index:
    """BM25 over every chunk with all its questions: the index search uses."""
    return BM25Index.build(chunk_ids, expanded_texts(chunk_ids, texts, expansion), tokenizer)


def expanded_scores(chunk_ids: Sequence[str], texts: Sequence[str], expansion: Mapping[str, Sequence[str]],
                    queries: Sequence[str], relevant: Sequence[Iterable[str]], tokenizer: str = "char") -> np.ndarray:
    """BM25 scores of ``queries`` (rows) against every chunk (columns) expanded by its
    questions, no query ever scored against an index holding it beside one of its own
    chunks (``relevant``: each query's chunk ids).

    A query found in its chunk's expansion at position j (the first such chunk's) is scored in
    round j, whose index withholds, from each chunk, the questions of that round only.
    """
    rounds: dict[int, list[int]] = {}
    withheld: dict[int, dict[str, set[str]]] = {}
    for row, (query, own) in enumerate(zip(queries, relevant)):
        j = next((expansion[c].index(query) + 1 for c in own if query in expansion.get(c, ())), 0)
        rounds.setdefault(j, []).append(row)
        if j:
            for c in own:
                if query in expansion.get(c, ()):
                    withheld.setdefault(j, {}).setdefault(c, set()).add(query)
    scores = np.zeros((len(queries), len(chunk_ids)), dtype=np.float32)
    for j, rows in sorted(rounds.items()):
        index = BM25Index.build(chunk_ids, expanded_texts(chunk_ids, texts, expansion, withheld.get(j)), tokenizer)
        scores[rows] = index.score_matrix([queries[r] for r in rows])
    return scores
