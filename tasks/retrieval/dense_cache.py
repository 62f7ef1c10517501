"""Dense score matrices kept on disk, keyed by everything they are computed from.

While the training stage chooses α it scores the base model (α = 0) and the model it then
saves on the validation and guard sets; the evaluate stages need exactly those matrices
again. The key is the model's weights (their bytes, not a folder's path), its modules'
settings (truncation, pooling), its prompts, the questions and chunks in order, the batch
size and the library versions, so the second ask is a file read instead of embedding every
chunk again, and a model with other weights can never be served another model's scores.

Example::

    >>> from sentence_transformers import SentenceTransformer
    >>> from tasks.core.qa_dataset import QADataset
    >>> from tasks.core.settings import Settings
    >>> from tasks.models.base import prepare_base_model
    >>> model = SentenceTransformer(prepare_base_model(Settings(base_model="bundled:multilingual-e5-small")).path)
    >>> ds = QADataset(queries={"q": "袋鼠住在哪里？"}, relevant_docs={"q": ["a"]},
    ...                corpus={"a": "尤金袋鼠分布在澳洲南部。", "b": "泡泡战士由韩国Nexon开发。"})
    >>> import tempfile
    >>> cache = DenseScoreCache(Path(tempfile.mkdtemp()) / "scores")
    >>> first = cache.scores(model, ds)            # embeds the question and both chunks
    >>> again = cache.scores(model, ds)            # the same weights and texts: read back
    >>> bool((first == again).all()), cache.hits, cache.misses
    (True, 1, 1)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.core.fileio import write_bytes_atomic
from tasks.core.qa_dataset import QADataset

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

__all__ = ["DenseScoreCache", "weights_digest"]

logger = logging.getLogger(__name__)


def weights_digest(model: Any) -> str:
    """sha256 of every tensor of ``model``'s state dict: names, dtypes, shapes and bytes.

    −0.0 counts as 0.0: ``0·tuned + 1·base`` (the α grid's α = 0) is the base model to the
    last bit except for the sign of some zeros, which changes no score.

    >>> import torch
    >>> a, b = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    >>> b.load_state_dict(a.state_dict())
    <All keys matched successfully>
    >>> weights_digest(a) == weights_digest(b)
    True
    >>> with torch.no_grad():
    ...     b.bias += 1
    >>> weights_digest(a) == weights_digest(b)
    False
    >>> with torch.no_grad():
    ...     _ = a.bias.zero_()
    ...     _ = b.bias.copy_(-a.bias)                   # 0.0 and −0.0
    >>> weights_digest(a) == weights_digest(b)
    True
    """
    import torch

    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().reshape(-1)
        t = (t + 0.0) if t.is_floating_point() else t.contiguous()  # −0.0 + 0.0 is 0.0; nothing else moves
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy())
    return h.hexdigest()


def _versions() -> dict[str, str]:
    import sentence_transformers
    import torch
    import transformers

    return {"sentence_transformers": sentence_transformers.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__}


class DenseScoreCache:
    """``scores(model, dataset)``: :func:`tasks.retrieval.metrics.dense_scores`, computed once
    per key and kept as ``<folder>/<key>.npy``. ``folder`` None: nothing is kept.
    ``hits`` counts the scores read back, ``misses`` those computed."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = Path(folder) if folder is not None else None
        self.hits = self.misses = 0

    def scores(
        self, model: SentenceTransformer, dataset: QADataset, batch_size: int = 32,
        evaluator: InformationRetrievalEvaluator | None = None, weights: str | None = None,
    ) -> np.ndarray:
        """The scores of every question (rows) against every chunk (columns), as
        :func:`~tasks.retrieval.metrics.dense_scores` returns them. ``weights``: the model's
        :func:`weights_digest` when the caller already has it (it reads every weight)."""
        from tasks.retrieval.metrics import dense_scores, model_evaluator

        evaluator = evaluator or model_evaluator(model, dataset, batch_size)
        if self.folder is None:
            self.misses += 1
            return dense_scores(model, dataset, batch_size, evaluator)
        path = self.folder / f"{self._key(weights or weights_digest(model), model, evaluator, batch_size)}.npy"
        if path.is_file():
            try:
                scores = np.load(path, allow_pickle=False)
            except (OSError, ValueError) as e:  # a damaged file is recomputed, not trusted
                logger.warning("dense scores %s unreadable (%s): computing them again", path, e)
            else:
                if scores.shape == (len(evaluator.queries_ids), len(evaluator.corpus_ids)):
                    self.hits += 1
                    logger.info("dense scores of %d questions × %d chunks read from %s",
                                *scores.shape, path.name)
                    return scores
        self.misses += 1
        scores = dense_scores(model, dataset, batch_size, evaluator)
        buffer = io.BytesIO()
        np.save(buffer, scores, allow_pickle=False)
        self.folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, buffer.getvalue())
        return scores

    @staticmethod
    def _key(weights: str, model: Any, evaluator: Any, batch_size: int) -> str:
        content = {
            "weights": weights,
            # What the weights do not say: truncation, pooling, normalisation, the similarity.
            "modules": [[type(m).__name__, m.get_config_dict() if hasattr(m, "get_config_dict") else None]
                        for m in model],
            "max_seq_length": getattr(model, "max_seq_length", None),
            "similarity": getattr(model, "similarity_fn_name", None),
            "query_prompt": evaluator.query_prompt, "corpus_prompt": evaluator.corpus_prompt,
            "queries": list(evaluator.queries), "corpus": list(evaluator.corpus),
            "batch_size": batch_size, "versions": _versions(),
        }
        return hashlib.sha256(json.dumps(content, ensure_ascii=False).encode()).hexdigest()[:32]
