"""Benchmark: question generation on the CPU, the naive way against the gguf backend.

Both ways run in one process, on the same GGUF, the same chunks, the same threads
and the same sampling settings, one after the other:

* **naive**: the original recipe: ``llama_cpp.Llama(model_path=…)`` with its
  defaults (weights memory-mapped) and one ``create_chat_completion`` call per
  chunk with the full prompt. (llama-cpp-python already reuses the KV cache of
  the longest common prefix with the previous call, so the template's fixed
  start is not re-evaluated here either.)
* **ours**: ``tasks.questions.llm.gguf_backend.GGUFWriter`` from the pipeline's settings:
  several sequences per decode (``llm_parallel``), the fixed prefix evaluated
  once and shared, answers stopped after the asked-for questions, weights loaded
  without mmap so llama.cpp repacks them for its CPU kernels.
* ``--ablations`` adds ``ours`` with one thing switched back each
  (``llm_parallel=1``, no prefix cache, no early stop, mmap), so the table shows
  what each buys.

Each way loads its model once (timed apart, "load s"); "gen s" is the time to
answer every chunk, including the shared prefix's one-time evaluation. Output
tokens are the tokens written (end-of-turn not counted); "questions" counts
chunks whose answer parses into at least one question. "ratio" is chunks/s over
the naive way's.

Run from the repository root::

    .venv/bin/python -m bench.generation --chunks 12
    .venv/bin/python -m bench.generation --chunks 8 --threads 1 --parallel 8 --ablations
    .venv/bin/python -m bench.generation --source pdf --chunks 10

Chunks: the first CMRC 2018 passages (``../shared/data/cmrc2018_trial.json``) or
the sample PDFs (``data/pdf``), chunked like the pipeline (300/30 tokens).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

from bench.harness import CMRC_DATA as CMRC, REPO_ROOT as ROOT
from bench.harness import load_average, markdown_table, report_results
from tasks.chunks.chunking import chunk_documents
from tasks.core.settings import Settings
from tasks.questions.llm.base import Sampling
from tasks.questions.llm.cpu_threads import all_cores, import_llama_cpp
from tasks.questions.llm.gguf_backend import GGUFWriter, resolve_gguf_path
from tasks.questions.prompts import build_prompt, parse_questions

log = logging.getLogger("bench.generation")


@dataclass
class Row:
    way: str
    chunks: int
    load_s: float
    gen_s: float
    cpu_s: float  # CPU time of this process while generating (all threads): less sensitive to other load
    chunks_per_s: float
    output_tokens: int
    output_tokens_per_s: float
    prompt_tokens_evaluated: int
    questions: int
    ratio: float = 1.0
    cpu_ratio: float = 1.0
    stopped_early: int = 0  # answers ended by llm_stop_early (ours only)


# --- chunks ------------------------------------------------------------------------------


def load_chunk_texts(source: str, n: int, chunk_size: int = 300, chunk_overlap: int = 30) -> list[str]:
    """The first ``n`` distinct chunk texts of CMRC passages (``cmrc``) or of ``data/pdf`` (``pdf``)."""
    if source == "cmrc":
        from tasks.evaluation.squad import build_documents, load_squad

        documents = build_documents(load_squad(CMRC))
    else:
        from tasks.documents.reading import load_documents

        documents = load_documents(ROOT / "data" / "pdf").documents
    texts = list(dict.fromkeys(c.text for c in chunk_documents(documents, chunk_size, chunk_overlap)))
    if len(texts) < n:
        raise SystemExit(f"only {len(texts)} chunks in {source}; ask for fewer with --chunks")
    return texts[:n]


# --- the two ways --------------------------------------------------------------------------


def run_naive(model: Path, prompts: list[str], settings: Settings, threads: int) -> Row:
    """One create_chat_completion per prompt, as the original recipe does."""
    # Loaded as the backend loads it, so both ways wait the same way (llm_passive_wait).
    llama_cpp, _ = import_llama_cpp(settings.llm_passive_wait)

    started = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=str(model),
        n_ctx=settings.llm_context,
        n_threads=threads,
        n_threads_batch=threads,
        seed=settings.seed,
        verbose=False,
    )
    load_s = time.perf_counter() - started
    sampling = Sampling.from_settings(settings).as_kwargs()
    out_tokens = questions = 0
    perf_before = llama_cpp.llama_perf_context(llm._ctx.ctx).n_p_eval
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        for prompt in tqdm(prompts, desc="naive", unit="chunk"):
            result = llm.create_chat_completion(messages=[{"role": "user", "content": prompt}], **sampling)
            out_tokens += result["usage"]["completion_tokens"]
            questions += bool(parse_questions(result["choices"][0]["message"].get("content") or "", settings.questions_per_chunk))
        gen_s, cpu_s = time.perf_counter() - started, time.process_time() - cpu_started
        # Prompt tokens llama.cpp evaluated: the prefix shared with the previous call is reused, not counted.
        prompt_tokens = llama_cpp.llama_perf_context(llm._ctx.ctx).n_p_eval - perf_before
    finally:
        llm.close()
    return _row("naive", len(prompts), load_s, gen_s, cpu_s, out_tokens, prompt_tokens, questions)


def run_ours(way: str, model: Path, prompts: list[str], settings: Settings, *, use_mmap: bool = False) -> Row:
    """The pipeline's gguf writer, configured from ``settings``."""
    writer = GGUFWriter.from_settings(settings)
    writer.use_mmap = use_mmap
    started = time.perf_counter()
    writer.load()
    stats = writer.engine_stats
    load_s = time.perf_counter() - started - stats.prefix_seconds
    try:
        with tqdm(total=len(prompts), desc=way, unit="chunk") as bar:
            started, cpu_started = time.perf_counter(), time.process_time()
            raws = writer.complete(prompts, on_progress=bar.update)
            # The prefix's one-time evaluation is charged to generation: the naive way pays it in its first call.
            gen_s = time.perf_counter() - started + stats.prefix_seconds
            cpu_s = time.process_time() - cpu_started + stats.prefix_cpu_seconds
    finally:
        writer.close()
    questions = sum(bool(parse_questions(r, settings.questions_per_chunk)) for r in raws)
    evaluated = stats.prompt_tokens + stats.prefix_tokens  # the shared prefix is evaluated once per load
    row = _row(way, len(prompts), load_s, gen_s, cpu_s, stats.output_tokens, evaluated, questions)
    row.stopped_early = stats.stopped_early
    return row


def _row(way: str, n: int, load_s: float, gen_s: float, cpu_s: float, out_tokens: int, prompt_tokens: int, questions: int) -> Row:
    return Row(way, n, round(load_s, 2), round(gen_s, 2), round(cpu_s, 2), n / gen_s, out_tokens, out_tokens / gen_s,
               prompt_tokens, questions)


# --- table -------------------------------------------------------------------------------


def result_table(rows: list[Row]) -> str:
    head = ["way", "chunks", "load s", "gen s", "chunks/s", "output tokens", "output tokens/s",
            "prompt tokens evaluated", "chunks with a question", "ratio (chunks/s)", "CPU s", "ratio (CPU s)",
            "stopped early"]
    return markdown_table(head, ([
        r.way, r.chunks, f"{r.load_s:.1f}", f"{r.gen_s:.1f}", f"{r.chunks_per_s:.3f}", r.output_tokens,
        f"{r.output_tokens_per_s:.2f}", r.prompt_tokens_evaluated, r.questions, f"{r.ratio:.2f}x",
        f"{r.cpu_s:.1f}", f"{r.cpu_ratio:.2f}x", r.stopped_early,
    ] for r in rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=12, help="How many chunks to ask about (default 12).")
    parser.add_argument("--source", choices=["cmrc", "pdf"], default="cmrc" if CMRC.is_file() else "pdf")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for both ways (default: all cores).")
    parser.add_argument("--parallel", type=int, default=None, help="llm_parallel for ours (default: the setting's).")
    parser.add_argument("--ablations", action="store_true", help="Also run ours with one improvement switched off each.")
    parser.add_argument("--skip-naive", action="store_true", help="Only ours (the ratio column is then meaningless).")
    parser.add_argument("--llm-model", default=None, help="A GGUF path (default: the bundled Qwen2.5-Coder-1.5B Q4_K_M).")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_generation", help="Where results.json/.md go.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    overrides: dict[str, Any] = {"llm_backend": "gguf"}
    if args.llm_model:
        overrides["llm_model"] = args.llm_model
    # Both ways get the same threads; the backend's own choice from the free cores is
    # bench.shared_cpu_generation's subject.
    overrides["llm_threads"] = args.threads or all_cores()
    if args.parallel:
        overrides["llm_parallel"] = args.parallel
    settings = Settings(**overrides)
    model = resolve_gguf_path(settings)
    threads = settings.llm_threads
    texts = load_chunk_texts(args.source, args.chunks, settings.chunk_size, settings.chunk_overlap)
    prompts = [build_prompt(settings.prompt_template, t, settings.questions_per_chunk) for t in texts]
    load_before = load_average()
    log.info("%d chunks from %s, model %s, %d threads, load average %s", len(prompts), args.source, model.name, threads, load_before)

    ways: list[tuple[str, Callable[[], Row]]] = []
    if not args.skip_naive:
        ways.append(("naive", lambda: run_naive(model, prompts, settings, threads)))
    ways.append((f"ours (parallel {settings.llm_parallel})", lambda: run_ours(f"ours (parallel {settings.llm_parallel})", model, prompts, settings)))
    if args.ablations:
        for label, update, mmap in [
            ("ours, parallel 1", {"llm_parallel": 1}, False),
            ("ours, no prefix cache", {"llm_prefix_cache": False}, False),
            ("ours, no early stop", {"llm_stop_early": False}, False),
            ("ours, mmap (no repack)", {}, True),
        ]:
            s = settings.model_copy(update=update)
            ways.append((label, lambda label=label, s=s, mmap=mmap: run_ours(label, model, prompts, s, use_mmap=mmap)))

    rows = []
    for _, run in ways:
        rows.append(run())
    base = rows[0].chunks_per_s
    for r in rows:
        r.ratio = r.chunks_per_s / base
        r.cpu_ratio = rows[0].cpu_s / r.cpu_s if r.cpu_s else float("nan")
    load_after = load_average()
    report_results(
        args.out,
        {"rows": [asdict(r) for r in rows], "source": args.source, "threads": threads, "model": str(model),
         "load_average_before": load_before, "load_average_after": load_after,
         "llm_parallel": settings.llm_parallel},
        result_table(rows),
        f"\nload average (1/5/15 min) before: {load_before}; after: {load_after}; {threads} threads; "
        f"{os.cpu_count()} CPUs; temperature {settings.llm_temperature}, max_tokens {settings.llm_max_tokens}",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
