"""Notice new, changed and removed PDFs in a folder, by content hash, after the folder went quiet.

The watcher (``python -m flows.watch_pdfs``) polls the folder. A cheap listing
(path, size, modification time) tells whether anything is still moving; only once it
has not changed for ``quiet_seconds`` are the files hashed and compared with the
state of the last announcement, so a burst of copies gives one announcement, and a
file still being copied is never hashed half-written. The state file is written
atomically after the announcement went out: a crash in between announces again
(at least once), never loses a change.

Example::

    >>> state = load_state(Path("outputs/finetune_bce/work/pdf_watch_state.json"))
    >>> current = hash_pdfs(Path("data/pdf"), listing(Path("data/pdf")), state)
    >>> diff_states(state, current).is_empty()
    False
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tasks.documents.reading import find_pdfs
from tasks.core.fileio import sha256_file, write_json_atomic

STATE_VERSION = 1

# path relative to the folder -> (size, mtime_ns): what says "something is still moving".
Listing = dict[str, tuple[int, int]]


def listing(pdf_dir: Path) -> Listing:
    """Size and modification time of every PDF under ``pdf_dir`` (no file is read)."""
    pdf_dir = Path(pdf_dir)
    out: Listing = {}
    for path in find_pdfs(pdf_dir):
        try:
            st = path.stat()
        except FileNotFoundError:  # removed between the walk and the stat
            continue
        out[path.relative_to(pdf_dir).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def hash_pdfs(pdf_dir: Path, files: Listing, previous: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{path: {sha256, size, mtime_ns}}`` for ``files``; unchanged size and mtime reuse the old hash.

    ``previous`` is a state from :func:`load_state`.
    """
    old = previous.get("files", {})
    out: dict[str, dict[str, Any]] = {}
    for rel, (size, mtime_ns) in sorted(files.items()):
        known = old.get(rel)
        if known and known.get("size") == size and known.get("mtime_ns") == mtime_ns:
            out[rel] = known
            continue
        try:
            digest = sha256_file(Path(pdf_dir) / rel)
        except FileNotFoundError:
            continue
        out[rel] = {"sha256": digest, "size": size, "mtime_ns": mtime_ns}
    return out


@dataclass
class PdfChanges:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.added or self.changed or self.removed)

    def to_dict(self) -> dict[str, list[str]]:
        return {"added": self.added, "changed": self.changed, "removed": self.removed}


def diff_states(previous: dict[str, Any], current: dict[str, dict[str, Any]]) -> PdfChanges:
    """What differs between the announced state and the current hashes; a touched file is no change."""
    old = previous.get("files", {})
    return PdfChanges(
        added=sorted(set(current) - set(old)),
        changed=sorted(p for p in set(current) & set(old) if current[p]["sha256"] != old[p]["sha256"]),
        removed=sorted(set(old) - set(current)),
    )


def load_state(path: Path) -> dict[str, Any]:
    """The last announced state, or an empty one if there is none yet (every PDF is then new)."""
    path = Path(path)
    if not path.is_file():
        return {"version": STATE_VERSION, "files": {}}
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ValueError(f"watch state file {path} is not valid JSON ({e}); delete it to announce every PDF again") from e
    if state.get("version") != STATE_VERSION or not isinstance(state.get("files"), dict):
        raise ValueError(f"watch state file {path} has an unknown format; delete it to announce every PDF again")
    return state


def save_state(path: Path, files: dict[str, dict[str, Any]], last_event: dict[str, Any] | None) -> None:
    write_json_atomic(Path(path), {"version": STATE_VERSION, "files": files, "last_event": last_event})


class QuietTimer:
    """Says when a listing has stayed the same for ``quiet_seconds`` (time is passed in, for tests).

    Example::

        >>> t = QuietTimer(5.0)
        >>> t.observe({"a.pdf": (1, 1)}, now=0.0), t.observe({"a.pdf": (1, 1)}, now=5.0)
        (False, True)
    """

    def __init__(self, quiet_seconds: float):
        self.quiet_seconds = quiet_seconds
        self._last: Listing | None = None
        self._since = 0.0

    def observe(self, current: Listing, now: float) -> bool:
        if current != self._last:
            self._last, self._since = current, now
        return now - self._since >= self.quiet_seconds
