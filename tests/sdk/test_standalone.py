"""The SDK installs and runs alone: a fresh venv with only the sdk extra's pins and nudge itself."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Run inside the SDK-only venv: a send against a tiny platform, and a signed webhook call.
SCRIPT = """
import importlib.util, json, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

import nudge.sdk
import nudge.sdk.webhook as webhook

for server_only in ("fastapi", "sqlalchemy", "uvicorn"):
    assert importlib.util.find_spec(server_only) is None, server_only
seen = []

class Platform(BaseHTTPRequestHandler):
    def do_POST(self):
        seen.append((self.path, self.headers["Authorization"], self.headers["Idempotency-Key"]))
        body = json.dumps({"status": "ok", "notification_id": "n-1", "devices": 2}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-RateLimit-Remaining", "9")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Platform)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_port}"
with nudge.sdk.NudgeClient(url, "app-1", "sk_secret") as client:
    sent = client.send_notification("ana", "Your run starts in an hour")
server.shutdown()
assert (sent.notification_id, sent.devices, sent.rate_limit.remaining) == ("n-1", 2, 9), sent
path, auth, key = seen[0]
assert path.startswith("/v2/integrations/app-1/notification?uid=ana&message="), path
assert auth == "Bearer sk_secret" and key == sent.idempotency_key

secret = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
kit = webhook.WebhookKit(secret, on_transcript=lambda e: webhook.message(f"heard: {e.text}"))
app = Starlette(routes=[Route("/webhook", kit.handle_transcript, methods=["POST"])])
call = json.dumps({"session_id": "ana", "segments": [{"text": "hello there"}]})

async def webhook_call():
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as http:
        return await http.post(
            "/webhook?uid=ana&session_id=ana",
            content=call,
            headers=webhook.signature_headers(secret, call),
        )

import asyncio
answer = asyncio.run(webhook_call())
assert answer.json() == {"session_id": "ana", "message": "heard: hello there"}, answer.text
print("standalone ok")
"""


@pytest.mark.slow
def test_the_sdk_runs_in_a_venv_without_the_server_dependencies(tmp_path: Path) -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = pyproject["project"]["optional-dependencies"]["sdk"]
    venv.create(tmp_path / "venv", with_pip=True)  # no system site-packages
    python = str(tmp_path / "venv" / "bin" / "python")
    # A copy of the project, so the build writes nothing into the working tree.
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(ROOT / "src", project / "src", ignore=shutil.ignore_patterns("__pycache__"))

    def pip(*args: str) -> None:
        subprocess.run([python, "-m", "pip", "install", "-q", *args], check=True, timeout=600)

    pip(*pins)
    pip("--no-deps", str(project))
    run = subprocess.run(
        [python, "-c", SCRIPT], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "standalone ok"
    for server_only in ("fastapi", "sqlalchemy"):
        probe = subprocess.run([python, "-c", f"import {server_only}"], capture_output=True)
        assert probe.returncode != 0, f"{server_only} is importable in the SDK's venv"
