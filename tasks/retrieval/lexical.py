"""BM25 over Chinese chunks with `bm25s <https://github.com/xhluca/bm25s>`_.

Chinese has no spaces, so the text is cut into tokens first. Two tokenizers:

* ``char`` (the default): every run of CJK characters becomes its characters and its
  character bigrams; runs of Latin letters and digits become lower-cased words. No
  dictionary, so it treats a domain's unseen terms (case numbers, drug names, party
  names) like any other text.
* ``jieba``: jieba's search-engine mode (words and the sub-words of long words).

``bench/lexical_tokenizers.py`` compares the two on people's questions; ``char`` won on
both the Wikipedia and the legal set, which is why it is the default.

Example::

    >>> tokenize("原告张某于2019年起诉")
    ['原', '告', '张', '某', '于', '原告', '告张', '张某', '某于', '2019', '年', '起', '诉', '年起', '起诉']
    >>> index = BM25Index.build(["c1", "c2"], ["原告起诉被告", "今天天气很好"])
    >>> [round(float(s), 3) for s in index.scores("谁起诉了？")]
    [0.832, 0.0]
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

Tokenizer = Literal["char", "jieba"]
TOKENIZERS: tuple[str, ...] = ("char", "jieba")

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_RUNS = re.compile(rf"[{_CJK}]+|[A-Za-z0-9]+")
_IS_CJK = re.compile(rf"[{_CJK}]")
_WORD = re.compile(rf"[{_CJK}A-Za-z0-9]")


def tokenize(text: str, tokenizer: Tokenizer = "char") -> list[str]:
    """The tokens BM25 counts for ``text``; punctuation and spaces are never tokens."""
    if tokenizer == "jieba":
        return _jieba_tokens(text)
    if tokenizer != "char":
        raise ValueError(f"unknown BM25 tokenizer {tokenizer!r}; choose one of {', '.join(TOKENIZERS)}")
    tokens: list[str] = []
    for run in _RUNS.findall(text):
        if _IS_CJK.match(run):
            tokens += list(run)
            tokens += [run[i : i + 2] for i in range(len(run) - 1)]
        else:
            tokens.append(run.lower())
    return tokens


def _jieba_tokens(text: str) -> list[str]:
    import logging

    import jieba

    jieba.setLogLevel(logging.WARNING)  # it announces its dictionary load on stderr at INFO
    return [t.lower() for t in jieba.lcut_for_search(text) if _WORD.search(t)]


@dataclass
class BM25Index:
    """A BM25 index over chunks, with the chunk ids in index order.

    Scores come for every chunk at once (:meth:`scores`), which is what fusion needs.
    """

    chunk_ids: list[str]
    tokenizer: Tokenizer
    bm25: object  # bm25s.BM25

    @classmethod
    def build(cls, chunk_ids: Sequence[str], texts: Sequence[str], tokenizer: Tokenizer = "char") -> "BM25Index":
        import bm25s

        if len(chunk_ids) != len(texts):
            raise ValueError(f"{len(chunk_ids)} chunk ids for {len(texts)} texts")
        if not texts:
            raise ValueError("cannot build a BM25 index over no chunks")
        bm25 = bm25s.BM25()
        # A chunk without a single token (a page of digits-only noise is rare, but possible)
        # still needs a row: bm25s scores it through its empty token.
        bm25.index([tokenize(t, tokenizer) for t in texts], show_progress=False)
        return cls(list(chunk_ids), tokenizer, bm25)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of ``query`` for every chunk, in :attr:`chunk_ids` order."""
        ids = self.bm25.get_tokens_ids(tokenize(query, self.tokenizer))
        if not ids:  # no word of the question occurs in any chunk
            return np.zeros(len(self.chunk_ids), dtype=np.float32)
        return np.asarray(self.bm25.get_scores_from_ids(ids), dtype=np.float32)

    def score_matrix(self, queries: Sequence[str]) -> np.ndarray:
        """``scores`` of each query, one row per query."""
        return np.stack([self.scores(q) for q in queries]) if queries else np.zeros((0, len(self.chunk_ids)))

    def save(self, folder: Path) -> None:
        """Write the index into ``folder`` (bm25s's files plus ``chunk_ids.json``)."""
        folder = Path(folder)
        self.bm25.save(str(folder), show_progress=False)
        (folder / "chunk_ids.json").write_text(
            json.dumps({"tokenizer": self.tokenizer, "chunk_ids": self.chunk_ids}, ensure_ascii=False),
            encoding="utf-8",
        )

    @classmethod
    def load(cls, folder: Path) -> "BM25Index":
        import bm25s

        folder = Path(folder)
        meta = json.loads((folder / "chunk_ids.json").read_text(encoding="utf-8"))
        return cls(meta["chunk_ids"], meta["tokenizer"], bm25s.BM25.load(str(folder), show_progress=False))
