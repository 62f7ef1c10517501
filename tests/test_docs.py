"""The docs stay true: the settings reference matches the code, the README stays short,
and every relative link in README.md and docs/ points at a file that exists."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README_LIMIT = 12 * 1024  # bytes: a newcomer reads it in ten minutes

_FENCE = re.compile(r"^```.*?^```", re.S | re.M)
_CODE = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _generator():
    spec = importlib.util.spec_from_file_location("make_settings_reference", REPO / "docs" / "make_settings_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def relative_links(text: str) -> list[tuple[str, str]]:
    """(path, anchor) of each link outside code, without web addresses and mail links;
    an in-page link has the path "".

    >>> relative_links("[a](docs/x.md#top) `[b](no.md)` [c](https://e.org) [d](#here)")
    [('docs/x.md', 'top'), ('', 'here')]
    """
    text = _CODE.sub("", _FENCE.sub("", text))
    targets = []
    for target in _LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
            continue
        path, _, anchor = target.partition("#")
        targets.append((path, anchor))
    return targets


def anchors(text: str) -> set[str]:
    r"""GitHub's anchors of the headings of a markdown text.

    >>> sorted(anchors("# Bad input, killed runs\n```\n# not a heading\n```\n## `flows.query`: batch"))
    ['bad-input-killed-runs', 'flowsquery-batch']
    """
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", _FENCE.sub("", text), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_settings_reference_is_generated_from_the_settings_model():
    rendered = _generator().render()
    current = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    assert current == rendered, "docs/settings.md is stale: run .venv/bin/python docs/make_settings_reference.py"


def test_settings_reference_names_every_field_flag_and_variable():
    from tasks.core.settings import Settings

    text = (REPO / "docs" / "settings.md").read_text(encoding="utf-8")
    for name in Settings.model_fields:
        assert f"`--{name.replace('_', '-')}`" in text
        assert f"`BCE_{name.upper()}`" in text


def test_readme_is_short():
    size = (REPO / "README.md").stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; keep it under {README_LIMIT} (move detail to docs/)"


@pytest.mark.parametrize("path", _markdown_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_point_at_files_and_headings_that_exist(path: Path):
    missing = []
    for target, anchor in relative_links(path.read_text(encoding="utf-8")):
        where = path.parent / target if target else path
        if not where.exists():
            missing.append(target)
        elif anchor and where.suffix == ".md" and anchor not in anchors(where.read_text(encoding="utf-8")):
            missing.append(f"{target}#{anchor}")
    assert not missing, f"{path.relative_to(REPO)} links to missing files or headings: {missing}"
