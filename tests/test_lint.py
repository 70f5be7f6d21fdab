"""Ruff and mypy run as tests, so `make test` keeps the tree clean."""

from __future__ import annotations

import subprocess
import sys

import pytest

from innkeeper.settings import PROJECT_ROOT


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *cmd], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.timeout(300)
def test_ruff_clean() -> None:
    result = _run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.timeout(900)
def test_mypy_clean() -> None:
    result = _run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
