"""The one settings model: every knob of the pipeline, validated in one place.

Values come, from lowest to highest priority, from the defaults below, a TOML or
JSON config file (``--config``), environment variables prefixed ``BCE_`` (e.g.
``BCE_EPOCHS=1``), and command-line flags. The flow takes a :class:`Settings`
as its only parameter, so the Prefect UI renders it as a form.

Example::

    >>> s = Settings(epochs=1, chunk_size=200)
    >>> s.resolved_base_model()
    'bundled:multilingual-e5-small'
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

BUNDLED_E5 = "bundled:multilingual-e5-small"
BUNDLED_QWEN = "bundled:qwen2.5-coder-1.5b-instruct-q4_k_m"
BCE_MODELSCOPE_ID = "maidalun/bce-embedding-base_v1"
GPU_LLM_ID = "Qwen/Qwen2.5-7B-Instruct"

# The original recipe's task with its one-shot example. The rules come first and the
# example is marked as unrelated: with the example right before "now write", the bundled
# 1.5B model copied it for 3 of 8 chunks; in this order, 1 of 8 (and that one is caught by
# the echo check in tasks/generation.py). {context_str} and {num_questions_per_chunk} are
# filled in.
DEFAULT_PROMPT_TEMPLATE = """你是一名老师，要为一次阅读测验出题。
要求：
1. 只根据下面的参考资料出{num_questions_per_chunk}个问题，不要使用资料以外的知识；
2. 问题必须是以“？”结尾的疑问句，用自己的话提问，不要照抄资料原句，也不要写答案；
3. 只有读过这段资料的人才能回答。

格式示例（示例资料与本题无关，不要照抄示例问题）：
示例资料：光合作用是植物利用光能，把二氧化碳和水合成有机物并释放氧气的过程。
示例问题：植物通过什么过程把二氧化碳和水变成有机物？

参考资料：
---------------------
{context_str}
---------------------
只输出问题本身，每行一个。"""

Profile = Literal["cpu", "gpu"]
LLMBackendName = Literal["gguf", "openai", "vllm", "extractive"]


class Settings(BaseSettings):
    """Every setting of the fine-tuning pipeline."""

    model_config = SettingsConfigDict(
        env_prefix="BCE_",
        extra="forbid",
        validate_assignment=True,
    )

    # --- inputs and outputs -------------------------------------------------
    pdf_dir: Path = Field(Path("data/pdf"), description="Folder searched recursively for *.pdf files.")
    output_dir: Path = Field(Path("outputs/finetune_bce"), description="Where datasets, model and report are written.")
    models_dir: Path = Field(Path("models"), description="Cache of converted and downloaded models.")
    cache_dir: Path = Field(Path(".cache"), description="Per-chunk generation cache, shared by all runs.")

    # --- profile: which defaults to use for models and backends -------------
    profile: Profile = Field("cpu", description="cpu: bundled offline models; gpu: bce-embedding-base_v1 + vLLM.")

    # --- base embedding model -------------------------------------------------
    base_model: str | None = Field(
        None,
        description=(
            "Local path, ModelScope id, Hugging Face id, or 'bundled:multilingual-e5-small'. "
            "Default: bundled e5 (cpu profile) or maidalun/bce-embedding-base_v1 (gpu profile)."
        ),
    )
    model_hub: Literal["modelscope", "huggingface"] = Field(
        "modelscope", description="Where a model id (not a local path) is downloaded from."
    )
    pooling: Literal["auto", "cls", "mean"] = Field(
        "auto", description="Pooling of a converted transformers model; auto: cls for BCE, mean for e5."
    )
    query_prompt: str | None = Field(None, description="Prefix for queries; default from the model (e5: 'query: ').")
    document_prompt: str | None = Field(None, description="Prefix for documents; default from the model (e5: 'passage: ').")
    trust_remote_code: bool = Field(False, description="Allow model repositories to run their own code.")

    # --- documents and chunking ---------------------------------------------
    chunk_size: int = Field(300, gt=0, description="SentenceSplitter chunk size in tokens.")
    chunk_overlap: int = Field(30, ge=0, description="SentenceSplitter overlap in tokens.")
    val_ratio: float = Field(0.2, gt=0, lt=1, description="Share of documents held out for validation.")
    seed: int = Field(42, description="Seed for the split, generation and training.")

    # --- question generation --------------------------------------------------
    llm_backend: LLMBackendName | None = Field(
        None, description="gguf (CPU, bundled GGUF), openai (any OpenAI-compatible server), vllm (in-process, GPU), extractive (no LLM: deterministic questions for tests and smoke runs). Default by profile."
    )
    llm_model: str | None = Field(None, description="Model for the backend: a GGUF path, a served model name, or a vLLM model id.")
    llm_base_url: str = Field("http://127.0.0.1:8000/v1", description="Base URL of the OpenAI-compatible server.")
    llm_api_key: str = Field("EMPTY", description="API key sent to the OpenAI-compatible server (local servers ignore it).")
    llm_temperature: float = Field(0.7, ge=0)
    llm_top_p: float = Field(0.8, gt=0, le=1)
    llm_max_tokens: int = Field(96, gt=0, description="Most tokens written per answer.")
    llm_threads: int | None = Field(None, description="CPU threads for the gguf backend (default: all cores).")
    llm_context: int = Field(2048, gt=0, description="Context window for the gguf backend.")
    llm_timeout_s: float = Field(120.0, gt=0, description="Per-request timeout of the openai backend.")
    llm_concurrency: int = Field(8, gt=0, description="Concurrent requests of the openai backend.")
    vllm_batch_size: int = Field(512, gt=0, description="Prompts per vLLM generate call.")
    questions_per_chunk: int = Field(1, gt=0, description="Questions asked for each chunk.")
    # Filters on what the LLM wrote (applied after the cache, so changing them asks nothing again).
    filter_non_questions: bool = Field(True, description="Drop answers that are not a question (no ？ or ?).")
    max_copied_chars: int = Field(
        15, ge=0, description="Drop questions that copy more than this many consecutive characters of their chunk (0: keep all)."
    )
    min_question_chars: int = Field(4, ge=1, description="Drop questions shorter than this.")
    max_question_chars: int = Field(120, ge=1, description="Drop questions longer than this.")
    prompt_template: str = Field(DEFAULT_PROMPT_TEMPLATE, description="Prompt with {context_str} and {num_questions_per_chunk}.")

    # --- training -------------------------------------------------------------
    epochs: int = Field(3, gt=0)
    batch_size: int = Field(8, gt=1, description="Pairs per batch; the other pairs of a batch are the negatives.")
    learning_rate: float = Field(2e-5, gt=0)
    warmup_steps: int = Field(10, ge=0)
    max_seq_length: int | None = Field(None, gt=0, description="Truncate inputs to this many tokens (default: the model's).")
    loss_scale: float | None = Field(
        None,
        gt=0,
        description=(
            "Similarity scale (1/temperature) of MultipleNegativesRankingLoss. Default: the temperature the "
            "base model was trained with where known (e5: 100), else 20 (the loss's default)."
        ),
    )

    # --- evaluation -------------------------------------------------------------
    eval_batch_size: int = Field(32, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        for name in ("context_str", "num_questions_per_chunk"):
            if "{" + name + "}" not in self.prompt_template:
                raise ValueError(f"prompt_template must contain {{{name}}}")
        return self

    # --- values that depend on the profile -------------------------------------
    def resolved_base_model(self) -> str:
        if self.base_model:
            return self.base_model
        return BUNDLED_E5 if self.profile == "cpu" else BCE_MODELSCOPE_ID

    def resolved_llm_backend(self) -> str:
        if self.llm_backend:
            return self.llm_backend
        return "gguf" if self.profile == "cpu" else "vllm"

    def resolved_llm_model(self) -> str:
        if self.llm_model:
            return self.llm_model
        backend = self.resolved_llm_backend()
        if backend == "extractive":
            return "extractive"  # no model: keep a made-up name out of caches and reports
        return BUNDLED_QWEN if backend == "gguf" else GPU_LLM_ID

    def question_filters(self) -> dict[str, Any]:
        """The filter settings (part of the datasets' cache key, not of the LLM cache's)."""
        return {
            "filter_non_questions": self.filter_non_questions,
            "max_copied_chars": self.max_copied_chars,
            "min_question_chars": self.min_question_chars,
            "max_question_chars": self.max_question_chars,
        }

    def generation_fingerprint(self) -> dict[str, Any]:
        """The settings that change what the LLM writes for a chunk (the per-chunk cache key)."""
        return {
            "backend": self.resolved_llm_backend(),
            "model": self.resolved_llm_model(),
            "template": self.prompt_template,
            "questions_per_chunk": self.questions_per_chunk,
            "temperature": self.llm_temperature,
            "top_p": self.llm_top_p,
            "max_tokens": self.llm_max_tokens,
            "seed": self.seed,
        }


def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict of settings."""
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        return json.loads(text)
    return tomllib.loads(text)
