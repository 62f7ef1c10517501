"""Writing what training made: the finished model, swapped in whole, and the weights training
starts from, kept on disk for the interpolation.

A full disk while saving stops the run with what to do and leaves the previous model as it
was (:func:`save_model_atomic`).

Example::

    >>> import torch, tempfile
    >>> model = torch.nn.Linear(2, 1)
    >>> _ = model.bias.requires_grad_(False)  # frozen: training leaves it as the base has it
    >>> path = Path(tempfile.mkdtemp()) / BASE_STATE
    >>> save_trainable_state(model, path)
    >>> sorted(torch.load(path, weights_only=True))
    ['weight']
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import TYPE_CHECKING

from tasks.core.errors import DiskFullError
from tasks.core.fileio import replace_folder

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

BASE_STATE = "base_state.pt"


def save_trainable_state(model: SentenceTransformer, path: Path) -> None:
    """The weights training will change, as they are now, exactly (also weights the base
    folder lacks and transformers initialised at random), for :func:`torch.load` with
    ``mmap=True``. Frozen weights (the token embeddings, most of a multilingual model) stay
    out: they are the base's at the end too, so the interpolation leaves them alone."""
    import torch

    trained = {name for name, p in model.named_parameters(remove_duplicate=False) if p.requires_grad}
    # Written again on every start: a run killed while writing it leaves a torn file, and a
    # resumed run interpolates with the weights it loaded itself, as an uninterrupted one does.
    torch.save({k: v for k, v in model.state_dict().items() if k in trained}, path)


def save_model_atomic(model: SentenceTransformer, output_dir: Path) -> None:
    """Save ``model`` (safetensors + model card) to ``output_dir``, replacing it in one step.

    Written with :func:`~tasks.core.fileio.replace_folder`: if saving fails, ``output_dir``
    is untouched; a kill between its two renames leaves the old model under
    ``.<name>.old-*``, which the next save puts back first (the run lock keeps other
    writers out, so their leftovers are safe to delete).
    """
    output_dir = Path(output_dir)
    try:
        with replace_folder(output_dir, recover=True) as tmp:
            model.save_pretrained(str(tmp), create_model_card=True, safe_serialization=True)
    except BaseException as exc:
        if _is_disk_full(exc):
            kept = f"the previous model in {output_dir} is untouched" if output_dir.exists() else "nothing was written"
            raise DiskFullError(
                f"no space left on the disk while saving the model to {output_dir}: {kept}. Free some space "
                f"on that disk (the model needs about {_size_mb(model):.0f} MB) or choose another --output-dir, "
                "then run again; finished stages are not repeated."
            ) from exc
        raise


def _is_disk_full(exc: BaseException) -> bool:
    # safetensors reports a full disk as SafetensorError("... No space left on device (os
    # error 28)"), not as an OSError, so the message is checked as well as the errno.
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "os error 28" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _size_mb(model: SentenceTransformer) -> float:
    try:
        return sum(p.numel() * p.element_size() for p in model.parameters()) / 1e6
    except Exception:  # the estimate only sharpens the message
        return 0.0
