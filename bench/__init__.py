"""Benchmarks. Each module has a ``main(argv)``; ``python -m bench NAME`` runs one, ``python -m bench`` lists them.

Figures and the commands that reproduce them are recorded in ``docs/benchmarks.md``.
"""
