"""No function or class of the product is kept alive by the tests alone.

Code that only a test calls is read, maintained and trusted by the next engineer for
nothing; the tests should go through what the product calls instead. A top-level function
or class under ``tasks/`` or ``flows/`` must be named somewhere else in its own module (a
call, ``__all__``, a doctest) or in another module of the product, a bench or a data
script: the tests do not count.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def unused_definitions(root: Path) -> list[str]:
    """``path:name`` of each top-level function or class that nothing but its definition names."""
    product = [p for folder in ("tasks", "flows") for p in sorted((root / folder).rglob("*.py"))]
    readers = product + sorted((root / "bench").rglob("*.py")) + sorted((root / "data").glob("*.py")) \
        + sorted((root / "docs").glob("*.py"))
    texts = {p: p.read_text(encoding="utf-8") for p in readers}
    unused = []
    for path in product:
        for node in ast.parse(texts[path]).body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            name = re.compile(rf"\b{re.escape(node.name)}\b")
            if len(name.findall(texts[path])) > 1 or any(name.search(t) for p, t in texts.items() if p != path):
                continue
            unused.append(f"{path.relative_to(root)}:{node.name}")
    return unused


def test_every_function_and_class_of_the_product_is_used_by_the_product() -> None:
    assert unused_definitions(ROOT) == []


def test_a_function_only_a_test_calls_is_found(tmp_path: Path) -> None:
    for folder in ("tasks", "flows", "tests"):
        (tmp_path / folder).mkdir()
    (tmp_path / "tasks" / "a.py").write_text(
        "def used():\n    return helper()\n\n\ndef helper():\n    return 1\n\n\ndef only_tested():\n    return 2\n",
        encoding="utf-8")
    (tmp_path / "flows" / "run.py").write_text("from tasks.a import used\n\nused()\n", encoding="utf-8")
    (tmp_path / "tests" / "test_a.py").write_text("from tasks.a import only_tested\n", encoding="utf-8")
    assert unused_definitions(tmp_path) == ["tasks/a.py:only_tested"]
