"""Every docstring example (``>>>``) in tasks/ and flows/ runs, and shows what it prints.

One test per docstring with examples, run from the repository root (so ``data/pdf`` is
there) with ``ELLIPSIS``. Examples that write files write
them under a ``tempfile`` folder. Docstrings of Prefect tasks and flows (whose ``fn`` the
standard finder does not see) are run too, and every module must have as many examples
collected as it has ``>>>`` lines, so an example cannot silently drop out of the suite.

Examples that run a real model (the bundled e5, the bundled GGUF) or a Prefect flow are
in the slow tier (``SLOW``); the rest take about a second at most (the GGUF tokenizer's
example loads its vocabulary only, as tests/questions/test_gguf_backend.py does). The GGUF examples
skip when the GGUF or llama-cpp-python is missing, unless ``REQUIRE_BUNDLED_LLM=1``.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("tasks", "flows")
OPTIONS = doctest.ELLIPSIS
# Modules that may import these only when used; a module that needs one at import is skipped.
OPTIONAL = {"vllm", "llama_cpp", "prefect_dask"}
GGUF = REPO / "models" / "llm" / "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"

# Docstrings whose examples run a real model or flow: the slow tier. Name -> what runs.
SLOW = {
    "tasks.models.base": "converts the bundled e5 (first time) and loads it",
    "tasks.models.base.save_sentence_transformer": "loads and saves a real model",
    "tasks.models.bundled_e5.convert": "converts the bundled e5 and encodes with it",
    "tasks.models.st_embedding": "loads the bundled e5",
    "tasks.evaluation.evaluate": "evaluates the bundled e5",
    "tasks.questions.round_trip": "ranks with the bundled e5",
    "tasks.questions.round_trip.own_chunk_ranks": "ranks with the bundled e5",
    "tasks.training.interpolation.interpolate_with_base": "evaluates the bundled e5 per alpha",
    "tasks.training.trainer": "trains the bundled e5",
    "tasks.retrieval.index": "embeds the sample PDFs with the bundled e5",
    "tasks.retrieval.dense_cache": "embeds with the bundled e5",
    "tasks.questions.llm.batched_llama": "generates with the bundled GGUF",
    "tasks.questions.llm.gguf_backend": "generates with the bundled GGUF",
}
NEEDS_GGUF = {"tasks.questions.llm.batched_llama", "tasks.questions.llm.chat_tokens", "tasks.questions.llm.gguf_backend"}


def module_names() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def _import(name: str):
    """The module, or the reason it cannot be imported here (an optional dependency)."""
    try:
        return importlib.import_module(name), None
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] in OPTIONAL:
            return None, f"{name} needs {e.name}, an optional extra not installed here"
        raise


def find_doctests(module) -> list[doctest.DocTest]:
    """The module's doctests, with those of its Prefect tasks' and flows' functions."""
    finder = doctest.DocTestFinder()
    tests = finder.find(module, module.__name__)
    for attr, value in sorted(vars(module).items()):
        fn = getattr(value, "fn", None)
        if inspect.isfunction(fn) and fn.__module__ == module.__name__ and not inspect.isfunction(value):
            tests += finder.find(fn, f"{module.__name__}.{attr}", module=module, globs=vars(module).copy())
    return [t for t in tests if t.examples]


def _collect() -> tuple[list, dict[str, doctest.DocTest | ValueError]]:
    params, by_name = [], {}
    for name in module_names():
        module, why = _import(name)
        if module is None:
            params.append(pytest.param(name, marks=pytest.mark.skip(reason=why), id=name))
            continue
        try:
            found = find_doctests(module)
        except ValueError as e:  # a docstring doctest cannot parse: that module's test fails
            params.append(pytest.param(name, id=name))
            by_name[name] = e
            continue
        for test in found:
            by_name[test.name] = test
            marks = [pytest.mark.slow] if test.name in SLOW else []
            params.append(pytest.param(test.name, marks=marks, id=test.name))
    return params, by_name


PARAMS, DOCTESTS = _collect()


@pytest.mark.parametrize("name", PARAMS)
def test_docstring_examples(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if name in NEEDS_GGUF and not os.environ.get("REQUIRE_BUNDLED_LLM"):
        pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
        if not GGUF.is_file():
            pytest.skip(f"{GGUF} is missing (REQUIRE_BUNDLED_LLM=1 makes this a failure)")
    monkeypatch.chdir(REPO)
    if isinstance(DOCTESTS[name], ValueError):
        pytest.fail(f"{name}: {DOCTESTS[name]}")
    before = set(os.listdir(REPO))
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    report: list[str] = []
    result = runner.run(DOCTESTS[name], out=report.append, clear_globs=True)
    assert result.failed == 0, "".join(report)
    left = sorted(set(os.listdir(REPO)) - before)
    assert not left, f"{name} left {left} in the repository: examples write under a tempfile folder"


def test_every_example_is_collected() -> None:
    """Each ``>>>`` line of a module is an example some test above runs."""
    missing = {}
    for name in module_names():
        module, why = _import(name)
        if module is None:
            continue
        source = Path(module.__file__).read_text(encoding="utf-8")
        written = sum(line.lstrip().startswith(">>>") for line in source.splitlines())
        try:
            found = sum(len(t.examples) for t in find_doctests(module))
        except ValueError:
            found = -1  # reported by its own test
        if written != found:
            missing[name] = (written, found)
    assert not missing, f"module: (>>> lines, examples collected): {missing}"


def test_slow_list_names_real_docstrings() -> None:
    assert set(SLOW) <= set(DOCTESTS), set(SLOW) - set(DOCTESTS)
