"""The launcher's bytecode step (``cluster/bytecode.py``): written once, even where Python would not write it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from cluster.bytecode import compile_packages


def _package(root: Path, name: str = "pkg") -> Path:
    (root / name).mkdir()
    (root / name / "__init__.py").write_text('"""A package."""\n')
    (root / name / "mod.py").write_text("VALUE = 1\n")
    return root / name


def test_bytecode_is_written_even_when_python_would_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # PYTHONDONTWRITEBYTECODE=1
    pkg = _package(tmp_path)
    assert compile_packages(["pkg", "absent"], root=tmp_path)
    cached = Path(importlib.util.cache_from_source(str(pkg / "mod.py")))
    assert cached.is_file()
    stamp = cached.stat().st_mtime_ns
    assert compile_packages(["pkg"], root=tmp_path)  # up to date: left alone
    assert cached.stat().st_mtime_ns == stamp


def test_a_package_whose_bytecode_cannot_be_written_is_reported_not_raised(tmp_path: Path) -> None:
    pkg = _package(tmp_path)
    (pkg / "__pycache__").write_text("not a directory")  # as a read-only tree would refuse it
    assert not compile_packages(["pkg"], root=tmp_path)
