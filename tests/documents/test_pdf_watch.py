"""The PDF watcher's logic without a server: hashing, diffs, the quiet period, the state file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.watch_pdfs import check_and_announce, watch_folder
from tasks.documents.watch import QuietTimer, diff_states, hash_pdfs, listing, load_state
from tasks.core.settings import WatchSettings


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_new_changed_removed_and_touched_files(tmp_path):
    pdfs, state_file = tmp_path / "pdfs", tmp_path / "state.json"
    _write(pdfs / "a.pdf", b"%PDF-a")
    _write(pdfs / "sub" / "B.PDF", b"%PDF-b")
    _write(pdfs / "notes.txt", b"not a pdf")
    sent = []
    changes = check_and_announce(pdfs, state_file, lambda c: sent.append(c.to_dict()) or {"id": "1"})
    assert changes.added == ["a.pdf", "sub/B.PDF"] and len(sent) == 1
    assert json.loads(state_file.read_text())["last_event"] == {"id": "1"}

    # Same bytes, new modification time: no change, no event.
    _write(pdfs / "a.pdf", b"%PDF-a")
    assert check_and_announce(pdfs, state_file, lambda c: pytest.fail("touched is not changed")).is_empty()

    _write(pdfs / "a.pdf", b"%PDF-a2")
    (pdfs / "sub" / "B.PDF").unlink()
    _write(pdfs / "c.pdf", b"%PDF-c")
    changes = check_and_announce(pdfs, state_file, lambda c: {"id": "2"})
    assert changes.to_dict() == {"added": ["c.pdf"], "changed": ["a.pdf"], "removed": ["sub/B.PDF"]}


def test_a_failed_announcement_is_repeated_next_time(tmp_path):
    pdfs, state_file = tmp_path / "pdfs", tmp_path / "state.json"
    _write(pdfs / "a.pdf", b"%PDF-a")

    def down(changes):
        raise ConnectionError("server down")

    with pytest.raises(ConnectionError):
        check_and_announce(pdfs, state_file, down)
    assert not state_file.exists()
    assert check_and_announce(pdfs, state_file, lambda c: {"id": "1"}).added == ["a.pdf"]


def test_unchanged_files_are_not_hashed_again(tmp_path, monkeypatch):
    pdfs = tmp_path / "pdfs"
    _write(pdfs / "a.pdf", b"%PDF-a")
    first = hash_pdfs(pdfs, listing(pdfs), {"files": {}})
    monkeypatch.setattr("tasks.documents.watch.sha256_file", lambda p: pytest.fail(f"hashed {p} again"))
    assert hash_pdfs(pdfs, listing(pdfs), {"files": first}) == first
    assert diff_states({"files": first}, first).is_empty()


def test_quiet_timer_waits_for_the_last_change():
    t = QuietTimer(5.0)
    assert not t.observe({"a.pdf": (1, 1)}, now=0.0)
    assert not t.observe({"a.pdf": (1, 1), "b.pdf": (1, 1)}, now=4.0)  # the burst goes on
    assert not t.observe({"a.pdf": (1, 1), "b.pdf": (1, 1)}, now=8.0)
    assert t.observe({"a.pdf": (1, 1), "b.pdf": (1, 1)}, now=9.0)


def test_a_burst_gives_one_announcement(tmp_path):
    """Files arrive at t=0, 1, 2 s; with 3 s of quiet the watcher announces once, all three."""
    pdfs, state_file = tmp_path / "pdfs", tmp_path / "state.json"
    pdfs.mkdir()
    clock = {"t": 0.0}
    arrivals = {0.0: "a.pdf", 1.0: "b.pdf", 2.0: "c.pdf"}
    sent = []

    def sleep(seconds):
        clock["t"] += seconds
        if clock["t"] in arrivals:
            _write(pdfs / arrivals[clock["t"]], arrivals[clock["t"]].encode())

    _write(pdfs / "a.pdf", b"a.pdf")
    watch_folder(pdfs, state_file, WatchSettings(quiet_seconds=3, poll_seconds=0.5),
                 lambda c: sent.append(c.added) or {"id": str(len(sent))},
                 clock=lambda: clock["t"], sleep=sleep, keep_going=lambda: clock["t"] < 20)
    assert sent == [["a.pdf", "b.pdf", "c.pdf"]]
    assert set(load_state(state_file)["files"]) == {"a.pdf", "b.pdf", "c.pdf"}


def test_a_broken_state_file_names_itself_and_the_fix(tmp_path):
    state_file = tmp_path / "state.json"
    state_file.write_text("{torn")
    with pytest.raises(ValueError, match=r"state.json is not valid JSON.*delete it"):
        load_state(state_file)


@pytest.mark.slow
def test_the_watcher_needs_a_server_and_says_how_to_name_it(tmp_path):
    import os
    import subprocess
    import sys

    (tmp_path / "pdfs").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "flows.watch_pdfs", "--once", "--pdf-dir", str(tmp_path / "pdfs"),
         "--output-dir", str(tmp_path / "out")],
        cwd=Path(__file__).resolve().parents[2], env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode != 0
    assert "PREFECT_API_URL is not set" in proc.stderr and "Traceback" not in proc.stderr
