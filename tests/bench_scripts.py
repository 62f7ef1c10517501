"""Load a script from bench/ as a module, so tests can call its functions.

bench/ is a folder of scripts, not a package. The module goes into ``sys.modules``
before it runs because dataclasses look their module up there.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load_bench_script(stem: str) -> ModuleType:
    """``bench/<stem>.py`` as the module ``bench_<stem>`` (loaded once per test session).

    Example::

        >>> load_bench_script("cmrc_human").build_chunks  # doctest: +SKIP
    """
    name = f"bench_{stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
