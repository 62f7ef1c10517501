"""The one cache rule of every stage: a stage runs again exactly when what it reads changed.

A stage's cache key is made of three things, none of them listed by hand:

* **its code**: the source of the stage's module and of every project module it imports,
  found by reading the ``import`` statements (:func:`code_fingerprint`), so editing the
  hard-negative miner re-runs training, and editing a module no stage imports re-runs nothing;
* **its input files by content**: every argument annotated ``Path`` is a file or folder the
  stage reads, hashed by its bytes (a model folder without its card, README.md);
* **the settings it reads**: the stage names its settings groups
  (:data:`tasks.core.settings.SETTING_GROUPS`) and gets a view of the settings that refuses
  any other field, so the key cannot miss one.

Arguments named in ``writes`` are where the stage writes; they count by their path, not by
what is there. Anything else counts by value.

Example::

    >>> from tasks.core.caching import code_fingerprint, project_imports
    >>> "tasks.training.hard_negatives" in project_imports("tasks.training.stage")
    True
    >>> code_fingerprint("tasks.training.stage") == code_fingerprint("tasks.training.stage")
    True
"""

from __future__ import annotations

import ast
import dataclasses
import os
import stat
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from pydantic import BaseModel

from tasks.core.fileio import sha256_file, stable_hash

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("tasks", "flows")


# --- code -------------------------------------------------------------------------------


def _module_file(name: str, root: Path) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imported_names(source: str, module: str, is_package: bool) -> set[str]:
    """Every module name an ``import`` in ``source`` may load, wherever it stands (inside a
    function or ``if TYPE_CHECKING`` too: counting one too many only costs a rerun)."""
    names: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from .x import y
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)  # a submodule, if it is one
    return names


def project_imports(module: str, root: Path = PROJECT_ROOT) -> dict[str, Path]:
    """``module`` and every project module it imports, directly or not, with its file.

    Parent packages come along (importing ``tasks.a.b`` runs ``tasks/a/__init__.py``).
    Names that are not project files (third-party packages, attributes) are left out.
    """
    found: dict[str, Path] = {}
    todo = [module]
    while todo:
        name = todo.pop()
        if name in found or not name.startswith(PROJECT_PACKAGES):
            continue
        path = _module_file(name, root)
        if path is None:
            continue
        found[name] = path
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        todo.extend(_imported_names(path.read_text(encoding="utf-8"), name, path.name == "__init__.py"))
    return dict(sorted(found.items()))


def code_fingerprint(module: str, root: Path = PROJECT_ROOT) -> str:
    """Hash of the source of ``module`` and of every project module it imports."""
    return stable_hash([(name, path.read_text(encoding="utf-8")) for name, path in project_imports(module, root).items()])


# --- files ------------------------------------------------------------------------------

# sha256 by file, remembered for the life of the process: the evaluate, round-trip, train and
# promotion steps each ask for the fingerprint of the same model folders (~470 MB for
# e5-small, ~1 GB for bce), and reading them again for every key costs seconds a time.
# Resolved path → (identity from os.stat, digest); a file whose identity changed is hashed again.
_FILE_HASHES: dict[str, tuple[tuple[int, ...], str]] = {}
_FILE_HASHES_MAX = 10_000  # a long-lived worker sees many folders; entries are ~200 bytes


def _stat_identity(st: os.stat_result) -> tuple[int, ...]:
    # Size and mtime catch an edit; inode and ctime catch a file replaced by rename (how
    # tasks.core.fileio writes) or rewritten in place within the same mtime tick but not ctime's.
    return (st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns)


def file_fingerprint(path: Path) -> str:
    """sha256 of a file's bytes, or ``"missing"`` when it is not a file.

    The bytes are read once per process while the file stays the same (size, mtime, inode,
    ctime): asking again for an unchanged file costs one ``stat``. Only an edit that keeps
    the size and lands within the file system's timestamp resolution (a few ms) of the
    previous one, in place, could go unseen; the pipeline's writers replace files instead.

    Example::

        >>> import tempfile
        >>> f = Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = f.write_text("abc")
        >>> file_fingerprint(f)[:12], file_fingerprint(f.with_name("none.txt"))
        ('ba7816bf8f01', 'missing')
    """
    path = Path(path)
    try:
        before = path.stat()
    except OSError:
        return "missing"
    if not stat.S_ISREG(before.st_mode):
        return "missing"
    key, ident = str(path.resolve()), _stat_identity(before)
    known = _FILE_HASHES.get(key)
    if known is not None and known[0] == ident:
        return known[1]
    digest = sha256_file(path)
    try:
        unchanged = _stat_identity(path.stat()) == ident
    except OSError:
        unchanged = False
    if unchanged:  # a file written to while it was read is not remembered
        if len(_FILE_HASHES) >= _FILE_HASHES_MAX and key not in _FILE_HASHES:
            _FILE_HASHES.pop(next(iter(_FILE_HASHES)))  # the oldest entry
        _FILE_HASHES[key] = (ident, digest)
    return digest


def dir_fingerprint(path: Path, ignore: frozenset[str] = frozenset()) -> str:
    """Content hash of every file of a folder (a model): names, sizes and bytes.

    ``ignore`` names files (paths relative to the folder) that do not count. Each file's
    bytes are hashed once per process while unchanged (:func:`file_fingerprint`), so the
    second fingerprint of an unchanged model folder costs a directory walk, not a read.

    Example::

        >>> import tempfile
        >>> model = Path(tempfile.mkdtemp())
        >>> _ = (model / "weights.bin").write_bytes(b"123")
        >>> before = dir_fingerprint(model, ignore=frozenset({"README.md"}))
        >>> _ = (model / "README.md").write_text("card")
        >>> dir_fingerprint(model, ignore=frozenset({"README.md"})) == before != dir_fingerprint(model)
        True
    """
    path = Path(path)
    if not path.is_dir():
        return "missing"
    files = (p for p in sorted(path.rglob("*")) if p.is_file())
    return stable_hash(
        [(rel, file_fingerprint(p)) for p in files if (rel := p.relative_to(path).as_posix()) not in ignore]
    )


def model_fingerprint(path: Path) -> str:
    """Content hash of a model folder without its model card (README.md): the flow writes
    the metrics into the card after evaluating, and the card does not change what the model
    computes, so it must not invalidate cached evaluations or tell two copies apart."""
    return dir_fingerprint(path, ignore=frozenset({"README.md"}))


# --- the policy ---------------------------------------------------------------------------


def path_parameters(fn: Any) -> set[str]:
    """Names of ``fn``'s parameters annotated ``Path`` (or ``Path | None``)."""
    hints = typing.get_type_hints(fn)
    return {name for name, hint in hints.items()
            if name != "return" and (hint is Path or Path in typing.get_args(hint))}


def _value_key(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _value_key(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _value_key(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_value_key(v) for v in value]
    if isinstance(value, os.PathLike):
        return str(value)
    return value


def _content_key(value: Any) -> Any:
    """A ``Path`` argument by its content; a name that is not on disk (a model id) by itself."""
    if value is None:
        return None
    path = Path(value)
    if path.is_dir():
        return ["folder", model_fingerprint(path)]
    if path.is_file():
        return ["file", file_fingerprint(path)]
    return ["name", str(value)]


@dataclass
class StageCache(CachePolicy):
    """The Prefect cache policy of every stage (see the module docstring).

    ``writes``: the parameters that say where the stage writes (counted by path).
    ``settings``: the settings groups the stage reads; the ``settings`` argument counts only
    by those fields.
    """

    writes: tuple[str, ...] = ()
    settings: tuple[str, ...] = ()
    module: str = ""
    paths: frozenset[str] = field(default_factory=frozenset)

    def compute_key(self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str:
        return self.key(task_ctx.task.name, inputs)

    def key(self, name: str, inputs: dict[str, Any]) -> str:
        from tasks.core.settings import Settings

        parts: dict[str, Any] = {}
        for param, value in sorted(inputs.items()):
            if param in self.writes:
                parts[param] = str(Path(value).resolve()) if value is not None else None
            elif isinstance(value, Settings):
                parts[param] = value.groups_dump(self.settings)
            elif param in self.paths:
                parts[param] = _content_key(value)
            else:
                parts[param] = _value_key(value)
        return stable_hash([name, code_fingerprint(self.module), parts])
