"""One settings model: defaults by profile, validation messages, and flag > env > file > default."""

from __future__ import annotations

import pytest

from flows.settings_cli import build_parser, settings_from_args
from tasks.core.errors import SettingsError
from tasks.core.settings import BCE_MODELSCOPE_ID, BUNDLED_E5, BUNDLED_QWEN, Settings


def from_argv(argv: list[str]) -> Settings:
    """What ``python -m flows.finetune_bce ARGV`` runs with."""
    return settings_from_args(build_parser("python -m flows.finetune_bce", "").parse_args(argv))


def test_profiles_choose_models_and_backends():
    cpu = Settings()
    assert (cpu.resolved_base_model(), cpu.resolved_llm_backend(), cpu.resolved_llm_model()) == (
        BUNDLED_E5, "gguf", BUNDLED_QWEN)
    gpu = Settings(profile="gpu")
    assert gpu.resolved_base_model() == BCE_MODELSCOPE_ID and gpu.resolved_llm_backend() == "vllm"
    assert Settings(profile="gpu", base_model="/m").resolved_base_model() == "/m"


def test_original_recipe_defaults():
    s = Settings()
    assert (s.chunk_size, s.chunk_overlap, s.epochs, s.batch_size, s.warmup_steps) == (300, 30, 2, 8, 10)


def test_priority_flag_over_env_over_file(tmp_path, monkeypatch):
    cfg = tmp_path / "s.toml"
    cfg.write_text('epochs = 5\nbatch_size = 4\nchunk_size = 200\n')
    monkeypatch.setenv("BCE_BATCH_SIZE", "6")
    s = from_argv(["--config", str(cfg), "--chunk-size", "150"])
    assert (s.epochs, s.batch_size, s.chunk_size) == (5, 6, 150)


def test_json_config_and_unknown_keys(tmp_path):
    cfg = tmp_path / "s.json"
    cfg.write_text('{"seed": 7}')
    assert from_argv(["--config", str(cfg)]).seed == 7
    cfg.write_text('{"sead": 7}')
    with pytest.raises(SettingsError, match="unknown settings"):
        from_argv(["--config", str(cfg)])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--chunk-size", "100", "--chunk-overlap", "100"], "--chunk-overlap: chunk_overlap (100) must be smaller"),
        (["--val-ratio", "1.5"], "--val-ratio"),
        (["--prompt-template", "没有占位符"], "{context_str}"),
    ],
)
def test_bad_values_are_explained_per_flag(argv, message):
    with pytest.raises(SettingsError) as e:
        from_argv(argv)
    assert message in str(e.value) or message.replace("--chunk-overlap: ", "") in str(e.value)


def test_unknown_backend_is_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit):
        build_parser("x", "").parse_args(["--llm-backend", "gpt"])
    assert "invalid choice" in capsys.readouterr().err


def test_booleans_and_optional_values():
    args = build_parser("x", "").parse_args(["--trust-remote-code", "--max-seq-length", "256"])
    s = settings_from_args(args)
    assert s.trust_remote_code is True and s.max_seq_length == 256


def test_the_flow_parameter_is_the_settings_form():
    from prefect.utilities.callables import parameter_schema

    from flows.finetune_bce import finetune_bce

    schema = parameter_schema(finetune_bce).model_dump()
    assert list(schema["properties"]) == ["settings"]
    form = schema["definitions"]["Settings"]["properties"]
    assert set(Settings.model_fields) == set(form)
    assert form["llm_backend"]["anyOf"][0]["enum"] == ["gguf", "openai", "vllm", "extractive"]


# --- messages a person understands ------------------------------------------


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--chunk-size", "100", "--chunk-overlap", "100"],
         "--chunk-overlap 100: chunk_overlap (100) must be smaller than chunk_size (100)"),
        (["--chunk-overlap", "500"], "--chunk-overlap 500: chunk_overlap (500) must be smaller than chunk_size (300)"),
        (["--val-ratio", "0"], "--val-ratio 0.0: Input should be greater than 0 (Share of documents held out"),
        (["--val-ratio", "1"], "--val-ratio 1.0: Input should be less than 1 (Share of documents held out"),
        (["--val-ratio", "-0.2"], "--val-ratio -0.2: Input should be greater than 0"),
        (["--garbage-threshold", "0"], "--garbage-threshold 0.0: Input should be greater than 0 (Share of unreadable"),
        (["--batch-size", "1"], "--batch-size 1: Input should be greater than 1 (Pairs per batch;"),
    ],
)
def test_each_bad_value_is_one_line_with_flag_value_and_purpose(argv, line):
    with pytest.raises(SettingsError) as e:
        from_argv(argv)
    lines = str(e.value).splitlines()
    assert lines[0] == "invalid settings:"
    assert any(entry.strip().startswith(line) for entry in lines[1:]), str(e.value)


def test_unknown_backend_from_env_or_config_lists_the_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("BCE_LLM_BACKEND", "ollama")
    with pytest.raises(SettingsError, match=r"--llm-backend ollama: Input should be 'gguf', 'openai', 'vllm' or 'extractive'"):
        from_argv([])
    monkeypatch.delenv("BCE_LLM_BACKEND")
    cfg = tmp_path / "s.toml"
    cfg.write_text('llm_backend = "gpt-4"\ngarbage_pdfs = "drop"\n')
    with pytest.raises(SettingsError) as e:
        from_argv(["--config", str(cfg)])
    assert "--llm-backend gpt-4: Input should be 'gguf'" in str(e.value)
    assert "--garbage-pdfs drop: Input should be 'skip' or 'keep'" in str(e.value)


def test_overlap_is_checked_on_assignment_too():
    s = Settings(chunk_size=200, chunk_overlap=50)
    with pytest.raises(ValueError, match=r"chunk_overlap \(50\) must be smaller than chunk_size \(40\)"):
        s.chunk_size = 40


def test_untrusted_code_and_garbage_defaults():
    s = Settings()
    assert s.trust_remote_code is False
    assert (s.garbage_pdfs, s.garbage_threshold, s.extractive_delay_s) == ("skip", 0.3, 0.0)


# --- the settings groups and the model card's settings, read from the fields ---------------


def test_a_new_field_joins_its_groups_and_the_card_from_its_own_annotation():
    from typing import Annotated

    from tasks.core.settings import Group, card_settings, setting_groups

    class WithNewKnobs(Settings):
        shown: Annotated[int, Group("training", "reranking", card=True)] = 1
        hidden: Annotated[int, Group("generation")] = 2

    groups = setting_groups(WithNewKnobs)
    assert "shown" in groups["training"] and "shown" in groups["reranking"] and "shown" not in groups["generation"]
    assert "hidden" in groups["generation"] and "hidden" not in groups["training"]
    assert "shown" in card_settings(WithNewKnobs) and "hidden" not in card_settings(WithNewKnobs)
    # What a stage reading training puts in its cache key follows.
    assert WithNewKnobs(shown=5).groups_dump(["training"])["shown"] == 5


def test_the_groups_and_the_card_are_what_the_fields_say():
    from tasks.core.settings import SETTING_GROUPS, card_settings, field_group, setting_groups
    from tasks.registry.release import CARD_SETTINGS

    assert SETTING_GROUPS == setting_groups(Settings)
    assert CARD_SETTINGS == card_settings(Settings)
    for name in Settings.model_fields:
        meta = field_group(Settings, name)
        assert all(name in SETTING_GROUPS[g] for g in meta.names)
        assert (name in CARD_SETTINGS) == meta.card
    # What made the model is on its card; where the run kept its files and the LLM's speed knobs are not.
    assert {"chunk_size", "epochs", "bm25_tokenizer", "fusion_weights"} <= set(CARD_SETTINGS)
    assert not {"output_dir", "llm_parallel", "llm_api_key"} & set(CARD_SETTINGS)


def test_a_field_without_a_group_or_with_an_unknown_one_is_refused():
    from typing import Annotated

    from tasks.core.settings import Group, setting_groups

    class Forgotten(Settings):
        knob: int = 1

    with pytest.raises(TypeError, match=r"setting knob needs exactly one Group\(...\)"):
        setting_groups(Forgotten)
    with pytest.raises(ValueError, match=r"settings groups \['trainig'\]: give one or more of"):
        Annotated[int, Group("trainig")]
