"""Atomic file and folder writes, and content hashes.

A reader must never see a half-written dataset, report or model, so every output is
written to a temporary name in the same folder, flushed to disk, and renamed
over the target in one step (:func:`replace_folder` does it for a whole folder).

Example::

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> write_json_atomic(out / "metrics.json", {"ndcg": 0.5})
    >>> sha256_file(out / "metrics.json")[:8]
    '4bbbfe8e'
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Literal

logger = logging.getLogger(__name__)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")


def write_jsonl_atomic(path: Path, rows: Iterable[Any]) -> None:
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: Path) -> list[Any]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


@contextmanager
def replace_folder(
    target: Path, *, if_exists: Literal["replace", "keep", "fail"] = "replace", recover: bool = False
) -> Iterator[Path]:
    """Build a folder beside ``target`` and rename it into place in one step.

    Yields an empty hidden sibling, ``.<name>.tmp-<id>``, to write into. When the block
    ends, the folder is flushed to disk and renamed to ``target``; when it raises, the
    folder is deleted and ``target`` is untouched. A reader sees the old folder or the
    new one, never half of either. If ``target`` exists by then, ``if_exists`` says what
    happens: ``"replace"`` renames it aside to ``.<name>.old-<id>``, renames the new one
    in and deletes the old; ``"keep"`` deletes the new folder and keeps the one there
    (another process built it meanwhile); ``"fail"`` raises ``FileExistsError``.

    A process killed in the middle leaves hidden ``.tmp-*`` or ``.old-*`` siblings;
    ``recover=True`` first puts the newest ``.old-*`` back when ``target`` is missing (a
    kill between the two renames) and deletes the rest. Pass it only where no other
    process writes ``target`` at the same time: their temporary folder would go too.

    Example::

        >>> index = Path(tempfile.mkdtemp()) / "index"
        >>> with replace_folder(index) as tmp:
        ...     _ = (tmp / "ids.json").write_text("[1]")
        >>> (index / "ids.json").read_text()
        '[1]'
    """
    target = Path(target)
    parent, name = target.parent, target.name
    parent.mkdir(parents=True, exist_ok=True)
    if recover:
        _recover_folder(target)
    tag = uuid.uuid4().hex[:8]
    tmp, old = parent / f".{name}.tmp-{tag}", parent / f".{name}.old-{tag}"
    tmp.mkdir()
    try:
        yield tmp
        fsync_tree(tmp)
        if not target.exists():
            os.rename(tmp, target)
        elif if_exists == "keep":
            shutil.rmtree(tmp, ignore_errors=True)
            return
        elif if_exists == "fail":
            raise FileExistsError(f"{target} exists already")
        else:  # a rename cannot replace a non-empty folder: move the old one aside first
            os.rename(target, old)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(old, target)
                raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(parent)
    shutil.rmtree(old, ignore_errors=True)


def _recover_folder(target: Path) -> None:
    """Undo what an interrupted :func:`replace_folder` left beside ``target``."""
    parent, name = target.parent, target.name
    olds = sorted(parent.glob(f".{name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and not target.exists():
        logger.warning("restoring %s from %s, left by an interrupted write", target, olds[-1].name)
        os.rename(olds.pop(), target)
    for stale in [*olds, *parent.glob(f".{name}.tmp-*")]:
        logger.info("removing %s, left by an interrupted write", stale)
        shutil.rmtree(stale, ignore_errors=True)


def fsync_tree(folder: Path) -> None:
    """Flush every file and folder under ``folder`` to disk (before renaming it into place)."""
    for path in Path(folder).rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for path in [Path(folder), *(p for p in Path(folder).rglob("*") if p.is_dir())]:
        fsync_dir(path)


def fsync_dir(folder: Path) -> None:
    """Flush a folder's entries: a rename is only durable once its directory is on disk."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_size):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stable_hash(obj: Any) -> str:
    """sha256 of a JSON-serialisable object, independent of dict order."""
    return sha256_text(json.dumps(obj, ensure_ascii=False, sort_keys=True, default=str))
