"""Benchmarks: scripts that each measure one choice of the pipeline with its own code.

Run each from the repository root as a module, ``.venv/bin/python -m bench.<name>``
(``bench/README.md``); :mod:`bench.harness` holds what they share.
"""
