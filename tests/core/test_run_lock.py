"""A second run on the same output folder refuses; a dead run's lock is taken over."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from tasks.core.errors import OutputFolderBusyError
from tasks.core.run_lock import LOCK_NAME, RunLock


@pytest.mark.slow
def test_second_run_refuses_while_the_first_lives(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": sleeper.pid, "host": socket.gethostname()}))
        with pytest.raises(OutputFolderBusyError, match=f"PID {sleeper.pid}"):
            RunLock(tmp_path).acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    # The owner is gone now: the lock is stale and taken over.
    with RunLock(tmp_path) as lock:
        assert json.loads(lock.path.read_text())["pid"] != sleeper.pid
    assert not (tmp_path / LOCK_NAME).exists()


def test_torn_lock_file_is_stale(tmp_path):
    (tmp_path / LOCK_NAME).write_text('{"pid": ')
    with RunLock(tmp_path):
        pass


def test_lock_is_released_on_error(tmp_path):
    with pytest.raises(ZeroDivisionError):
        with RunLock(tmp_path):
            1 / 0
    assert not (tmp_path / LOCK_NAME).exists()
