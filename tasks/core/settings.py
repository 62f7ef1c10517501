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

import functools
import json
import tomllib
from collections.abc import Collection
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, PrivateAttr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tasks.core.errors import SettingsError, UndeclaredSettingError

BUNDLED_E5 = "bundled:multilingual-e5-small"
BUNDLED_QWEN = "bundled:qwen2.5-coder-1.5b-instruct-q4_k_m"
BCE_MODELSCOPE_ID = "maidalun/bce-embedding-base_v1"
BCE_RERANKER_MODELSCOPE_ID = "maidalun/bce-reranker-base_v1"
RERANKER_FROM_BASE = "base"  # reranker_model: train one from the base embedding model's encoder
GPU_LLM_ID = "Qwen/Qwen2.5-7B-Instruct"

# The original recipe's task with its one-shot example. The rules come first and the
# example is marked as unrelated: with the example right before "now write", the bundled
# 1.5B model copied it for 3 of 8 chunks; in this order, 1 of 8 (and that one is caught by
# the echo check in tasks/questions/generation.py). {context_str} and {num_questions_per_chunk} are
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


# The settings groups, in the order docs/settings.md names them. A stage declares the groups it
# reads (``@stage(settings=(...))``): its cache key holds exactly their fields, and it sees a
# view that refuses the others (Settings.restricted), so a key cannot go stale. No stage
# declares ``flow``: the flow reads those fields itself and hands a stage what it needs as an
# argument (the PDF folder, an output path, the evaluations' retrievers), which is in the
# stage's key by value or content; promotion and the shipped retriever, decided with the
# rest, are never cached.
GROUP_NAMES = ("documents", "chunking", "models", "generation", "training", "reranking", "flow")


class Group:
    """Field metadata: the settings groups that read a field, and whether the model card of a
    run's model names it (``card``). Every field of :class:`Settings` carries one; the groups
    (:data:`SETTING_GROUPS`) and the card's settings (:func:`card_settings`) are read from them.

    Example::

        >>> class S(Settings):
        ...     new_knob: Annotated[int, Group("training", card=True)] = 1
        >>> "new_knob" in setting_groups(S)["training"], "new_knob" in card_settings(S)
        (True, True)
    """

    __slots__ = ("names", "card")

    def __init__(self, *names: str, card: bool = False) -> None:
        unknown = [n for n in names if n not in GROUP_NAMES]
        if unknown or not names:
            raise ValueError(f"settings groups {unknown or '(none)'}: give one or more of {GROUP_NAMES}")
        self.names, self.card = names, card

    def __repr__(self) -> str:
        return f"Group({', '.join(map(repr, self.names))}{', card=True' if self.card else ''})"


class Settings(BaseSettings):
    """Every setting of the fine-tuning pipeline."""

    model_config = SettingsConfigDict(
        env_prefix="BCE_",
        extra="forbid",
        validate_assignment=True,
    )

    # --- inputs and outputs -------------------------------------------------
    pdf_dir: Annotated[Path, Group("flow")] = Field(
        Path("data/pdf"), description="Folder searched recursively for *.pdf files.",
    )
    output_dir: Annotated[Path, Group("flow")] = Field(
        Path("outputs/finetune_bce"), description="Where datasets, model and report are written.",
    )
    models_dir: Annotated[Path, Group("models", "generation", "reranking")] = Field(
        Path("models"), description="Cache of converted and downloaded models.",
    )
    cache_dir: Annotated[Path, Group("generation")] = Field(
        Path(".cache"), description="Per-chunk generation cache, shared by all runs.",
    )

    # --- profile: which defaults to use for models and backends -------------
    profile: Annotated[Profile, Group("models", "generation", "reranking", card=True)] = Field(
        "cpu", description="cpu: bundled offline models; gpu: bce-embedding-base_v1 + vLLM.",
    )

    # --- base embedding model -------------------------------------------------
    base_model: Annotated[str | None, Group("models", card=True)] = Field(
        None,
        description=(
            "Local path, ModelScope id, Hugging Face id, or 'bundled:multilingual-e5-small'. "
            "Default: bundled e5 (cpu profile) or maidalun/bce-embedding-base_v1 (gpu profile)."
        ),
    )
    model_hub: Annotated[Literal["modelscope", "huggingface"], Group("models", "reranking")] = Field(
        "modelscope", description="Where a model id (not a local path) is downloaded from."
    )
    pooling: Annotated[Literal["auto", "cls", "mean"], Group("models", card=True)] = Field(
        "auto", description="Pooling of a converted transformers model; auto: cls for BCE, mean for e5."
    )
    query_prompt: Annotated[str | None, Group("models")] = Field(
        None, description="Prefix for queries; default from the model (e5: 'query: ').",
    )
    document_prompt: Annotated[str | None, Group("models")] = Field(
        None, description="Prefix for documents; default from the model (e5: 'passage: ').",
    )
    trust_remote_code: Annotated[bool, Group("models", "training", "flow", "reranking")] = Field(
        False, description="Allow model repositories to run their own code.",
    )

    # --- documents and chunking ---------------------------------------------
    chunk_size: Annotated[int, Group("chunking", card=True)] = Field(
        300, gt=0, description="SentenceSplitter chunk size in tokens.",
    )
    chunk_overlap: Annotated[int, Group("chunking", card=True)] = Field(
        30, ge=0, description="SentenceSplitter overlap in tokens.",
    )
    chunk_by_section: Annotated[bool, Group("chunking", card=True)] = Field(
        False,
        description="Cut pages at their headings before chunking and put each chunk's heading on a line before it "
        "(tasks/chunks/sections.py).",
    )
    val_ratio: Annotated[float, Group("chunking", card=True)] = Field(
        0.2, gt=0, lt=1, description="Share of documents held out for validation.",
    )
    seed: Annotated[int, Group("chunking", "generation", "training", "reranking", card=True)] = Field(
        42, description="Seed for the split, generation and training.",
    )
    val_corpus: Annotated[Literal["all", "val"], Group("generation")] = Field(
        "all",
        description=(
            "What validation questions are searched against: 'all' chunks (train and validation, as in a "
            "real index) or only the validation documents' chunks (LlamaIndex's recipe)."
        ),
    )

    # --- unreadable PDFs (see tasks/documents/quality.py) ----------------------------
    garbage_pdfs: Annotated[Literal["skip", "keep"], Group("documents")] = Field(
        "skip",
        description=(
            "What to do with a PDF whose extracted text is mostly unreadable (replacement characters, NUL, "
            "private-use characters, mojibake: usually a broken font encoding): skip it or keep it."
        ),
    )
    garbage_threshold: Annotated[float, Group("documents")] = Field(
        0.3, gt=0, le=1, description="Share of unreadable characters above which a PDF counts as unreadable."
    )
    extractive_delay_s: Annotated[float, Group("generation")] = Field(
        0.0, ge=0, description="Seconds the extractive backend waits per prompt (simulates a slow LLM in tests and demos)."
    )

    # --- question generation --------------------------------------------------
    llm_backend: Annotated[LLMBackendName | None, Group("generation", card=True)] = Field(
        None, description="gguf (CPU, bundled GGUF), openai (any OpenAI-compatible server), vllm (in-process, GPU), extractive (no LLM: deterministic questions for tests and smoke runs). Default by profile."
    )
    llm_model: Annotated[str | None, Group("generation", card=True)] = Field(
        None, description="Model for the backend: a GGUF path, a served model name, or a vLLM model id.",
    )
    llm_base_url: Annotated[str, Group("generation")] = Field(
        "http://127.0.0.1:8000/v1", description="Base URL of the OpenAI-compatible server.",
    )
    llm_api_key: Annotated[str, Group("generation")] = Field(
        "EMPTY", description="API key sent to the OpenAI-compatible server (local servers ignore it).",
    )
    llm_temperature: Annotated[float, Group("generation")] = Field(0.7, ge=0)
    llm_top_p: Annotated[float, Group("generation")] = Field(0.8, gt=0, le=1)
    llm_max_tokens: Annotated[int, Group("generation")] = Field(96, gt=0, description="Most tokens written per answer.")
    llm_threads: Annotated[int | None, Group("generation")] = Field(
        None, description="CPU threads for the gguf backend (default: the cores other programs leave free, at least 1, "
        "looked at again every few seconds while it generates)."
    )
    llm_context: Annotated[int, Group("generation")] = Field(
        2048, gt=0, description="Context window for the gguf backend.",
    )
    # gguf backend speed (measured in bench/generation.py). None of these changes
    # which question a chunk gets, only how fast: they stay out of the generation cache key.
    llm_parallel: Annotated[int, Group("generation")] = Field(
        8, gt=0, description="Prompts the gguf backend decodes together (sequences of one llama.cpp context); 1: one at a time.",
    )
    llm_batch_tokens: Annotated[int, Group("generation")] = Field(
        512, gt=0, description="Most tokens per llama.cpp decode call of the gguf backend (n_batch = n_ubatch).",
    )
    llm_prefix_cache: Annotated[bool, Group("generation")] = Field(
        True, description="gguf: evaluate the prompt's fixed start (chat header, instructions, example) once and reuse it for every chunk.",
    )
    llm_stop_early: Annotated[bool, Group("generation")] = Field(
        True, description="gguf: end an answer at the newline after its last asked-for question instead of running on.",
    )
    llm_passive_wait: Annotated[bool, Group("generation")] = Field(
        True,
        description=(
            "gguf: let llama.cpp's idle threads sleep (OMP_WAIT_POLICY=PASSIVE) instead of spinning, so another "
            "busy program does not slow generation several-fold; OMP_WAIT_POLICY in the environment wins."
        ),
    )
    llm_timeout_s: Annotated[float, Group("generation")] = Field(
        120.0, gt=0, description="Per-request timeout of the openai backend.",
    )
    llm_concurrency: Annotated[int, Group("generation")] = Field(
        8, gt=0, description="Concurrent requests of the openai backend.",
    )
    llm_unreachable_wait_s: Annotated[float, Group("generation")] = Field(
        120.0, ge=0,
        description="openai: how long a server that has answered before may refuse connections (a restart) "
        "before the stage fails; it is tried again with growing pauses meanwhile. 0: do not wait.",
    )
    vllm_batch_size: Annotated[int, Group("generation")] = Field(
        512, gt=0, description="Prompts per vLLM generate call.",
    )
    vllm_tensor_parallel_size: Annotated[int, Group("generation")] = Field(
        1, gt=0, description="GPUs one vLLM model is split over (tensor parallelism), for models too big for one GPU."
    )
    questions_per_chunk: Annotated[int, Group("generation")] = Field(
        3, gt=0,
        description=(
            "Questions asked for each chunk, in one prompt. Three cost about what one does (the prompt "
            "is most of the tokens) and give twice the usable pairs; see docs/measurements/default-run.md."
        ),
    )
    # Filters on what the LLM wrote (applied after the cache, so changing them asks nothing again).
    filter_non_questions: Annotated[bool, Group("generation")] = Field(
        True, description="Drop answers that are not a question (no ？ or ?).",
    )
    max_copied_chars: Annotated[int, Group("generation")] = Field(
        15, ge=0, description="Drop questions that copy more than this many consecutive characters of their chunk (0: keep all)."
    )
    min_question_chars: Annotated[int, Group("generation")] = Field(
        4, ge=1, description="Drop questions shorter than this.",
    )
    max_question_chars: Annotated[int, Group("generation")] = Field(
        120, ge=1, description="Drop questions longer than this.",
    )
    filter_non_chinese: Annotated[bool, Group("generation")] = Field(
        True, description="Drop questions without Chinese when their chunk is Chinese.",
    )
    filter_prompt_echo: Annotated[bool, Group("generation")] = Field(
        True, description="Drop questions that repeat the prompt's example.",
    )
    filter_duplicates: Annotated[bool, Group("generation")] = Field(
        True, description="Drop a question already kept for another chunk.",
    )
    skip_low_value_chunks: Annotated[bool, Group("generation")] = Field(
        True,
        description="Ask nothing about chunks that are mostly numbers, references, a table of contents or boilerplate (cover page, copyright).",
    )
    generation_retries: Annotated[int, Group("generation")] = Field(
        2, ge=0, description="Ask a chunk with no usable question (or an LLM error) again, with another seed, up to this many times."
    )
    max_failed_share: Annotated[float, Group("generation")] = Field(
        0.5, ge=0, le=1,
        description="Fail the run when more than this share of the chunks asked still has an LLM error or no question after the retries.",
    )
    round_trip_top_k: Annotated[int, Group("training")] = Field(
        0, ge=0, description="Keep a training question only if the base model ranks its chunk in the top k of the train chunks (0: off)."
    )
    prompt_template: Annotated[str, Group("generation")] = Field(
        DEFAULT_PROMPT_TEMPLATE,
        description="Prompt with {context_str} and {num_questions_per_chunk}; optional {examples_str}: where people's "
        "questions go (--prompt-examples; default: before the paragraph with {context_str}).",
    )

    # --- training -------------------------------------------------------------
    epochs: Annotated[int, Group("training", card=True)] = Field(
        2, gt=0,
        description="Passes over the training pairs; the epoch kept is the best on validation. A third epoch "
        "moved no held-out result by more than one question (sample PDFs, court judgments, Wikipedia) and costs "
        "a third more training.",
    )
    batch_size: Annotated[int, Group("training", card=True)] = Field(
        8, gt=1, description="Pairs per batch; the other pairs of a batch are the negatives.",
    )
    learning_rate: Annotated[float | None, Group("training", card=True)] = Field(
        None, gt=0, description="Default by model size: 2e-5 up to hidden size 384 (e5-small), 1e-5 up to 768 (BCE, base models), 5e-6 above."
    )
    warmup_steps: Annotated[int, Group("training", card=True)] = Field(10, ge=0)
    max_seq_length: Annotated[int | None, Group("training", card=True)] = Field(
        None, gt=0, description="Truncate inputs to this many tokens (default: the model's).",
    )
    loss_scale: Annotated[float | None, Group("training", card=True)] = Field(
        None,
        gt=0,
        description=(
            "Similarity scale (1/temperature) of MultipleNegativesRankingLoss. Default: the temperature the "
            "base model was trained with where known (e5: 100), else 20 (the loss's default)."
        ),
    )

    # --- training recipe (measured in bench/training_recipes.py) -----------------
    no_duplicate_batches: Annotated[bool, Group("training")] = Field(
        True, description="Never put the same text twice in a batch (it would be its own false negative).",
    )
    hard_negatives: Annotated[int, Group("training", card=True)] = Field(
        1, ge=0, description="Hard negatives per pair, mined among the training chunks by --hard-negative-miner (0: off)."
    )
    hard_negative_skip_top: Annotated[int, Group("training")] = Field(
        2, ge=0, description="Skip this many of the base model's top-ranked other chunks (likely near-duplicates of the positive)."
    )
    hard_negative_margin: Annotated[float, Group("training")] = Field(
        0.02, ge=0, description="A negative must score at least this much (cosine) below the question's positive."
    )
    hard_negative_miner: Annotated[Literal["dense", "bm25"], Group("training", card=True)] = Field(
        "dense",
        description="What ranks the hard-negative candidates: dense (the base model) or bm25 (chunks that share "
        "the question's words; the margin is not applied to BM25 scores).",
    )
    cached_loss: Annotated[bool, Group("training", card=True)] = Field(
        False, description="CachedMultipleNegativesRankingLoss: batch_size negatives with the memory of mini_batch_size."
    )
    mini_batch_size: Annotated[int, Group("training")] = Field(
        8, gt=0, description="Texts per forward pass of the cached loss.",
    )
    mixed_precision: Annotated[Literal["auto", "bf16", "fp16", "no"], Group("training")] = Field(
        "auto", description="auto: bf16 on a GPU that has it, else fp16 on a GPU, never on CPU."
    )
    gradient_checkpointing: Annotated[bool, Group("training")] = Field(
        True, description="Recompute activations in the backward pass instead of keeping them: less memory "
        "(about 1 GB on the default CPU run) for about a fifth more time per step."
    )
    attention_dropout: Annotated[float | None, Group("training")] = Field(
        0.0, ge=0, lt=1, description="Dropout on the attention weights while training; none: the base model's own "
        "(0.1 for BERT-like models). Without it PyTorch runs its fused attention, which keeps no attention "
        "matrix: about 0.7 GB less on the default CPU run, and faster. The other dropout stays."
    )
    freeze_embeddings: Annotated[bool, Group("training")] = Field(
        True, description="Leave the token embedding matrix as the base model has it (most of a multilingual "
        "model's weights): no gradient or optimizer state for it, which saves memory and time; the layers "
        "above it are trained."
    )
    keep_best_checkpoint: Annotated[bool, Group("training")] = Field(
        True, description="Evaluate on the validation set every epoch and keep the epoch with the best NDCG@10."
    )
    resume_training: Annotated[bool, Group("training")] = Field(
        True, description="Continue from the last checkpoint of an interrupted run with the same settings and data."
    )
    interpolation_alphas: Annotated[list[float], NoDecode, Group("training", card=True)] = Field(
        [0.5, 0.75],
        description="Weights α tried for α·tuned + (1−α)·base (LM-Cocktail), besides 0 (base) and 1 (tuned); [] or 1: keep the tuned weights.",
    )
    alpha_guard_margin: Annotated[float, Group("training")] = Field(
        0.5, ge=0, description="Most guard-set NDCG@10 points an α may lose against the base model."
    )

    # --- evaluation and the shipped retriever (tasks/retrieval/) -------------------
    eval_batch_size: Annotated[int, Group("training", "flow", "reranking")] = Field(32, gt=0)
    bm25_tokenizer: Annotated[Literal["char", "jieba"], Group("training", "flow", "reranking", card=True)] = Field(
        "char", description="BM25's tokens: char (CJK characters and bigrams, Latin words) or jieba (words)."
    )
    fusion_weights: Annotated[list[float], NoDecode, Group("flow", card=True)] = Field(
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
        description="Dense weights w tried for w·z(dense) + (1−w)·z(BM25), besides 0 (BM25 alone) and 1 (dense "
        "alone); see --retriever-margin for which one is shipped.",
    )
    bm25_expansion: Annotated[bool, Group("flow", card=True)] = Field(
        False,
        description="Also try BM25 over each chunk with the questions written about it (Doc2Query), alone and in "
        "the even fusion, as candidate retrievers; no question is ever scored against its own chunk expanded by "
        "it. Off by default: the LLM's validation questions, worded like the questions beside their chunk, "
        "overrate it, and on people's questions it did not help (docs/measurements/2026-12-07-bm25-expansion.md).",
    )
    retriever_margin: Annotated[float, Group("flow", card=True)] = Field(
        2.0, ge=0,
        description="The fusion nearest w=0.5 is shipped unless another retriever beats it on the validation "
        "questions by more than this many standard errors of the paired per-question NDCG@10 difference; 0: "
        "the best on validation.",
    )

    # --- the second stage: a reranker on the first stage's top chunks (tasks/reranking/) -----------
    rerank: Annotated[bool | None, Group("reranking", card=True)] = Field(
        None,
        description="Train a cross-encoder reranker on the run's questions and offer the first stage + reranker "
        "as a retriever (shipped only if validation prefers it; see --retriever-margin). Default: on with the gpu "
        "profile; off with the cpu profile, where it about doubles the default run and was not shipped on the "
        "sample PDFs (docs/measurements/2026-12-07-reranker.md).",
    )
    reranker_model: Annotated[str | None, Group("reranking", card=True)] = Field(
        None,
        description="What the reranker starts from: a local cross-encoder folder, a ModelScope/Hugging Face id, or "
        "'base' (the base embedding model's encoder with a new scoring head). Default: 'base' (cpu profile) or "
        "maidalun/bce-reranker-base_v1 (gpu profile).",
    )
    rerank_depths: Annotated[list[int], NoDecode, Group("reranking", "flow", card=True)] = Field(
        [20],
        description="How many of the first stage's top chunks the reranker re-scores; each depth is a candidate "
        "retriever (e.g. '20,50').",
    )
    rerank_weights: Annotated[list[float], NoDecode, Group("reranking", "flow", card=True)] = Field(
        [0.5, 1.0],
        description="The reranker's share w of the top chunks' score, w·z(reranker) + (1−w)·z(first stage); each "
        "share at each depth is a candidate retriever (1: the reranker's order alone).",
    )
    reranker_negatives: Annotated[int, Group("reranking", card=True)] = Field(
        4, ge=1, description="Wrong chunks from the first stage's top ranks that come with each training question "
        "(its hard negatives; the loss adds as many of the batch's other chunks)."
    )
    reranker_epochs: Annotated[int, Group("reranking", card=True)] = Field(
        2, ge=0, description="Reranker training epochs; 0: use the starting model as it is.",
    )
    reranker_learning_rate: Annotated[float | None, Group("reranking", card=True)] = Field(
        None, gt=0, description="Peak learning rate of reranker training. Default: 3e-4 when the reranker grows a new "
        "scoring head on an embedding model's encoder (the cpu profile; 5e-5 left it near chance on court judgments, "
        "docs/measurements/2026-12-07-reranker-pooler.md), 5e-5 when it starts from a reranker.",
    )
    reranker_batch_size: Annotated[int, Group("reranking", card=True)] = Field(
        8, gt=1, description="Training questions per reranker step.",
    )
    reranker_max_length: Annotated[int, Group("reranking", card=True)] = Field(
        256, gt=0, description="Tokens of question + chunk the reranker reads (the rest of a long chunk is cut)."
    )

    # --- guard set and promotion (see tasks/registry/promotion.py, data/guard/) -------------
    guard_dataset: Annotated[Path | None, Group("flow")] = Field(
        Path("data/guard/guard_dataset.json"),
        description="Human-question guard set evaluated next to the validation set ('none': no guard set).",
    )
    promotion_guard_margin: Annotated[float, Group("flow", card=True)] = Field(
        0.5, ge=0, description="Most guard-set NDCG@10 points a run may lose against the base model and be promoted."
    )
    promotion_min_gain: Annotated[float, Group("flow", card=True)] = Field(
        0.0, ge=0, description="NDCG@10 points a run must gain over the champion on the validation set, beyond a tie."
    )

    # --- questions people wrote about these PDFs (report only; see tasks/evaluation/human_questions.py) ---
    human_questions: Annotated[str, Group("flow")] = Field(
        "auto",
        description=(
            "JSON file of questions people wrote about the PDFs, each with a verbatim evidence snippet: base, "
            "champion and fine-tuned are evaluated on them (report only, chooses nothing). auto: "
            "<pdf_dir>/human_questions.json if it exists; a path; or none."
        ),
    )

    prompt_examples: Annotated[int, Group("flow")] = Field(
        0, ge=0, le=20,
        description=(
            "How many of those questions the question-writing prompt shows as examples of how people ask; they "
            "leave the evaluation of people's questions (the report says how many remain). 0: none."
        ),
    )

    @field_validator("human_questions", mode="before")
    @classmethod
    def _human_questions_word(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "off")):
            return "none"
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return str(value)

    @field_validator("guard_dataset", mode="before")
    @classmethod
    def _no_guard(cls, value: Any) -> Any:
        # The command line and BCE_GUARD_DATASET can only pass text: 'none' turns the guard set off.
        if isinstance(value, (str, Path)) and str(value).strip().lower() in ("", ".", "none", "off"):
            return None
        return value

    @field_validator("chunk_overlap")
    @classmethod
    def _overlap_below_size(cls, overlap: int, info: ValidationInfo) -> int:
        # _check repeats this for assignments; here the error names the field (--chunk-overlap).
        size = info.data.get("chunk_size")
        if size is not None and overlap >= size:
            raise ValueError(f"chunk_overlap ({overlap}) must be smaller than chunk_size ({size})")
        return overlap

    @field_validator("interpolation_alphas", "fusion_weights", "rerank_depths", "rerank_weights", mode="before")
    @classmethod
    def _alphas_from_text(cls, value: Any) -> Any:
        # From the command line or BCE_INTERPOLATION_ALPHAS: "0.25,0.5,1" (or JSON "[0.5]").
        if isinstance(value, (int, float)):
            return [value]
        if isinstance(value, str):
            text = value.strip().strip("[]")
            return [float(v) for v in text.split(",") if v.strip()]
        return value

    @model_validator(mode="after")
    def _check(self) -> "Settings":
        if self.chunk_overlap >= self.chunk_size:
            raise ValueError(
                f"chunk_overlap ({self.chunk_overlap}) must be smaller than chunk_size ({self.chunk_size})"
            )
        if any(not 0 <= a <= 1 for a in self.interpolation_alphas):
            raise ValueError(f"interpolation_alphas must lie in [0, 1], got {self.interpolation_alphas}")
        if any(not 0 < w <= 1 for w in self.rerank_weights):
            raise ValueError(f"rerank_weights must lie in (0, 1], got {self.rerank_weights}")
        if any(k < 1 for k in self.rerank_depths):
            raise ValueError(f"rerank_depths must be at least 1, got {self.rerank_depths}")
        if any(not 0 <= w <= 1 for w in self.fusion_weights):
            raise ValueError(f"fusion_weights must lie in [0, 1], got {self.fusion_weights}")
        for name in ("context_str", "num_questions_per_chunk"):
            if "{" + name + "}" not in self.prompt_template:
                raise ValueError(f"prompt_template must contain {{{name}}}")
        return self

    # --- the settings a stage reads -----------------------------------------------------
    def groups_dump(self, groups: Collection[str]) -> dict[str, Any]:
        """The fields of ``groups`` (names in :data:`SETTING_GROUPS`) as JSON values: what a
        stage that reads those groups puts in its cache key."""
        fields = group_fields(groups, type(self))
        return {k: v for k, v in self.model_dump(mode="json").items() if k in fields}

    def restricted(self, groups: Collection[str], stage: str) -> "Settings":
        """These settings, for a stage that reads only ``groups``: reading any other field
        raises, so a stage's cache key (:meth:`groups_dump`) cannot leave out a setting it uses."""
        view = _StageSettings.model_construct(**dict(self))
        view._allowed, view._stage = group_fields(groups), stage
        return view

    # --- values that depend on the profile -------------------------------------
    def resolved_base_model(self) -> str:
        if self.base_model:
            return self.base_model
        return BUNDLED_E5 if self.profile == "cpu" else BCE_MODELSCOPE_ID

    def resolved_rerank(self) -> bool:
        """Whether the run trains a reranker: the setting, else by profile (see ``rerank``)."""
        return self.rerank if self.rerank is not None else self.profile == "gpu"

    def resolved_reranker_model(self) -> str:
        """What the reranker starts from: the setting, else by profile (see ``reranker_model``)."""
        if self.reranker_model:
            return self.reranker_model
        return BCE_RERANKER_MODELSCOPE_ID if self.profile == "gpu" else RERANKER_FROM_BASE

    def resolved_reranker_learning_rate(self, new_head: bool) -> float:
        """The reranker's learning rate: the setting, else by its start (see ``reranker_learning_rate``)."""
        if self.reranker_learning_rate is not None:
            return self.reranker_learning_rate
        return 3e-4 if new_head else 5e-5

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



def field_group(model: type[BaseSettings], name: str) -> Group:
    """The :class:`Group` metadata of field ``name`` of ``model``."""
    found = [m for m in model.model_fields[name].metadata if isinstance(m, Group)]
    if len(found) != 1:
        raise TypeError(f"setting {name} needs exactly one Group(...) in its annotation (tasks/core/settings.py), "
                        f"has {len(found)}: say which stages read it, so their cache keys cover it")
    return found[0]


@functools.cache
def setting_groups(model: type[BaseSettings]) -> dict[str, tuple[str, ...]]:
    """``{group: its fields}`` of ``model``, read from each field's :class:`Group`."""
    fields = {name: field_group(model, name) for name in model.model_fields}
    return {g: tuple(name for name, meta in fields.items() if g in meta.names) for g in GROUP_NAMES}


def card_settings(model: type[BaseSettings]) -> tuple[str, ...]:
    """The fields of ``model`` that a run's model card names: what data and training made the model."""
    return tuple(name for name in model.model_fields if field_group(model, name).card)


# What each stage reads (see GROUP_NAMES). Every field is in at least one group (tests/core/test_settings.py).
SETTING_GROUPS: dict[str, tuple[str, ...]] = setting_groups(Settings)


def group_fields(groups: Collection[str], model: type[BaseSettings] | None = None) -> frozenset[str]:
    """Every field of the named groups of :data:`SETTING_GROUPS` (of ``model``'s groups, if given)."""
    table = SETTING_GROUPS if model is None else setting_groups(model)
    unknown = set(groups) - table.keys()
    if unknown:
        raise KeyError(f"unknown settings group(s) {sorted(unknown)}; known: {sorted(table)}")
    return frozenset(name for g in groups for name in table[g])


class _StageSettings(Settings):
    """Settings as one stage sees them (:meth:`Settings.restricted`)."""

    _allowed: frozenset[str] = PrivateAttr(default=frozenset())
    _stage: str = PrivateAttr(default="")

    def __getattribute__(self, name: str) -> Any:
        if name in Settings.model_fields:
            private = object.__getattribute__(self, "__pydantic_private__") or {}
            if name not in private.get("_allowed", frozenset()):
                raise UndeclaredSettingError(
                    f"the {private.get('_stage')} stage read settings.{name}, which is not in the settings groups "
                    "it declares: add the group to its @stage(settings=...) or the field to SETTING_GROUPS "
                    "(tasks/core/settings.py), so that the stage's cache key covers it"
                )
        return super().__getattribute__(name)

def load_config_file(path: Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict of settings."""
    if not path.is_file():
        raise SettingsError(f"--config {path}: no such file; give the path of a TOML or JSON settings file")
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except ValueError as e:  # json.JSONDecodeError and tomllib.TOMLDecodeError
        raise SettingsError(f"--config {path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'} "
                            f"({e}); fix the file or pass another") from None


# --- the PDF folder watcher (python -m flows.watch_pdfs) ------------------------------
# Its own small model: these knobs belong to the long-running watcher, not to a
# training run, so they stay out of the flow's parameter form. The folder it watches
# and the default place of its state file come from Settings (pdf_dir, output_dir).


class WatchSettings(BaseSettings):
    """Knobs of the PDF folder watcher; env ``BCE_WATCH_<NAME>`` or its flags.

    Example::

        >>> WatchSettings(quiet_seconds=5).poll_seconds
        2.0
    """

    model_config = SettingsConfigDict(env_prefix="BCE_WATCH_", extra="forbid", validate_assignment=True)

    quiet_seconds: float = Field(
        30.0, ge=0, description="Announce only after the folder has not changed for this long (a burst of copies gives one run)."
    )
    poll_seconds: float = Field(2.0, gt=0, description="How often the folder is listed.")
    source: str = Field(
        "local",
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="Name of the watched folder in the event's resource id bce.pdf-folder.<source>; deployment triggers match on it.",
    )
    event: str = Field("bce.pdfs.changed", description="Name of the Prefect event emitted for a change.")
    state_file: Path | None = Field(
        None, description="What was last announced (default: <output_dir>/work/pdf_watch_state.json)."
    )
