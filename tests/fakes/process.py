"""The FCM fake in a process of its own (``python -m tests.fakes fcm``), started and waited for."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent


def start_fcm(
    port: int, account: Path, *, output: IO[bytes] | None = None, timeout: float = 20.0
) -> subprocess.Popen[bytes]:
    """Start the fake on ``port``, writing its service-account file to ``account``; returns once
    it answers (raises RuntimeError if it exits or stays silent)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fakes",
            "fcm",
            "--port",
            str(port),
            "--service-account",
            str(account),
        ],
        cwd=ROOT,
        stdout=output,
        stderr=subprocess.STDOUT if output is not None else None,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the FCM fake exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/_fake/receipts", timeout=0.5).is_success:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"the FCM fake did not answer within {timeout:.0f} s")
