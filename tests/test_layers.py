"""The layer contracts of ``pyproject.toml`` ([tool.importlinter]), checked by import-linter as a test.

The folders promise that the simulator, ``db/`` and ``ipc/`` stand alone, that ``cluster/`` never
reaches into ``shard/``, that the shared core imports nothing above it, and that no package's
modules import each other in a circle. ``lint-imports`` turns that promise into a failing test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from innkeeper.settings import PROJECT_ROOT


@pytest.mark.timeout(300)
def test_layer_contracts_hold() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run([str(lint_imports)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout
