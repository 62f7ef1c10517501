"""A full disk while the fine-tuned model is saved: a clear error, the previous model untouched.

The fault is injected where the weights are written (the safetensors writer that
transformers calls): it writes part of the file, then fails the way a full disk does,
either as an OSError (ENOSPC) or as safetensors' own error, which carries the OS
message in its text ("No space left on device (os error 28)"), as measured on a full
tmpfs.
"""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from sentence_transformers import SentenceTransformer

from tasks.core.errors import DiskFullError, PipelineError
from tasks.core.fileio import sha256_file
from tasks.training.saving import save_model_atomic
from tests.tiny_model import make_tiny_st_model


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("save")
    old = SentenceTransformer(str(make_tiny_st_model(root / "old", seed=1)))
    new = SentenceTransformer(str(make_tiny_st_model(root / "new", seed=2)))
    return old, new


def _full_disk(kind: str):
    def failing_write(tensors, filename, *args, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"\0" * 4096)  # the disk filled up part-way through the file
        if kind == "oserror":
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        from safetensors import SafetensorError

        raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    return failing_write


@pytest.mark.parametrize("kind", ["oserror", "safetensors"])
def test_disk_full_leaves_the_previous_model_untouched(tmp_path, monkeypatch, models, kind) -> None:
    import transformers.modeling_utils

    old, new = models
    out = tmp_path / "run" / "model"
    save_model_atomic(old, out)
    before = _snapshot(out)

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", _full_disk(kind))
    with pytest.raises(DiskFullError) as info:
        save_model_atomic(new, out)

    message = str(info.value)
    assert isinstance(info.value, PipelineError)  # the CLI prints it without a traceback
    assert "no space left on the disk" in message and str(out) in message
    assert "previous model" in message and "untouched" in message and "--output-dir" in message
    assert _snapshot(out) == before, "the previous model changed"
    assert sorted(p.name for p in out.parent.iterdir()) == ["model"], "a temporary folder was left behind"
    SentenceTransformer(str(out)).encode(["还能加载"])

    # Once there is space again, the same call replaces the model.
    monkeypatch.undo()
    save_model_atomic(new, out)
    assert _snapshot(out) != before


def test_disk_full_on_the_first_save_says_nothing_was_written(tmp_path, monkeypatch, models) -> None:
    import transformers.modeling_utils

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", _full_disk("oserror"))
    out = tmp_path / "model"
    with pytest.raises(DiskFullError, match="nothing was written"):
        save_model_atomic(models[1], out)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_other_save_errors_are_not_called_a_full_disk(tmp_path, monkeypatch, models) -> None:
    import transformers.modeling_utils

    old, new = models
    out = tmp_path / "model"
    save_model_atomic(old, out)
    before = _snapshot(out)

    def broken(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", broken)
    with pytest.raises(PermissionError):
        save_model_atomic(new, out)
    assert _snapshot(out) == before
