"""Datasets stay loadable by LlamaIndex's EmbeddingQAFinetuneDataset.

llama-index-finetuning is not a dependency (deprecated, heavy), so its schema is
restated here exactly — four fields, ``from_json`` = ``cls(**json.load(f))`` — with
extra keys forbidden, so any drift in what we write fails the test.
"""

from __future__ import annotations

import json
from typing import Dict, List

import pytest
from llama_index.core.bridge.pydantic import BaseModel, ConfigDict

from tasks.core.errors import DatasetFormatError
from tasks.core.qa_dataset import QADataset, build_dataset


class EmbeddingQAFinetuneDataset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    queries: Dict[str, str]
    corpus: Dict[str, str]
    relevant_docs: Dict[str, List[str]]
    mode: str = "text"

    @classmethod
    def from_json(cls, path: str) -> "EmbeddingQAFinetuneDataset":
        with open(path) as f:
            return cls(**json.load(f))


def test_written_dataset_loads_with_llamaindex_schema(tmp_path):
    ds = build_dataset(
        {"c1": "尤金袋鼠分布在澳洲南部。", "c2": "泡泡战士是一款游戏。", "c3": "没有人问到的段落。"},
        [("q1", "c1", "尤金袋鼠分布在哪里？"), ("q2", "c2", "泡泡战士是什么？"), ("q3", "gone", "孤儿问题？")],
    )
    path = tmp_path / "val_dataset.json"
    ds.save(path)
    li = EmbeddingQAFinetuneDataset.from_json(str(path))
    assert li.queries == {"q1": "尤金袋鼠分布在哪里？", "q2": "泡泡战士是什么？"}
    assert li.relevant_docs == {"q1": ["c1"], "q2": ["c2"]}
    assert "c3" in li.corpus  # unasked chunks stay as distractors
    assert li.mode == "text"
    assert QADataset.load(path) == ds
    assert ds.pairs() == [("尤金袋鼠分布在哪里？", "尤金袋鼠分布在澳洲南部。"), ("泡泡战士是什么？", "泡泡战士是一款游戏。")]




def test_inconsistent_or_foreign_files_are_named_in_the_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"queries": {"q": "?"}, "corpus": {}, "relevant_docs": {"q": ["missing"]}}))
    with pytest.raises(DatasetFormatError, match="bad.json"):
        QADataset.load(bad)
    other = tmp_path / "other.json"
    other.write_text("[1, 2, 3]")
    with pytest.raises(DatasetFormatError, match="other.json"):
        QADataset.load(other)
