"""Write docs/settings.md from the Settings model, so the reference cannot drift from the code.

    .venv/bin/python docs/make_settings_reference.py     # rewrites docs/settings.md

Every field of :class:`tasks.core.settings.Settings` becomes one row: its command-line flag
(taken from the parser ``python -m flows.finetune_bce`` builds), its environment variable,
its default and its description. The PDF watcher's :class:`tasks.core.settings.WatchSettings`
follows in a second table. ``tests/test_docs.py`` checks that docs/settings.md is what
:func:`render` returns.
"""

from __future__ import annotations

import argparse
import sys
import typing
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUTPUT = ROOT / "docs" / "settings.md"

HEADER = """\
# Settings reference

Generated from `tasks/core/settings.py` by `docs/make_settings_reference.py`; do not edit by hand
(`tests/test_docs.py` fails when this file and the code disagree).

Every setting can be given four ways. The first that is set wins:

1. a command-line flag of `python -m flows.finetune_bce` (`--help` prints the same list);
2. an environment variable `{prefix}<NAME>`;
3. a TOML or JSON file passed with `--config FILE` (the names in the first column);
4. the default.

The **group** column says which stage reads a setting (`Group(...)` on each field in
`tasks/core/settings.py`; `SETTING_GROUPS` is read from them): changing it re-runs that stage
and what depends on its output, and nothing else. `documents`: the documents stage;
`chunking`: split and chunks; `generation`: questions (the LLM is asked again only for what
its per-chunk cache has not seen); `models`: base-model; `training`: training; `reranking`:
reranker-model and reranker; `flow`: the flow itself, which hands a stage what it needs as an
argument (the PDF folder, an output path, the evaluations' retrievers: the stage re-runs
when one of those changes) and decides the promotion and the shipped retriever, which run
every time.

The flow's one Prefect parameter is this model, so a deployment's `parameters.settings` and
the Prefect UI's form use the same names. Lists (`interpolation_alphas`, `fusion_weights`,
`rerank_depths`, `rerank_weights`) are written `0.25,0.5` on the command line and in the environment. A yes/no setting has a
flag and its `--no-` form. "unset" means the value is chosen at run time, as the
description says.

A config file:

```toml
pdf_dir = "/srv/docs/pdf"
output_dir = "/srv/runs/2026-11"
profile = "gpu"
epochs = 3
```
"""

WATCH_HEADER = """\
## The PDF watcher

`python -m flows.watch_pdfs` has its own small model (`WatchSettings`): these knobs belong
to the long-running watcher, not to a training run. It also takes `--pdf-dir` and
`--output-dir` (as above) and `--once` (check once, announce if needed, exit). See
[service.md](service.md).
"""


# Fields tasks/core/settings.py leaves without a description; its own description wins once it has one.
FALLBACK_DESCRIPTIONS = {
    "llm_temperature": "Sampling temperature of the question writer (0: greedy, and then no retries with a new seed).",
    "llm_top_p": "Nucleus-sampling share of the question writer.",
    "epochs": "Passes over the training pairs.",
    "warmup_steps": "Learning-rate warm-up steps at the start of training.",
    "eval_batch_size": "Texts per encoding batch when evaluating and indexing.",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("*", "\\*").replace("\n", " ")


def _default(name: str, value: Any) -> str:
    if name == "prompt_template":
        return "built-in Chinese prompt (`DEFAULT_PROMPT_TEMPLATE`)"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return "`" + ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) + "`" if value else "`[]`"
    if isinstance(value, Path):
        return f"`{value.as_posix()}`"
    return f"`{value}`"


def _choices(annotation: Any) -> list[str]:
    """The allowed values of a ``Literal[...]`` (or ``Literal[...] | None``) field."""
    for candidate in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(candidate) is typing.Literal:
            return [str(v) for v in typing.get_args(candidate)]
    return []


def _description(name: str, field: Any) -> str:
    text = (field.description or FALLBACK_DESCRIPTIONS.get(name, "")).strip()
    choices = _choices(field.annotation)
    if choices:
        text += (" " if text else "") + "One of " + ", ".join(f"`{c}`" for c in choices) + "."
    return text


def _flags() -> dict[str, list[str]]:
    """``{field name: option strings}`` from the pipeline's own parser."""
    from flows.settings_cli import build_parser

    flags: dict[str, list[str]] = {}
    for action in build_parser("python -m flows.finetune_bce", "")._actions:
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        flags[action.dest] = list(action.option_strings)
    return flags


def render() -> str:
    """The text of docs/settings.md."""
    from tasks.core.settings import SETTING_GROUPS, Settings, WatchSettings

    prefix = Settings.model_config["env_prefix"]
    flags = _flags()
    lines = [HEADER.format(prefix=prefix), "| setting | group | flag | environment | default | description |",
             "|---|---|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        flag = " / ".join(f"`{f}`" for f in flags[name])
        groups = ", ".join(g for g, fields in SETTING_GROUPS.items() if name in fields)
        lines.append(f"| `{name}` | {groups} | {flag} | `{prefix}{name.upper()}` | "
                     f"{_cell(_default(name, field.default))} | {_cell(_description(name, field))} |")

    watch_prefix = WatchSettings.model_config["env_prefix"]
    lines += ["", WATCH_HEADER, "| setting | flag | environment | default | description |", "|---|---|---|---|---|"]
    for name, field in WatchSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")  # as flows/watch_pdfs.py builds it
        lines.append(f"| `{name}` | `{flag}` | `{watch_prefix}{name.upper()}` | "
                     f"{_cell(_default(name, field.default))} | {_cell(_description(name, field))} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    OUTPUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUTPUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
