"""Resolve ``--reranker-model`` into the folder the reranker is trained from.

* ``base`` (the CPU profile's default): the prepared base embedding model's folder. Its
  encoder gets a new one-logit head when the reranker stage loads it as a cross-encoder.
* a local folder: a cross-encoder (or any transformers encoder), used as it is.
* a model id such as ``maidalun/bce-reranker-base_v1`` (the GPU profile's default):
  downloaded from ModelScope or the Hugging Face Hub (``settings.model_hub``) into
  ``models_dir/hub``, once; later runs reuse the download offline.

Example::

    >>> from tasks.core.settings import Settings
    >>> str(prepare_reranker_start("base", Path("models/base/multilingual-e5-small"), Settings()))
    'models/base/multilingual-e5-small'
"""

from __future__ import annotations

from pathlib import Path

from tasks.core.errors import BaseModelError
from tasks.core.settings import BCE_RERANKER_MODELSCOPE_ID, BUNDLED_E5, RERANKER_FROM_BASE, Settings
from tasks.models.base import hub_snapshot, looks_like_path


def prepare_reranker_start(spec: str, base_path: Path, settings: Settings) -> Path:
    """The folder to train the reranker from, for ``spec`` (see the module docstring)."""
    spec = spec.strip()
    if spec == RERANKER_FROM_BASE:
        return Path(base_path)
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise BaseModelError(f"reranker model {spec} has no config.json: give a cross-encoder or transformers "
                                 "model folder, or --reranker-model base")
        return path.resolve()
    if path.exists() or looks_like_path(spec):
        raise BaseModelError(f"reranker model {spec} is not a folder: give --reranker-model a model folder, a model "
                             f"id such as {BCE_RERANKER_MODELSCOPE_ID}, or base")
    return hub_snapshot(spec, settings, "reranker model", fix=(
        "pass a local cross-encoder folder with --reranker-model /path/to/reranker, or train one from the base "
        f"model offline with --reranker-model base (with --base-model {BUNDLED_E5} nothing is downloaded)."))
