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
from typing import Any

import httpx
from examples.common import AppSettings
from fastapi import FastAPI

from nudge.sdk.webhook import signature_headers
from tests.conftest import ADMIN, World, free_port, make_world, start_server
from tests.sdk.scripted import over_asgi

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"example-app-test-secret!").decode()


@asynccontextmanager
async def example(create_app: Callable[[AppSettings], FastAPI]) -> AsyncIterator[httpx.AsyncClient]:
    """An example app (answers only, no API credentials) behind an in-process HTTP client."""
    async with over_asgi(create_app(AppSettings(SECRET))) as http:
        yield http


def segment(text: str, i: int) -> dict[str, object]:
    """The ``i``-th segment of a two-person conversation, in Omi's shape."""
    return {
        "text": text,
        "speaker": f"SPEAKER_0{i % 2}",
        "speaker_id": i % 2,
        "is_user": i % 2 == 0,
        "start": float(i),
        "end": i + 0.9,
    }


def segments_body(session_id: str, *texts: str) -> bytes:
    segments = [segment(text, i) for i, text in enumerate(texts)]
    return json.dumps({"session_id": session_id, "segments": segments}).encode()


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


@asynccontextmanager
async def behind_platform(
    tmp_path: Path, module: str, manifest: dict[str, Any], scopes: list[str]
) -> AsyncIterator[tuple[httpx.AsyncClient, World]]:
    """A real ``nudge serve`` (fake LLM, private webhooks allowed) and the example ``module`` as
    a process registered as its app (``manifest`` with the webhook URL filled in) and installed
    by a user. Yields an admin client of the platform and the app/user."""
    port = free_port()
    integration = {
        "triggers_on": "transcript_processed",
        "webhook_url": f"http://127.0.0.1:{port}/webhook",
    }
    server = start_server(tmp_path)
    try:
        async with httpx.AsyncClient(
            base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
        ) as admin:
            world = await make_world(
                admin, {**manifest, "external_integration": integration}, scopes=scopes
            )
            env = {"NUDGE_WEBHOOK_SECRET": world.webhook_secret}
            with run_example(module, env, tmp_path / f"{module}.log", port):
                yield admin, world
    finally:
        server.stop()


async def post_segments(
    admin: httpx.AsyncClient, uid: str, session_id: str, *texts: str, first: int = 0
) -> None:
    """What a phone would stream: ``POST /v1/users/{uid}/sessions/{session_id}/segments``."""
    segments = [segment(text, first + i) for i, text in enumerate(texts)]
    r = await admin.post(
        f"/v1/users/{uid}/sessions/{session_id}/segments", json={"segments": segments}
    )
    assert r.status_code == 202, r.text
