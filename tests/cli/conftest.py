"""Fixtures of the CLI tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def run(tmp_path: Path):  # type: ignore[no-untyped-def]
    """``nudge ARGS`` as a subprocess on a fresh SQLite file (``tmp_path/cli.db``)."""
    env = {
        **os.environ,
        "NUDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/cli.db",
        "NUDGE_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("NUDGE_ADMIN_TOKEN", None)

    def _run(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [sys.executable, "-m", "nudge.cli", *args],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (out.returncode == 0) == ok, out.stdout + out.stderr
        assert "Traceback" not in out.stderr
        return out

    return _run
