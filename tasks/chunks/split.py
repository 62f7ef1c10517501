"""Train/validation split by document.

Questions about one document must not land on both sides, or the validation set
measures memorisation. Each document is ranked by a hash of the seed and its
content id, so the split depends only on the files' contents and the seed — not
on the order the file system lists them — and adding a PDF leaves the other
documents where they were (unless the validation count itself grows).

Example::

    >>> plan = split_documents(["d1", "d2", "d3", "d4", "d5"], val_ratio=0.2, seed=42)
    >>> len(plan.val_ids), plan.by
    (1, 'document')
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tasks.core.errors import UnusableDataError
from tasks.core.fileio import sha256_text
from tasks.core.records import Chunk


@dataclass(frozen=True)
class SplitPlan:
    train_ids: list[str]
    val_ids: list[str]
    by: str  # "document", or "chunk" when there is a single document


def _rank(seed: int, key: str) -> str:
    return sha256_text(f"{seed}:{key}")


def _n_val(n: int, val_ratio: float) -> int:
    # At least one item on each side; round half up so 5 × 0.2 → 1 and 10 × 0.25 → 3.
    return min(max(1, math.floor(n * val_ratio + 0.5)), n - 1)


def split_documents(doc_ids: list[str], val_ratio: float, seed: int) -> SplitPlan:
    """Assign whole documents to train or validation; one document means a chunk split."""
    unique = sorted(set(doc_ids))
    if not unique:
        raise ValueError("no documents to split")
    if len(unique) == 1:
        return SplitPlan(train_ids=unique, val_ids=[], by="chunk")
    ranked = sorted(unique, key=lambda d: _rank(seed, d))
    n_val = _n_val(len(ranked), val_ratio)
    return SplitPlan(train_ids=sorted(ranked[n_val:]), val_ids=sorted(ranked[:n_val]), by="document")


def assign_chunks(chunks: list[Chunk], plan: SplitPlan, val_ratio: float, seed: int) -> tuple[list[Chunk], list[Chunk]]:
    """The train and validation chunks under ``plan`` (a chunk-level split for one document)."""
    if plan.by == "document":
        val_docs = set(plan.val_ids)
        return [c for c in chunks if c.doc_id not in val_docs], [c for c in chunks if c.doc_id in val_docs]
    if len(chunks) < 2:
        raise UnusableDataError(
            f"only {len(chunks)} chunk in the single document: nothing to validate on; "
            "add PDFs or lower --chunk-size"
        )
    ranked = sorted(chunks, key=lambda c: _rank(seed, c.chunk_id))
    val_ids = {c.chunk_id for c in ranked[: _n_val(len(ranked), val_ratio)]}
    return [c for c in chunks if c.chunk_id not in val_ids], [c for c in chunks if c.chunk_id in val_ids]
