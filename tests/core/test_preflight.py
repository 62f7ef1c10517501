"""Settings that cannot work fail before any stage, with the flag and the fix in the message."""

from __future__ import annotations

import importlib.util
import os

import pytest

from tasks.core.errors import PreflightError
from tasks.core.preflight import check_settings
from tasks.core.settings import Settings


def _ok(tmp_path, **kw) -> Settings:
    (tmp_path / "pdfs").mkdir(exist_ok=True)
    base = dict(pdf_dir=tmp_path / "pdfs", output_dir=tmp_path / "out", models_dir=tmp_path / "m",
                cache_dir=tmp_path / "c", llm_backend="extractive")
    return Settings(**{**base, **kw})


def test_good_settings_pass(tmp_path):
    check_settings(_ok(tmp_path))


def test_missing_pdf_folder(tmp_path):
    with pytest.raises(PreflightError, match="--pdf-dir"):
        check_settings(_ok(tmp_path, pdf_dir=tmp_path / "nope"))


def test_missing_base_model_path_fails_before_the_run(tmp_path):
    with pytest.raises(PreflightError, match=r"--base-model: the path .*/no/such does not exist"):
        check_settings(_ok(tmp_path, base_model=str(tmp_path / "no" / "such")))


def test_model_ids_are_not_checked_as_paths(tmp_path):
    check_settings(_ok(tmp_path, base_model="maidalun/bce-embedding-base_v1"))


def test_gguf_path_must_exist(tmp_path):
    with pytest.raises(PreflightError, match="--llm-model"):
        check_settings(_ok(tmp_path, llm_backend="gguf", llm_model=str(tmp_path / "x.gguf")))


def test_vllm_missing_is_explained(tmp_path):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed")
    with pytest.raises(PreflightError, match=r"\.\[vllm\]"):
        check_settings(_ok(tmp_path, llm_backend="vllm"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(PreflightError, match="--output-dir: cannot write"):
        check_settings(_ok(tmp_path, output_dir=ro / "out"))


def test_output_path_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(PreflightError, match="is a file"):
        check_settings(_ok(tmp_path, output_dir=f / "out"))


# --- bad settings ----------------------------------------------------------------------------


def test_unwritable_output_even_as_root(tmp_path, monkeypatch):
    # os.access answers True for root, so the refusal is simulated where the check asks.
    import tasks.core.preflight as preflight

    ro = tmp_path / "ro"
    ro.mkdir()
    real = os.access
    monkeypatch.setattr(preflight.os, "access", lambda p, mode: False if os.fspath(p) == str(ro) else real(p, mode))
    with pytest.raises(PreflightError) as e:
        check_settings(_ok(tmp_path, output_dir=ro / "run1"))
    assert str(e.value) == f"--output-dir: cannot write to {ro}; choose a folder you can write to"


def test_missing_base_model_names_the_flag_the_path_and_the_fix(tmp_path):
    missing = tmp_path / "models" / "bce-embedding-base_v1"
    with pytest.raises(PreflightError) as e:
        check_settings(_ok(tmp_path, base_model=str(missing)))
    message = str(e.value)
    assert message.startswith(f"--base-model: the path {missing} does not exist")
    assert "bundled:multilingual-e5-small" in message


@pytest.mark.parametrize(
    "n_train_chunks, n_val_chunks, batch_size, message",
    [
        (10, 0, 8, "the validation split has no chunks: add PDFs or raise --val-ratio"),
        (2, 2, 8, "2 training chunks give at most 6 pairs, fewer than --batch-size 8"),
    ],
)
def test_unusable_chunks_fail_before_generation(n_train_chunks, n_val_chunks, batch_size, message):
    from tasks.core.errors import PipelineError, UnusableDataError
    from tasks.core.preflight import check_usable

    with pytest.raises(UnusableDataError, match=message) as e:
        check_usable(n_train_chunks, n_val_chunks, Settings(batch_size=batch_size))
    assert isinstance(e.value, PipelineError)  # printed without a traceback by the CLI


@pytest.mark.parametrize(
    "n_train, n_val, message",
    [
        (20, 0, "no validation question was kept"),
        (5, 4, "5 training questions were kept, fewer than --batch-size 8"),
    ],
)
def test_unusable_datasets_fail_before_training(n_train, n_val, message):
    from tasks.core.preflight import check_datasets
    from tasks.core.errors import UnusableDataError

    with pytest.raises(UnusableDataError, match=message):
        check_datasets(n_train, n_val, Settings(batch_size=8))
    check_datasets(8, 1, Settings(batch_size=8))
