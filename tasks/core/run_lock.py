"""One run per output folder at a time.

Two runs writing the same datasets and model would interleave their files. The
lock is a file created exclusively in the output folder, holding the owner's PID
and host; a lock whose process is gone (a killed run) is stale and taken over.

Example::

    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> with RunLock(out):
    ...     RunLock(out).acquire()  # a second run on the same folder
    Traceback (most recent call last):
    tasks.core.errors.OutputFolderBusyError: ... is in use by another run (PID ...); wait for it to finish ...
    >>> (out / LOCK_NAME).exists()  # released on leaving the block
    False
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from tasks.core.errors import OutputFolderBusyError

LOCK_NAME = ".run.lock"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class RunLock:
    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_NAME
        self._held = False

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            self._held = True
            return
        raise OutputFolderBusyError(f"could not lock {self.path}")

    def _take_over_if_stale(self) -> None:
        try:
            owner = json.loads(self.path.read_text())
        except (OSError, ValueError):
            owner = {}  # empty or torn: the owner died while writing it
        pid, host = owner.get("pid"), owner.get("host")
        if isinstance(pid, int) and (host != socket.gethostname() or _alive(pid)):
            where = "" if host == socket.gethostname() else f" on {host}"
            raise OutputFolderBusyError(
                f"{self.path.parent} is in use by another run (PID {pid}{where}); wait for it to finish "
                f"or choose another --output-dir. If that run is gone, delete {self.path}."
            )
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()
