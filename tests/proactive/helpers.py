"""Shared steps of the proactive tests: apps, segments, traces, and app servers in processes."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from nudge.api.app import create_app as create_api
from nudge.platform import Platform
from tests.conftest import ADMIN, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]


def manifest(
    name: str, url: str, *, scopes: list[str] | None = None, trigger: str = "transcript_processed"
) -> dict[str, Any]:
    caps = ["external_integration"]
    out: dict[str, Any] = {
        "name": name,
        "capabilities": caps,
        "external_integration": {"triggers_on": trigger, "webhook_url": url},
    }
    if scopes is not None:
        caps.append("proactive_notification")
        out["proactive_notification"] = {"scopes": scopes}
    return out


async def create_app(c: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    r = await c.post("/v1/apps", json={"manifest": body})
    assert r.status_code == 201, r.text
    app: dict[str, Any] = r.json()
    return app


async def create_user(
    c: httpx.AsyncClient, uid: str, name: str = "Ana", facts: list[str] | None = None
) -> None:
    r = await c.post("/v1/users", json={"uid": uid, "name": name, "facts": facts or []})
    assert r.status_code == 201, r.text


async def install(c: httpx.AsyncClient, uid: str, app_id: str, scopes: list[str]) -> None:
    r = await c.post(f"/v1/users/{uid}/apps/{app_id}", json={"scopes": scopes})
    assert r.status_code == 200, r.text


def seg(text: str, speaker: int = 1, is_user: bool = False) -> dict[str, Any]:
    return {
        "text": text,
        "speaker": f"SPEAKER_0{speaker}",
        "speaker_id": speaker,
        "is_user": is_user,
        "start": 0.0,
        "end": 1.0,
    }


async def post_segments(
    c: httpx.AsyncClient, uid: str, session_id: str, *texts: str
) -> dict[str, Any]:
    r = await c.post(
        f"/v1/users/{uid}/sessions/{session_id}/segments",
        json={"segments": [seg(t) for t in texts]},
    )
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


async def traces(c: httpx.AsyncClient, app_id: str, **params: Any) -> list[dict[str, Any]]:
    r = await c.get(f"/v1/apps/{app_id}/traces", params={"limit": 200, **params})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


async def wait_traces(
    c: httpx.AsyncClient, app_id: str, count: int, timeout: float = 15.0, **params: Any
) -> list[dict[str, Any]]:
    """Wait until ``count`` traces exist; returns them oldest first."""

    async def enough() -> list[dict[str, Any]] | None:
        found = await traces(c, app_id, **params)
        return found if len(found) >= count else None

    found: list[dict[str, Any]] = await wait_for(enough, timeout=timeout)
    return list(reversed(found))


async def inbox(c: httpx.AsyncClient, uid: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (await c.get(f"/v1/users/{uid}/notifications")).json()["items"]
    return items


@contextmanager
def uvicorn_app(target: str) -> Iterator[str]:
    """Run ``module:attr`` under a real uvicorn process; yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            target,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/docs", proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def api_client(platform: Platform) -> httpx.AsyncClient:
    """The platform's API in-process, with the admin token."""
    api = create_api(platform.settings, platform=platform)
    api.state.platform = platform
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api),
        base_url="http://nudge.test",
        headers={"Authorization": f"Bearer {ADMIN}"},
    )


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Wait until ``url`` answers (any status), or fail if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
