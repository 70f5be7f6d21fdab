"""The simulator stands alone: importing every one of its modules loads none of the bot's packages."""

from __future__ import annotations

import json
import subprocess
import sys

from innkeeper.settings import PROJECT_ROOT

#: Packages of the bot; the simulator may use the shared core (``innkeeper``) only.
BOT_PACKAGES = ("cluster", "shard", "ipc", "db")

_PROBE = """
import importlib, json, pkgutil, sys
import simulator
names = [f"simulator.{m.name}" for m in pkgutil.iter_modules(simulator.__path__)]
for name in names:
    importlib.import_module(name)
print(json.dumps({"modules": names, "loaded": sorted({n.split(".")[0] for n in sys.modules})}))
"""


def test_simulator_imports_no_bot_package() -> None:
    # A fresh interpreter: this test session may have imported the bot's packages already.
    result = subprocess.run([sys.executable, "-c", _PROBE], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert "simulator.world" in report["modules"]
    assert [p for p in BOT_PACKAGES if p in report["loaded"]] == []
