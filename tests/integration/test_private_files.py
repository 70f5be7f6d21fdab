"""Files with user data or secrets are private from their first byte: 0600 files in 0700 directories,
whatever the umask (they are created with their mode, never narrowed afterwards)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from db import reminders
from db.backup import backup
from db.testing import make_keys, migrated
from innkeeper.files import create_private, private_dir, write_private
from innkeeper.settings import PROJECT_ROOT
from tests.procs import cli_env
from tests.support import INNKEEPER_CLI

pytestmark = pytest.mark.integration


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """umask 000: anything created without an explicit mode would be world-readable (and writable)."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def test_private_helpers(tmp_path: Path, open_umask: None) -> None:
    made = private_dir(tmp_path / "a" / "b")
    assert _mode(tmp_path / "a") == 0o700 and _mode(made) == 0o700  # the missing parent too
    path = made / "secret.txt"
    path.write_text("old")  # an existing file another tool made, mode 0666 under this umask
    assert _mode(path) == 0o666
    write_private(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o600  # replaced by a new file, not reused
    assert [p.name for p in made.iterdir()] == ["secret.txt"]  # no temporary file left
    os.close(create_private(made / "fresh"))
    assert _mode(made / "fresh") == 0o600
    with pytest.raises(FileExistsError):
        create_private(made / "fresh")
    (made / "link").symlink_to(made / "elsewhere")
    with pytest.raises(OSError):
        create_private(made / "link")  # never follows a planted symlink
    assert not (made / "elsewhere").exists()


async def test_backups_and_sidecars_are_private(database_url: str, tmp_path: Path, open_umask: None) -> None:
    async with migrated(database_url):
        pass
    directory = tmp_path / "new" / "backups"
    result = await backup(database_url, directory)
    assert _mode(directory) == 0o700 and _mode(directory.parent) == 0o700
    assert _mode(result.path) == 0o600 and _mode(result.sidecar) == 0o600
    again = await backup(database_url, directory)  # into the directory that exists now
    assert _mode(again.path) == 0o600 and _mode(again.sidecar) == 0o600
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        p.name for p in (result.path, result.sidecar, again.path, again.sidecar))  # no .part left


async def test_export_user_output_is_private(database_url: str, tmp_path: Path, open_umask: None) -> None:
    keys = make_keys("t1")
    async with migrated(database_url) as db:
        due = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
        await reminders.create_reminder(db, keys, user_id=42, body="my secret plans", due_at=due)
    output = tmp_path / "exports" / "user-42.json"
    env = cli_env(database_url=database_url, INNKEEPER_ENCRYPTION_KEYS=_key_entry("t1"))
    proc = await asyncio.create_subprocess_exec(*INNKEEPER_CLI, "export-user", "42", "--output", str(output),
                                                cwd=PROJECT_ROOT, env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)  # inherits umask 000
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()
    assert _mode(output) == 0o600 and _mode(output.parent) == 0o700
    assert "my secret plans" in json.dumps(json.loads(output.read_text()))  # decrypted text: hence 0600


def _key_entry(key_id: str) -> str:
    """The ``INNKEEPER_ENCRYPTION_KEYS`` entry of ``make_keys(key_id)``."""
    import base64
    import hashlib

    return f"{key_id}={base64.b64encode(hashlib.sha256(key_id.encode()).digest()).decode()}"
