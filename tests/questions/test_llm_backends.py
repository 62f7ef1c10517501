"""The question writers: dispatch, the OpenAI client against a real local server, vLLM batching
with a fake vllm module, llama.cpp with a fake and (when built) the real bundled model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tasks.core.errors import LLMError
from tasks.questions.llm import BaseWriter, QuestionWriter, make_writer
from tasks.questions.llm.extractive_backend import ExtractiveWriter, extract_context
from tasks.questions.llm.vllm_backend import VLLMWriter, batched
from tasks.questions.prompts import build_prompt, parse_questions
from tasks.core.settings import DEFAULT_PROMPT_TEMPLATE, Settings

ROOT = Path(__file__).resolve().parents[2]


def _prompt(context: str) -> str:
    return build_prompt(DEFAULT_PROMPT_TEMPLATE, context, 1)


# --- dispatch and imports -------------------------------------------------------


@pytest.mark.slow
def test_importing_the_backends_needs_neither_vllm_nor_llama_cpp():
    code = (
        "import sys, tasks.questions.llm, tasks.questions.llm.vllm_backend, tasks.questions.llm.gguf_backend, "
        "tasks.questions.llm.openai_backend, tasks.questions.llm.extractive_backend, tasks.questions.llm.bundled; "
        "sys.modules['vllm'] = None; sys.modules['llama_cpp'] = None; "
        "import importlib; importlib.reload(tasks.questions.llm.vllm_backend); "
        "print(sorted(m for m in ('vllm', 'llama_cpp', 'torch') if sys.modules.get(m)))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_make_writer_picks_the_backend_without_loading_anything(tmp_path):
    fake_gguf = tmp_path / "model.gguf"
    fake_gguf.write_bytes(b"GGUF")
    cases = {
        "extractive": Settings(llm_backend="extractive"),
        "openai": Settings(llm_backend="openai", llm_model="qwen"),
        "vllm": Settings(llm_backend="vllm"),
        "gguf": Settings(llm_backend="gguf", llm_model=str(fake_gguf)),
    }
    for name, settings in cases.items():
        writer = make_writer(settings)
        try:
            assert writer.name == name
            assert isinstance(writer, QuestionWriter)
            assert writer.requests_sent == 0
        finally:
            writer.close()


def test_gguf_backend_rejects_a_missing_model_file(tmp_path):
    with pytest.raises(LLMError, match="not a GGUF file"):
        make_writer(Settings(llm_backend="gguf", llm_model=str(tmp_path / "nope.gguf")))


def test_with_statement_closes_the_writer():
    closed = []

    class Writer(BaseWriter):
        name = "test"

        def close(self):
            closed.append(True)

    with Writer() as writer:
        assert writer.requests_sent == 0
    assert closed == [True]


# --- extractive -----------------------------------------------------------------------

CHUNK = "向量检索是RAG系统的核心环节，嵌入模型把文本块编码成稠密向量。用户提问时，问题同样被编码成向量，再找出最相近的文本块。"


def test_extractive_is_deterministic_and_asks_about_the_chunk():
    prompts = [_prompt(CHUNK), _prompt("光合作用是植物利用光能，把二氧化碳和水合成有机物的过程。")]
    first = ExtractiveWriter().complete(prompts)
    writer = ExtractiveWriter()
    assert writer.complete(prompts) == first
    assert writer.requests_sent == 2
    for raw, prompt in zip(first, prompts):
        [question] = parse_questions(raw, 1)
        assert question == raw and question.endswith("？")
        clause = question.split("“")[1].split("”")[0]
        assert 4 <= len(clause) <= 20 and clause.replace(" ", "") in extract_context(prompt).replace(" ", "")
        # The one-shot example of the template is not the chunk.
        assert "光合作用" not in question or "光合作用" in prompt.split("---------------------")[1]


def test_extractive_writes_n_distinct_questions_and_reports_progress():
    progress, arrived = [], {}
    raw = ExtractiveWriter(n_questions=3).complete([_prompt(CHUNK)], on_progress=progress.append,
                                                   on_answer=arrived.__setitem__)
    assert len(set(parse_questions(raw[0], 3))) == 3
    assert progress == [1] and arrived == {0: raw[0]}


def test_extractive_without_fences_uses_the_whole_prompt_and_handles_empty_text():
    assert extract_context("只有一段话，没有分隔线。") == "只有一段话，没有分隔线。"
    assert ExtractiveWriter().complete([""]) == ["这段资料讲了什么？"]


# --- openai: a real HTTP server on 127.0.0.1 ------------------------------------------


class FakeServer:
    """An OpenAI-style /v1/chat/completions endpoint that answers from a script.

    ``script`` holds the first answers to give, one per request, as (status, body)
    or "close" (drop the connection); after that every request succeeds by echoing
    the prompt.
    """

    def __init__(self, script=(), delay_s: float = 0.0):
        self.script = list(script)
        self.delay_s = delay_s
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest's output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                    step = server.script.pop(0) if server.script else None
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    time.sleep(server.delay_s)
                    if step == "close":
                        self.close_connection = True
                        return  # no status line at all: the client sees the connection drop
                    if step is None:
                        prompt = body["messages"][0]["content"]
                        step = (200, {"choices": [{"message": {"role": "assistant", "content": f"Q:{prompt}"}}]})
                    status, payload = step
                    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    with server.lock:
                        server.active -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _openai(url: str, **kwargs):
    from tasks.questions.llm.openai_backend import OpenAIWriter

    settings = Settings(llm_backend="openai", llm_model="qwen-test", llm_base_url=url, llm_api_key="sk-test")
    options = dict(backoff_s=0.01, max_backoff_s=0.05, max_attempts=3)
    options.update(kwargs)
    return OpenAIWriter.from_settings(settings, **options)


def test_openai_concurrent_requests_keep_order():
    prompts = [f"资料{i}" for i in range(12)]
    progress, arrived = [], {}
    with FakeServer(delay_s=0.05) as server, _openai(server.url, concurrency=4) as writer:
        answers = writer.complete(prompts, on_progress=progress.append, on_answer=arrived.__setitem__)
    assert answers == [f"Q:{p}" for p in prompts]
    assert arrived == dict(enumerate(answers))  # each answer reported once, under its prompt's index
    assert writer.requests_sent == 12 and writer.attempts == 12
    assert sum(progress) == 12
    assert 1 < server.max_active <= 4
    body = server.requests[0]["body"]
    assert server.requests[0]["path"] == "/v1/chat/completions"
    assert server.requests[0]["auth"] == "Bearer sk-test"
    assert body["model"] == "qwen-test"
    assert body["messages"] == [{"role": "user", "content": body["messages"][0]["content"]}]
    assert body["chat_template_kwargs"] == {"enable_thinking": False}
    assert {"temperature", "top_p", "max_tokens", "seed"} <= body.keys()


@pytest.mark.parametrize(
    "failure",
    [
        (500, {"error": "boom"}),
        (503, b"overloaded"),
        (429, {"error": "rate limited"}),
        (200, b"{not json"),
        (200, {"unexpected": "shape"}),
        "close",
    ],
    ids=["500", "503", "429", "malformed-json", "no-choices", "dropped-connection"],
)
def test_openai_retries_transient_failures(failure):
    with FakeServer([failure]) as server, _openai(server.url, concurrency=1) as writer:
        assert writer.complete(["资料"]) == ["Q:资料"]
    assert writer.requests_sent == 1  # one prompt, however many attempts
    assert writer.attempts == 2 == len(server.requests)


def test_openai_gives_up_after_max_attempts_with_the_reason():
    with FakeServer([(500, {"e": 1})] * 3) as server, _openai(server.url) as writer:
        with pytest.raises(LLMError, match=r"answered 500 .* after 3 attempts") as info:
            writer.complete(["资料"])
    assert server.url in str(info.value)


def test_openai_404_names_model_and_url_without_retrying():
    with FakeServer([(404, {"error": "The model `qwen-test` does not exist."})]) as server:
        with _openai(server.url) as writer, pytest.raises(LLMError) as info:
            writer.complete(["资料"])
    message = str(info.value)
    assert "'qwen-test' is not served at" in message and server.url in message and "does not exist" in message
    assert len(server.requests) == 1


def test_openai_401_says_the_key_was_rejected():
    with FakeServer([(401, {"error": "bad key"})]) as server, _openai(server.url) as writer:
        with pytest.raises(LLMError, match="API key was rejected"):
            writer.complete(["资料"])


def test_openai_drops_chat_template_kwargs_when_the_server_rejects_it():
    rejection = (400, {"error": {"message": "Unrecognized request argument supplied: chat_template_kwargs"}})
    with FakeServer([rejection]) as server, _openai(server.url, concurrency=1) as writer:
        assert writer.complete(["a", "b"]) == ["Q:a", "Q:b"]
    assert "chat_template_kwargs" in server.requests[0]["body"]
    assert all("chat_template_kwargs" not in r["body"] for r in server.requests[1:])
    assert len(server.requests) == 3


def test_openai_down_server_fails_clearly_after_retries():
    with FakeServer() as server:
        url = server.url
    # The server is shut down and its port closed.
    writer = _openai(url, max_attempts=2)
    started = time.monotonic()
    with writer, pytest.raises(LLMError) as info:
        writer.complete(["资料", "资料2"])
    message = str(info.value)
    assert url in message and "could not connect" in message and "after 2 attempts" in message
    assert "Is the server running?" in message
    assert time.monotonic() - started < 5
    assert writer.requests_sent >= 1


def test_reseed_changes_the_seed_of_the_next_requests_only():
    with FakeServer() as server, _openai(server.url, concurrency=1) as writer:
        writer.complete(["a"])
        writer.reseed(43)
        writer.complete(["b"])
    assert [r["body"]["seed"] for r in server.requests] == [42, 43]
    assert writer.sampling.temperature == 0.7  # nothing else moves


def test_openai_no_prompts_sends_nothing():
    with _openai("http://127.0.0.1:9/v1") as writer:
        assert writer.complete([]) == []
    assert writer.requests_sent == 0


# --- vllm with a fake vllm module --------------------------------------------------------


def test_batched_covers_everything_in_order():
    assert [list(b) for b in batched(list(range(7)), 3)] == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(batched([], 3)) == []
    with pytest.raises(ValueError):
        list(batched([1], 0))


@pytest.fixture
def fake_vllm(monkeypatch):
    calls = {"generate": [], "llm_kwargs": None, "sampling": None, "template_kwargs": []}

    class SamplingParams:
        def __init__(self, **kwargs):
            calls["sampling"] = kwargs

    class Tokenizer:
        def apply_chat_template(self, messages, **kwargs):
            calls["template_kwargs"].append(kwargs)
            return f"<user>{messages[0]['content']}<assistant>"

    class Output:
        def __init__(self, text):
            self.outputs = [types.SimpleNamespace(text=text)]

    class LLM:
        def __init__(self, **kwargs):
            calls["llm_kwargs"] = kwargs

        def get_tokenizer(self):
            return Tokenizer()

        def generate(self, prompts, sampling_params, use_tqdm=True):
            calls["generate"].append(list(prompts))
            return [Output("答：" + p) for p in prompts]

    module = types.ModuleType("vllm")
    module.LLM = LLM
    module.SamplingParams = SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    return calls


def test_vllm_sends_prompts_in_batches(fake_vllm):
    settings = Settings(llm_backend="vllm", vllm_batch_size=4, llm_temperature=0.5, seed=7)
    prompts = [f"p{i}" for i in range(10)]
    progress, arrived = [], []
    with make_writer(settings) as writer:
        answers = writer.complete(prompts, on_progress=progress.append, on_answer=lambda i, a: arrived.append(i))
        sampling = fake_vllm["sampling"]
        writer.reseed(8)  # a retry round: new SamplingParams, same loaded model
        sampling_after_reseed = fake_vllm["sampling"]
    assert answers == [f"答：<user>p{i}<assistant>" for i in range(10)]
    assert arrived == list(range(10))
    assert sampling_after_reseed["seed"] == 8
    assert [len(b) for b in fake_vllm["generate"]] == [4, 4, 2]
    assert progress == [4, 4, 2]
    assert writer.requests_sent == 10 and writer.generate_calls == 3
    assert sampling == {"temperature": 0.5, "top_p": 0.8, "max_tokens": 96, "seed": 7}
    assert fake_vllm["llm_kwargs"]["model"] == "Qwen/Qwen2.5-7B-Instruct"
    assert all(
        kw == {"tokenize": False, "add_generation_prompt": True, "enable_thinking": False}
        for kw in fake_vllm["template_kwargs"]
    )


def test_vllm_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)
    writer = VLLMWriter("Qwen/Qwen2.5-7B-Instruct")
    assert writer.complete([]) == []  # nothing to do: vLLM is not even imported
    with pytest.raises(LLMError, match=r"pip install -e '\.\[vllm\]'"):
        writer.complete(["p"])


# --- gguf ---------------------------------------------------------------------------------


def test_gguf_missing_llama_cpp_says_how_to_build_it(tmp_path, monkeypatch):
    from tasks.questions.llm.gguf_backend import GGUFWriter

    monkeypatch.setitem(sys.modules, "llama_cpp", None)
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    with pytest.raises(LLMError, match="GGML_NATIVE=OFF"):
        GGUFWriter(model).complete(["p"])


# The batched gguf writer's own tests (batching, prefix, early stop): tests/questions/test_gguf_backend.py.


def _bundled_model_available() -> bool:
    try:
        import llama_cpp  # noqa: F401

        from tasks.questions.llm.bundled import bundled_part_paths

        bundled_part_paths()
    except Exception:
        return False
    return True


@pytest.mark.slow
@pytest.mark.skipif(
    not _bundled_model_available() and not os.environ.get("REQUIRE_BUNDLED_LLM"),
    reason="llama-cpp-python or the bundled model parts are missing (REQUIRE_BUNDLED_LLM=1 makes this a failure)",
)
def test_gguf_bundled_model_writes_a_question():
    # models/ is the model cache the pipeline itself uses, so the 1 GB file is built once.
    settings = Settings(llm_backend="gguf", models_dir=ROOT / "models", llm_max_tokens=48)
    context = (
        "Transformer模型由编码器和解码器两部分组成，其核心是自注意力机制。自注意力通过计算查询、键和值三组向量"
        "之间的相似度，为序列中每个位置分配不同的注意力权重，从而捕捉长距离依赖关系。"
    )
    with make_writer(settings) as writer:
        [raw] = writer.complete([_prompt(context)])
    assert writer.requests_sent == 1
    assert isinstance(raw, str) and raw.strip()
    assert "<|im_end|>" not in raw and "<|im_start|>" not in raw
