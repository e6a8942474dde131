"""Calls shaped like the platform's, signed with the SDK's helper, and a runner for the example
apps as real processes (``python -m examples.<name>.app``)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
from examples.common import AppSettings
from fastapi import FastAPI

from nudge.sdk.webhook import signature_headers
from tests.conftest import free_port
from tests.sdk.scripted import over_asgi

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"example-app-test-secret!").decode()


@asynccontextmanager
async def example(create_app: Callable[[AppSettings], FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    """An example app (answers only, no API credentials) behind an in-process HTTP client."""
    async with over_asgi(create_app(AppSettings(SECRET))) as http:
        yield http


def segments_body(session_id: str, *texts: str) -> bytes:
    return json.dumps(
        {
            "session_id": session_id,
            "segments": [
                {
                    "text": text,
                    "speaker": f"SPEAKER_0{i % 2}",
                    "speaker_id": i % 2,
                    "is_user": i % 2 == 0,
                    "start": float(i),
                    "end": float(i) + 0.9,
                }
                for i, text in enumerate(texts)
            ],
        }
    ).encode()


async def realtime_call(
    http: httpx.AsyncClient,
    session_id: str,
    *texts: str,
    uid: str = "user123",
    secret: str = SECRET,
) -> httpx.Response:
    """``POST /webhook?session_id=S&uid=U`` as the platform makes it."""
    body = segments_body(session_id, *texts)
    return await http.post(
        "/webhook",
        params={"session_id": session_id, "uid": uid},
        content=body,
        headers={"content-type": "application/json", **signature_headers(secret, body)},
    )


@contextmanager
def run_example(
    module: str, env: dict[str, str], log_path: Path, port: int | None = None
) -> Iterator[str]:
    """Start ``python -m <module> --port P``; yield its URL once /healthz answers."""
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{module} exited: {log_path.read_text()[-2000:]}")
            try:
                if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{module} did not come up: {log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
