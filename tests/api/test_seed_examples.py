"""The seed docs' curl and JavaScript examples, unchanged but the host, against `nudge serve`."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN, IN_CI, MENTOR_MANIFEST, Server

# A copy of Omi's notification docs (the page the curl and JavaScript examples come from).
SEED = Path(__file__).resolve().parent / "data" / "omi-notifications-docs.txt"


def seed_text() -> str:
    return SEED.read_text()


def extract(text: str, start: str, end: str) -> str:
    i = text.index(start)
    j = text.index(end, i) + len(end)
    return text[i:j]


def setup_world(server: Server) -> tuple[str, str]:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=server.url, headers=admin) as c:
        app = c.post("/v1/apps", json={"manifest": MENTOR_MANIFEST}).json()
        c.post("/v1/users", json={"uid": "user123", "name": "Ana"}).raise_for_status()
        c.post("/v1/users", json={"uid": "USER_ID", "name": "Placeholder"}).raise_for_status()
        for uid in ("user123", "USER_ID"):
            c.post(f"/v1/users/{uid}/apps/{app['app_id']}", json={"scopes": []}).raise_for_status()
    return app["app_id"], app["app_secret"]


def inbox(server: Server, uid: str) -> list[dict[str, object]]:
    deadline = time.monotonic() + 10
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}) as c:
        while True:
            items: list[dict[str, object]] = c.get(f"/v1/users/{uid}/notifications").json()["items"]
            if items or time.monotonic() > deadline:
                return items
            time.sleep(0.1)


def test_seed_curl_example(server: Server) -> None:
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    app_id, secret = setup_world(server)
    curl = extract(
        seed_text(), 'curl -X POST "https://api.omi.me', '"Content-Type: application/json"'
    )
    curl = curl.replace("https://api.omi.me", server.url)
    env = {**os.environ, "OMI_APP_ID": app_id, "OMI_APP_SECRET": secret}
    out = subprocess.run(
        ["bash", "-c", curl + " -sS -w '\\n%{http_code}'"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    body, status = out.stdout.rsplit("\n", 1)
    assert status == "200", out.stdout + out.stderr
    assert '"status":"ok"' in body
    items = inbox(server, "USER_ID")
    assert [(n["title"], n["body"]) for n in items] == [("Mentor says", "Hello!")]


def test_seed_javascript_example(server: Server, tmp_path: Path) -> None:
    node = shutil.which("node")
    if node is None:
        if IN_CI:
            pytest.fail("node is not installed (scripts/system-deps.sh installs nodejs)")
        pytest.skip("node is not installed: apt-get install nodejs")
    app_id, secret = setup_world(server)
    js = extract(seed_text(), "const https = require('https');", ".catch(console.error);")
    js = js.replace("https://api.omi.me", server.url)
    script = tmp_path / "send.js"
    script.write_text(js)
    env = {**os.environ, "OMI_APP_ID": app_id, "OMI_APP_SECRET": secret}
    out = subprocess.run([node, str(script)], env=env, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "status: 'ok'" in out.stdout and "notification_id" in out.stdout, out.stdout + out.stderr
    items = inbox(server, "user123")
    assert [(n["title"], n["body"]) for n in items] == [
        ("Mentor says", "Your task is due in 1 hour!")
    ]
