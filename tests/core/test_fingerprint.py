"""Content fingerprints of files and model folders (tasks/core/caching.py): read once per process
while unchanged, read again as soon as a file changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import tasks.core.caching as stages
from tasks.core.fileio import sha256_file, write_bytes_atomic


@pytest.fixture
def reads(monkeypatch) -> list[str]:
    """The files whose bytes were hashed, in order (the memo starts empty)."""
    seen: list[str] = []

    def counting(path: Path, *args, **kwargs) -> str:
        seen.append(Path(path).name)
        return sha256_file(path, *args, **kwargs)

    monkeypatch.setattr(stages, "_FILE_HASHES", {})
    monkeypatch.setattr(stages, "sha256_file", counting)
    return seen


def _model(folder: Path) -> Path:
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"w" * 4096)
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (folder / "README.md").write_text("card")
    return folder


def test_an_unchanged_folder_is_read_once(tmp_path, reads) -> None:
    model = _model(tmp_path / "model")
    first = stages.model_fingerprint(model)
    assert sorted(reads) == ["config.json", "config.json", "model.safetensors"]  # README.md does not count
    reads.clear()
    assert stages.model_fingerprint(model) == first
    assert stages.dir_fingerprint(model) != first  # README.md counts here: read now, the rest remembered
    assert reads == ["README.md"]


def test_a_changed_file_is_read_again(tmp_path, reads) -> None:
    model = _model(tmp_path / "model")
    first = stages.model_fingerprint(model)
    reads.clear()

    weights = model / "model.safetensors"
    st = weights.stat()
    weights.write_bytes(b"v" * 4096)  # same size, written in place
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = stages.model_fingerprint(model)
    assert reads == ["model.safetensors"] and second != first

    reads.clear()
    write_bytes_atomic(model / "config.json", b'{"hidden_size": 9}')  # replaced by rename
    third = stages.model_fingerprint(model)
    assert reads == ["config.json"] and third not in (first, second)

    reads.clear()
    (model / "extra.bin").write_bytes(b"x")
    assert stages.model_fingerprint(model) != third
    assert reads == ["extra.bin"]


def test_the_memo_gives_what_a_fresh_hash_gives(tmp_path, reads) -> None:
    model = _model(tmp_path / "model")
    remembered = [stages.model_fingerprint(model), stages.model_fingerprint(model)]
    stages._FILE_HASHES.clear()
    assert remembered == [stages.model_fingerprint(model)] * 2
    f = model / "config.json"
    assert stages.file_fingerprint(f) == sha256_file(f)
    assert stages.file_fingerprint(tmp_path / "nothing") == "missing"
    assert stages.file_fingerprint(model) == "missing"  # a folder is not a file
    assert stages.dir_fingerprint(tmp_path / "nothing") == "missing"
