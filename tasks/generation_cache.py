"""Per-chunk cache of LLM answers, shared by every run.

A chunk already answered by the same model, prompt and sampling settings is never
sent again: not on a rerun, not after a crash, not when new PDFs are added. Each
answer is appended as one JSON line and flushed to disk before the next batch is
sent, so a killed run loses at most the batch in flight; a torn last line (the
kill came mid-write) is ignored on reading.

Example::

    >>> cache = GenerationCache(Path(".cache"), settings.generation_fingerprint())
    >>> cache.get(chunk_text) is None
    True
    >>> cache.put_many({chunk_text: "它是什么？"}); cache.get(chunk_text)
    '它是什么？'
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from tasks.fileio import stable_hash

log = logging.getLogger(__name__)


class GenerationCache:
    def __init__(self, cache_dir: Path, fingerprint: dict[str, Any]):
        self._fingerprint_hash = stable_hash(fingerprint)
        self.path = Path(cache_dir) / "generation" / f"{self._fingerprint_hash[:16]}.jsonl"
        self._answers: dict[str, str] = {}
        self._load()

    def key(self, chunk_text: str) -> str:
        return stable_hash([self._fingerprint_hash, chunk_text])

    def get(self, chunk_text: str) -> str | None:
        return self._answers.get(self.key(chunk_text))

    def __len__(self) -> int:
        return len(self._answers)

    def put_many(self, answers: dict[str, str]) -> None:
        """Record raw answers by chunk text, durably, before returning."""
        if not answers:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lines = []
        for text, raw in answers.items():
            key = self.key(text)
            self._answers[key] = raw
            lines.append(json.dumps({"key": key, "raw": raw}, ensure_ascii=False) + "\n")
        with open(self.path, "a+b") as f:
            # A torn last line from a killed run must not swallow the first new one.
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    lines.insert(0, "\n")
            f.write("".join(lines).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    row = json.loads(line)
                    self._answers[row["key"]] = row["raw"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    log.warning("ignoring damaged line %d of generation cache %s", n, self.path)
