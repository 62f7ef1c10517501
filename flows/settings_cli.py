"""Command-line flags generated from the Settings model, so the two never drift apart.

Every field becomes ``--field-name``; priority is flag > environment (``BCE_*``) >
config file (``--config FILE.toml``) > default.

Example::

    >>> parser = build_parser("python -m flows.finetune_bce", "")
    >>> settings = settings_from_args(parser.parse_args(["--epochs", "1", "--pdf-dir", "my_pdfs"]))
    >>> settings.epochs
    1
"""

from __future__ import annotations

import argparse
import os
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tasks.core.errors import SettingsError
from tasks.core.settings import Settings, load_config_file


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _arg_type(annotation: Any) -> tuple[Any, list[Any] | None]:
    """(converter, choices) for a field annotation such as ``int | None`` or ``Literal[...]``."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return str, list(typing.get_args(annotation))
    if origin is list:
        return str, None  # "0.25,0.5": the Settings field parses the list
    if args and origin is not typing.Literal:
        inner = args[0]
        if typing.get_origin(inner) is typing.Literal:
            return str, list(typing.get_args(inner))
        return inner, None
    return annotation, None


def build_parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_setting_flags(parser, Settings.model_fields)
    return parser


def add_setting_flags(parser: argparse.ArgumentParser, names: Iterable[str]) -> None:
    """``--config`` and the flags of the settings ``names``, as ``python -m flows.finetune_bce``
    has them: another command that reads some of the run's settings takes them the same way
    (flag > ``BCE_*`` > ``--config`` file > default; :func:`settings_from_args`)."""
    parser.add_argument("--config", type=Path, help="TOML or JSON file with settings (same names as the flags, with _).")
    for name in names:
        field = Settings.model_fields[name]
        help_text = field.description or ""
        default = field.default
        if name == "prompt_template":
            default = "(built-in Chinese prompt)"
        conv, choices = _arg_type(field.annotation)
        if conv is bool:
            parser.add_argument(
                _flag(name), action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                help=f"{help_text} (default: {default})",
            )
            continue
        parser.add_argument(
            _flag(name),
            dest=name,
            type=conv,
            choices=choices,
            default=argparse.SUPPRESS,
            metavar=None if choices else name.upper(),
            help=f"{help_text} (default: {default}; env BCE_{name.upper()})",
        )


def settings_from_args(args: argparse.Namespace) -> Settings:
    values = {k: v for k, v in vars(args).items() if k in Settings.model_fields}
    config: dict[str, Any] = {}
    if getattr(args, "config", None):
        config = load_config_file(args.config)
        unknown = set(config) - set(Settings.model_fields)
        if unknown:
            raise SettingsError(f"{args.config}: unknown settings {sorted(unknown)}")
    # Init values outrank the environment in pydantic-settings, so the config file's
    # values are only passed where no BCE_* variable sets the field.
    from_file = {k: v for k, v in config.items() if f"BCE_{k.upper()}" not in os.environ}
    try:
        return Settings(**{**from_file, **values})
    except ValidationError as e:
        raise SettingsError(explain(e)) from None


def explain(error: ValidationError) -> str:
    """One line per bad setting: the flag, the value given, what is wrong, and what the setting is for.

    >>> try:
    ...     Settings(val_ratio=1.5)
    ... except ValidationError as e:
    ...     print(explain(e))
    invalid settings:
      --val-ratio 1.5: Input should be less than 1 (Share of documents held out for validation.)
    """
    lines = ["invalid settings:"]
    for err in error.errors():
        where = ".".join(str(p) for p in err["loc"]) or "settings"
        field = Settings.model_fields.get(where)
        flag = _flag(where) if field else where
        msg = err["msg"].removeprefix("Value error, ")
        given = err.get("input")
        shown = f" {given}" if field and isinstance(given, (str, int, float)) and len(str(given)) <= 60 else ""
        # A list of choices explains itself; a bound ("greater than 0") needs the setting's purpose.
        purpose = f" ({field.description})" if field and field.description and err["type"] != "literal_error" else ""
        lines.append(f"  {flag}{shown}: {msg}{purpose}")
    return "\n".join(lines)

