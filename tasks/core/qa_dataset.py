"""Question/chunk datasets in LlamaIndex's EmbeddingQAFinetuneDataset JSON format.

The files stay loadable by ``EmbeddingQAFinetuneDataset.from_json`` (llama-index-finetuning)
without this project depending on that package::

    {"queries": {qid: question}, "corpus": {chunk_id: text},
     "relevant_docs": {qid: [chunk_id]}, "mode": "text"}

Example::

    >>> ds = QADataset(queries={"q1": "谁？"}, corpus={"c1": "他。"}, relevant_docs={"q1": ["c1"]})
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "val_dataset.json"
    >>> ds.save(path); QADataset.load(path) == ds
    True
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, model_validator

from tasks.core.errors import DatasetFormatError
from tasks.core.fileio import write_text_atomic


class QADataset(BaseModel):
    queries: dict[str, str]
    corpus: dict[str, str]
    relevant_docs: dict[str, list[str]]
    mode: str = "text"

    @model_validator(mode="after")
    def _consistent(self) -> "QADataset":
        missing_q = set(self.relevant_docs) - set(self.queries)
        if missing_q:
            raise ValueError(f"relevant_docs names {len(missing_q)} queries that are not in queries")
        for qid, docs in self.relevant_docs.items():
            missing = [d for d in docs if d not in self.corpus]
            if missing:
                raise ValueError(f"query {qid} is relevant to {missing[0]}, which is not in corpus")
        return self

    def pairs(self) -> list[tuple[str, str]]:
        """(question, relevant chunk text) pairs: the training examples."""
        return [
            (self.queries[qid], self.corpus[cid])
            for qid, cids in self.relevant_docs.items()
            for cid in cids
        ]

    def save(self, path: Path) -> None:
        write_text_atomic(path, self.model_dump_json(indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> "QADataset":
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls.model_validate(raw)
        except FileNotFoundError:
            raise
        except (json.JSONDecodeError, ValueError) as e:
            raise DatasetFormatError(
                f"{path} is not an EmbeddingQAFinetuneDataset JSON file "
                f"(keys queries, corpus, relevant_docs): {e}"
            ) from e


def build_dataset(corpus: dict[str, str], questions: list[tuple[str, str, str]]) -> QADataset:
    """A dataset from ``corpus`` (chunk_id → text) and (qid, chunk_id, question) triples.

    Every chunk of the split stays in the corpus, with or without a question: the
    chunks nobody asked about are the distractors retrieval must rank below the answer.
    """
    queries = {}
    relevant: dict[str, list[str]] = {}
    for qid, chunk_id, question in questions:
        if chunk_id not in corpus:
            continue
        queries[qid] = question
        relevant[qid] = [chunk_id]
    return QADataset(queries=queries, corpus=dict(corpus), relevant_docs=relevant)
