"""Settings that cannot work fail before any stage, with the flag and the fix in the message."""

from __future__ import annotations

import importlib.util
import os

import pytest

from tasks.preflight import PreflightError, check_settings
from tasks.settings import Settings


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
