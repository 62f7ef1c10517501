"""Tiny, randomly initialised sentence-transformers models for offline tests.

The model is a real BERT (2 layers, hidden size 32) behind a real WordPiece tokenizer
(``BertTokenizer``) whose vocabulary is built with the ``tokenizers`` library's
WordPiece trainer. BERT's normaliser puts spaces around CJK characters, so Chinese is
tokenized character by character; every CJK ideograph, ASCII character and CJK
punctuation mark is in the vocabulary (about 21 000 tokens, a 3 MB model), so any
Chinese text, e.g. from the test PDFs, tokenizes without [UNK]. The same arguments
always give the same model. Building one takes well under a second, offline.

Example::

    >>> path = make_tiny_st_model(tmp_path / "tiny")
    >>> SentenceTransformer(str(path)).prompts
    {'query': 'query: ', 'document': 'passage: '}
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import BertConfig, BertModel, BertTokenizer

DEFAULT_PROMPTS: dict[str, str] = {"query": "query: ", "document": "passage: "}

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

# Words whose letters and digits all occur inside a word, so each also gets its
# "##" continuation token ("pdf" → p ##d ##f, "2024" → 2 ##0 ##2 ##4).
BASE_TEXTS = [
    "abcdefghijklmnopqrstuvwxyz zyxwvutsrqponmlkjihgfedcba 0123456789 9876543210",
    "query: passage: 今天天气很好。",
]


def make_tiny_st_model(
    path: Path,
    pooling: Literal["mean", "cls"] = "mean",
    prompts: dict[str, str] | None = DEFAULT_PROMPTS,
    texts: Iterable[str] = (),
    hidden_size: int = 32,
    num_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Build and save a tiny random BERT sentence-transformers model at ``path``.

    The same arguments give the same model (weights and vocabulary).

    Args:
        path: Folder to write the model to (created).
        pooling: ``mean`` (like multilingual-e5) or ``cls`` (like bce-embedding-base_v1).
        prompts: Prompts saved in ``config_sentence_transformers.json``; ``None`` for none.
        texts: Extra texts for the vocabulary (only adds ``##`` continuations of
            non-CJK characters that occur inside words; every character is in it anyway).
        hidden_size, num_layers: Size of the BERT.
        seed: Seed of the random weights, so the same call gives the same model.

    Returns:
        ``path``, loadable with ``SentenceTransformer(str(path))``.
    """
    path = Path(path)
    hf_dir = path / "_hf"

    vocab = _train_vocab([*BASE_TEXTS, *texts])
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True)
    tokenizer.save_pretrained(str(hf_dir))

    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=128,
        pad_token_id=vocab["[PAD]"],
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(hf_dir))

    transformer = Transformer(str(hf_dir), max_seq_length=64)
    pool = Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling)
    model = SentenceTransformer(modules=[transformer, pool], prompts=prompts or None, device="cpu")
    model.save(str(path), create_model_card=False)
    shutil.rmtree(hf_dir)
    return path


def _train_vocab(texts: list[str]) -> dict[str, int]:
    # The same normaliser and pre-tokeniser as BertTokenizer, so the trained vocabulary
    # matches how the tokenizer will split text later.
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    alphabet = _covered_characters()
    trainer = trainers.WordPieceTrainer(
        # No merges into longer tokens: on a few texts they tie, ties break in hash-map
        # order, and the vocabulary would differ between runs.
        vocab_size=1,
        min_frequency=1,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=alphabet,
        limit_alphabet=len(alphabet) + 1000,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # Number the tokens in a fixed order, so a token's id (and so its embedding row)
    # does not depend on the trainer's internal ordering.
    learned = sorted(set(tok.get_vocab()) - set(SPECIAL_TOKENS))
    return {token: i for i, token in enumerate([*SPECIAL_TOKENS, *learned])}


def _covered_characters() -> list[str]:
    ranges = [
        (0x21, 0x7E),  # ASCII letters, digits, punctuation
        (0x3000, 0x303F),  # CJK punctuation: 。、「」
        (0x4E00, 0x9FFF),  # CJK unified ideographs
        (0xFF01, 0xFF5E),  # full-width forms: ，！？：（）
    ]
    return [chr(c) for lo, hi in ranges for c in range(lo, hi + 1)]

