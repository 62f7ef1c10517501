"""Per-chunk cache of LLM answers, shared by every run.

A chunk already answered by the same model, prompt and sampling settings is never
sent again: not on a rerun, not after a crash, not when new PDFs are added. Each
answer is appended as one JSON line, in one write, the moment it arrives, so a
killed process (kill -9 included: the kernel keeps what was written) loses only the
answers still being written; the file is fsynced every few answers or seconds, so a
power cut loses no more than those. A torn last line (the machine went down
mid-write) is ignored on reading.

Example::

    >>> import tempfile
    >>> from tasks.core.settings import Settings
    >>> cache_dir, fingerprint = Path(tempfile.mkdtemp()), Settings().generation_fingerprint()
    >>> with GenerationCache(cache_dir, fingerprint) as cache:
    ...     cache.get("光合作用是……") is None
    ...     cache.add("光合作用是……", "它是什么？")
    True
    >>> with GenerationCache(cache_dir, fingerprint) as cache:  # a later run
    ...     cache.get("光合作用是……")
    '它是什么？'
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, BinaryIO

from tasks.core.fileio import stable_hash

log = logging.getLogger(__name__)


# fsync after this many answers or seconds, whichever comes first: one fsync per answer
# would cost more than some answers take, and a process kill loses nothing written anyway.
SYNC_EVERY_ANSWERS = 8
SYNC_EVERY_S = 2.0


class GenerationCache:
    def __init__(self, cache_dir: Path, fingerprint: dict[str, Any]):
        self._fingerprint_hash = stable_hash(fingerprint)
        self.path = Path(cache_dir) / "generation" / f"{self._fingerprint_hash[:16]}.jsonl"
        self._answers: dict[str, str] = {}
        self._file: BinaryIO | None = None
        self._unsynced = 0
        self._synced_at = time.monotonic()
        self._load()

    def key(self, chunk_text: str) -> str:
        return stable_hash([self._fingerprint_hash, chunk_text])

    def get(self, chunk_text: str) -> str | None:
        return self._answers.get(self.key(chunk_text))

    def __len__(self) -> int:
        return len(self._answers)

    def add(self, chunk_text: str, raw: str) -> None:
        """Record one raw answer: in the file (one write) before returning, fsynced within a few answers."""
        key = self.key(chunk_text)
        self._answers[key] = raw
        self._write((json.dumps({"key": key, "raw": raw}, ensure_ascii=False) + "\n").encode("utf-8"))
        self._unsynced += 1
        if self._unsynced >= SYNC_EVERY_ANSWERS or time.monotonic() - self._synced_at >= SYNC_EVERY_S:
            self.sync()

    def put_many(self, answers: dict[str, str]) -> None:
        """Record raw answers by chunk text, fsynced before returning."""
        for text, raw in answers.items():
            self.add(text, raw)
        self.close()

    def sync(self) -> None:
        """Make every answer added so far survive a power cut."""
        if self._file is not None and self._unsynced:
            os.fsync(self._file.fileno())
        self._unsynced = 0
        self._synced_at = time.monotonic()

    def close(self) -> None:
        """fsync and close the file; a later :meth:`add` opens it again."""
        if self._file is None:
            return
        try:
            self.sync()
        finally:
            self._file.close()
            self._file = None

    def __enter__(self) -> "GenerationCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _write(self, data: bytes) -> None:
        if self._file is None:
            self._file = self._open()
        view = memoryview(data)
        while view:  # an unbuffered write may take less than all of it
            view = view[self._file.write(view) :]

    def _open(self) -> BinaryIO:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+b", buffering=0)
        # A torn last line from a killed run must not swallow the first new one.
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        return f

    def _load(self) -> None:
        if not self.path.exists():
            return
        # Read as bytes: a line torn inside a character must not stop the lines after it.
        with open(self.path, "rb") as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    self._answers[row["key"]] = row["raw"]
                except (ValueError, KeyError, TypeError):
                    log.warning("ignoring damaged line %d of generation cache %s", n, self.path)
