"""The split and chunks stages: whole documents to train or validation, then chunks of each."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tasks.core.fileio import read_jsonl, write_jsonl_atomic
from tasks.core.records import CHUNK_KINDS, Chunk
from tasks.core.settings import Settings
from tasks.core.stage import stage, stage_logger
from tasks.documents.stage import load_documents_file


def _plan_summary(plan: dict, cached: bool) -> dict:
    return {"by": plan["by"], "train_documents": len(plan["train_ids"]), "val_documents": len(plan["val_ids"])}


@stage("split", settings=("chunking",), summary=_plan_summary)
def split_train_val(documents_path: Path, settings: Settings) -> dict[str, Any]:
    """Assign whole documents to train or validation."""
    from tasks.chunks.split import split_documents

    docs = load_documents_file(documents_path)
    plan = split_documents([d.doc_id for d in docs], settings.val_ratio, settings.seed)
    if plan.by == "chunk":
        stage_logger().warning("only one document: splitting its chunks into train and validation instead")
    return asdict(plan)


@dataclass
class ChunksRecord:
    chunks_path: Path
    n_train_chunks: int
    n_val_chunks: int
    split_by: str
    kinds: dict[str, int] = field(default_factory=dict)  # chunks of each kind but running text


def _chunks_summary(record: ChunksRecord, cached: bool) -> dict:
    return {"train_chunks": record.n_train_chunks, "val_chunks": record.n_val_chunks,
            **{f"{kind}_chunks": record.kinds.get(kind, 0) for kind in CHUNK_KINDS[1:]}}


@stage("chunks", writes=("out_path",), settings=("chunking",), summary=_chunks_summary)
def chunk(documents_path: Path, plan: dict[str, Any], settings: Settings, out_path: Path) -> ChunksRecord:
    """Chunk every page with SentenceSplitter and tag each chunk train or val."""
    from tasks.chunks.chunking import chunk_documents
    from tasks.chunks.split import SplitPlan, assign_chunks

    chunks = chunk_documents(load_documents_file(documents_path), settings.chunk_size, settings.chunk_overlap,
                             settings.chunk_by_section)
    train, val = assign_chunks(chunks, SplitPlan(**plan), settings.val_ratio, settings.seed)
    write_jsonl_atomic(
        Path(out_path),
        [{**c.to_dict(), "split": "train"} for c in train] + [{**c.to_dict(), "split": "val"} for c in val],
    )
    kinds = Counter(c.kind for c in chunks if c.kind != "text")
    return ChunksRecord(Path(out_path), len(train), len(val), plan["by"], dict(kinds))


def load_chunks_file(path: str | Path) -> tuple[list[Chunk], list[Chunk]]:
    train, val = [], []
    for row in read_jsonl(Path(path)):
        split = row.pop("split")
        (train if split == "train" else val).append(Chunk(**row))
    return train, val
