"""``nudge new app``: the folder it makes passes its own tests, runs under ``nudge simulate`` at
once, and its app reaches a user's inbox through ``nudge serve``."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import ADMIN, Server, free_port

NUDGE = [sys.executable, "-m", "nudge.cli"]


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
    out = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@contextmanager
def app_running(folder: Path, port: int, secret: str) -> Iterator[None]:
    env = {**os.environ, "NUDGE_WEBHOOK_SECRET": secret}
    proc = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port)],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "the app did not start"
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        proc.wait(10)


def test_new_app_passes_its_tests_and_runs_under_simulate(tmp_path: Path) -> None:
    made = run(*NUDGE, "new", "app", "Job Coach", cwd=tmp_path)
    folder = tmp_path / "Job Coach"
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "app.json",
        "app.py",
        "talk.txt",
        "test_app.py",
    ]
    assert json.loads((folder / "app.json").read_text())["name"] == "Job Coach"
    tests = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=folder)
    assert "2 passed" in tests, tests
    assert "  cd 'Job Coach'\n" in made, made
    secret = re.search(r"NUDGE_WEBHOOK_SECRET=(whsec_\S+)", made).group(1)  # type: ignore[union-attr]
    port = free_port()
    with app_running(folder, port, secret):
        shown = run(
            *NUDGE,
            "simulate",
            "--webhook",
            f"http://127.0.0.1:{port}/webhook",
            "--transcript",
            "talk.txt",
            "--secret",
            secret,
            cwd=folder,
        )
    assert "1 proactive notification asked" in shown, shown
    refused = subprocess.run(
        [*NUDGE, "new", "app", "Job Coach"], cwd=tmp_path, capture_output=True, text=True
    )
    assert refused.returncode != 0 and "already exists" in refused.stderr


def test_new_app_reaches_the_inbox_through_nudge_serve(tmp_path: Path, server: Server) -> None:
    run(*NUDGE, "new", "app", "Coach", cwd=tmp_path)
    folder = tmp_path / "Coach"
    port = free_port()
    manifest = json.loads((folder / "app.json").read_text().replace("8001", str(port)))
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=server.url, headers=admin) as c:
        app = c.post("/v1/apps", json={"manifest": manifest}).json()
        c.post("/v1/users", json={"uid": "ana", "name": "Ana"}).raise_for_status()
        scopes = {"scopes": ["user_name", "user_facts"]}
        c.post(f"/v1/users/ana/apps/{app['app_id']}", json=scopes).raise_for_status()
        with app_running(folder, port, app["webhook_secret"]):
            run(
                *NUDGE,
                *("simulate", "--platform", server.url, "--token", ADMIN),
                *("--uid", "ana", "--transcript", "talk.txt"),
                cwd=folder,
            )
        inbox = c.get("/v1/users/ana/notifications").json()["items"]
    assert [n["title"] for n in inbox] == ["Coach says"]
    assert "two job offers" in inbox[0]["body"]  # the fake LLM echoes the filled prompt
