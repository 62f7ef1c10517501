"""A LlamaIndex embedding model backed by a local sentence-transformers folder.

It encodes queries with the folder's ``query`` prompt and chunks with its ``document``
prompt (``encode_query`` / ``encode_document``), exactly as the pipeline trained and
evaluated the model, and returns normalised vectors. ``HuggingFaceEmbedding``
(llama-index-embeddings-huggingface) replaces the folder's prompts with its own
``query_instruction``/``text_instruction`` arguments (which must then be passed by hand)
and pulls ``huggingface-hub[inference]``; this adapter needs neither.

Example, with the bundled e5 (a run's shipped model, ``outputs/finetune_bce/current``, loads
the same way)::

    >>> from llama_index.core import VectorStoreIndex
    >>> from llama_index.core.schema import TextNode
    >>> from tasks.core.settings import Settings
    >>> from tasks.models.base import prepare_base_model
    >>> embed = SentenceTransformerEmbedding(prepare_base_model(Settings(base_model="bundled:multilingual-e5-small")).path)
    >>> embed.prompts
    {'query': 'query: ', 'document': 'passage: '}
    >>> nodes = [TextNode(text="尤金袋鼠分布在澳洲南部。"), TextNode(text="泡泡战士由韩国Nexon开发。")]
    >>> index = VectorStoreIndex(nodes, embed_model=embed)
    >>> index.as_retriever(similarity_top_k=1).retrieve("袋鼠住在哪里？")[0].node.text
    '尤金袋鼠分布在澳洲南部。'
"""

from __future__ import annotations

from typing import Any

from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr


class SentenceTransformerEmbedding(BaseEmbedding):
    """``BaseEmbedding`` over ``SentenceTransformer(model_path)``, with the model's own prompts."""

    model_path: str = ""
    _model: Any = PrivateAttr()

    def __init__(self, model_path: str, *, device: str | None = None, trust_remote_code: bool = False,
                 embed_batch_size: int = 32, **kwargs: Any) -> None:
        from sentence_transformers import SentenceTransformer

        super().__init__(model_name=str(model_path), model_path=str(model_path),
                         embed_batch_size=embed_batch_size, **kwargs)
        self._model = SentenceTransformer(str(model_path), device=device, trust_remote_code=trust_remote_code,
                                          local_files_only=True)

    @property
    def model(self) -> Any:
        """The ``SentenceTransformer`` it encodes with (search embeds its questions with it too)."""
        return self._model

    @classmethod
    def class_name(cls) -> str:
        return "SentenceTransformerEmbedding"

    @property
    def prompts(self) -> dict[str, str]:
        return dict(self._model.prompts)

    def _encode(self, texts: list[str], query: bool) -> list[list[float]]:
        encode = self._model.encode_query if query else self._model.encode_document
        vectors = encode(texts, batch_size=self.embed_batch_size, normalize_embeddings=True,
                         convert_to_numpy=True, show_progress_bar=False)
        return vectors.tolist()

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._encode([query], query=True)[0]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._encode([text], query=False)[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return self._encode(list(texts), query=False)
