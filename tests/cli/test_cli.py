"""The `nudge` admin commands, run as a user would: a subprocess, JSON out, clear errors."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.conftest import ADMIN, MENTOR_MANIFEST, Server, free_port


def test_admin_flow(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert json.loads(run("db", "upgrade").stdout)["status"] == "ok"
    manifest = tmp_path / "app.json"
    manifest.write_text(json.dumps(MENTOR_MANIFEST))
    app = json.loads(run("apps", "create", "--manifest", str(manifest)).stdout)
    assert app["app_secret"].startswith("sk_")
    user = json.loads(
        run(
            "users",
            "create",
            "--name",
            "Ana",
            "--uid",
            "user123",
            "--fact",
            "Wants to run a marathon",
        ).stdout
    )
    assert user["uid"] == "user123" and user["user_token"].startswith("ut_")
    installed = json.loads(
        run("users", "install", "user123", app["app_id"], "--scope", "user_name").stdout
    )
    assert installed["scopes"] == ["user_name"]
    sent = json.loads(run("send", app["app_id"], "user123", "Hello from the CLI").stdout)
    assert sent["status"] == "ok" and sent["notification_id"].startswith("n_")
    listed = json.loads(run("apps", "list").stdout)
    assert [a["name"] for a in listed] == ["Mentor"]
    assert json.loads(run("db", "prune").stdout)["removed"] == 0  # 90 days by default
    assert json.loads(run("db", "prune", "--older-than-days", "0").stdout)["removed"] == 1
    assert "must be 0 or more" in run("db", "prune", "--older-than-days", "-1", ok=False).stderr


def test_clear_errors(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("db", "upgrade")
    missing = run("apps", "create", "--manifest", str(tmp_path / "nope.json"), ok=False)
    assert "cannot read" in missing.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "", "capabilities": ["teleport"]}))
    out = run("apps", "create", "--manifest", str(bad), ok=False)
    assert "name" in out.stderr and "capabilities" in out.stderr
    bad.write_text("{not json")
    assert "not JSON" in run("apps", "create", "--manifest", str(bad), ok=False).stderr
    assert "not found" in run("send", "app_x", "nobody", "hi", ok=False).stderr
    assert "must not be empty" in run("send", "app_x", "nobody", "  ", ok=False).stderr
    assert "unknown scopes" in run("users", "install", "u", "a", "--scope", "x", ok=False).stderr
    assert (
        "already exists"
        in (
            run("users", "create", "--name", "A", "--uid", "dup")
            and run("users", "create", "--name", "A", "--uid", "dup", ok=False)
        ).stderr
    )


def test_serve_rejects_a_bad_role(run) -> None:  # type: ignore[no-untyped-def]
    assert "--role" in run("serve", "--role", "boss", ok=False).stderr


def test_serve_fails_when_its_port_is_taken(run) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        out = run("serve", "--port", port, "--log-format", "text", ok=False)
    assert out.returncode == 3 and "ready on" not in out.stderr


def test_admin_token_generated_once(tmp_path: Path) -> None:
    from nudge.config import Settings
    from nudge.platform import resolve_admin_token

    settings = Settings(data_dir=tmp_path / "d", admin_token=None)
    first = resolve_admin_token(settings)
    assert first.startswith("adm_") and resolve_admin_token(settings) == first
    assert (tmp_path / "d" / "admin-token").stat().st_mode & 0o077 == 0
    assert resolve_admin_token(Settings(data_dir=tmp_path / "d", admin_token="set")) == "set"


def test_no_database_is_an_error_not_a_new_empty_one(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = run("send", "app_x", "user123", "hi", ok=False)
    assert f"no database at {tmp_path}/cli.db" in out.stderr and "--url" in out.stderr
    assert out.returncode == 2 and not (tmp_path / "cli.db").exists()
    assert "no database" in run("apps", "list", ok=False).stderr
    assert "no database" in run("db", "prune", ok=False).stderr
    run("db", "upgrade")  # creates it on purpose
    assert json.loads(run("apps", "list").stdout) == []


def test_data_dir_decides_the_default_database(tmp_path: Path) -> None:
    from nudge.config import Settings

    assert Settings(data_dir=tmp_path).database_url == f"sqlite+aiosqlite:///{tmp_path}/nudge.db"
    assert Settings(data_dir=tmp_path, database_url="sqlite+aiosqlite:///x.db").database_url == (
        "sqlite+aiosqlite:///x.db"
    )


def test_manifest_warnings(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run("db", "upgrade")
    manifest = tmp_path / "app.json"
    manifest.write_text(json.dumps({**MENTOR_MANIFEST, "image": "x.png", "categry": "health"}))
    out = run("apps", "create", "--manifest", str(manifest))
    assert "ignored manifest keys (not used by Nudge): image, categry" in out.stderr
    assert "http://127.0.0.1:9/webhook is not a public address" in out.stderr
    assert "NUDGE_ALLOW_PRIVATE_WEBHOOKS=1" in out.stderr
    exports = run("apps", "create", "--manifest", str(manifest), "--env").stdout
    assert re.fullmatch(
        r"export OMI_APP_ID=app_\w+\nexport OMI_APP_SECRET=sk_\w+\n"
        r"export NUDGE_WEBHOOK_SECRET=whsec_\S+\n",
        exports,
    ), exports


def test_admin_commands_over_http(run, tmp_path: Path, server: Server) -> None:  # type: ignore[no-untyped-def]
    manifest = tmp_path / "app.json"
    manifest.write_text(json.dumps(MENTOR_MANIFEST))
    remote = ("--url", server.url, "--token", ADMIN)
    app = json.loads(run("apps", "create", "--manifest", str(manifest), *remote).stdout)
    user = json.loads(run("users", "create", "--name", "Ana", "--uid", "u1", *remote).stdout)
    assert user["uid"] == "u1" and not (tmp_path / "cli.db").exists()  # nothing opened locally
    run("users", "install", "u1", app["app_id"], "--scope", "user_name", *remote)
    sent = json.loads(run("send", app["app_id"], "u1", "Over HTTP", *remote).stdout)
    options = ("--priority", "high", "--ttl", "600")
    urgent = json.loads(run("send", app["app_id"], "u1", "Urgent", *options, *remote).stdout)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}) as c:
        inbox = c.get("/v1/users/u1/notifications").json()["items"]
        keys = c.get(f"/v1/apps/{app['app_id']}/keys").json()
    assert [(n["id"], n["body"], n["priority"]) for n in inbox] == [
        (urgent["notification_id"], "Urgent", "high"),
        (sent["notification_id"], "Over HTTP", "normal"),
    ]
    assert inbox[0]["expires_at"] == pytest.approx(inbox[0]["created_at"] + 600, abs=0.01)
    listed = json.loads(run("apps", "list", *remote).stdout)
    assert [a["app_id"] for a in listed] == [app["app_id"]]
    assert len([k for k in keys if not k.get("revoked_at")]) == 1  # the one-time keys are revoked
    refused = run("users", "create", "--name", "A", *remote[:2], "--token", "wrong", ok=False)
    assert "401" in refused.stderr
    assert (
        "cannot reach"
        in run(
            "apps",
            "create",
            "--manifest",
            str(manifest),
            "--url",
            "http://127.0.0.1:9",
            "--token",
            "x",
            ok=False,
        ).stderr
    )


def read_until(stream: IO[str], marker: str, timeout_s: float = 60) -> str:
    seen = ""
    deadline = time.monotonic() + timeout_s
    while marker not in seen and time.monotonic() < deadline:
        line = stream.readline()
        if not line:
            break
        seen += line
    return seen


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_serve_says_where_it_is(tmp_path: Path, fmt: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
    env |= {"NUDGE_DATA_DIR": str(tmp_path / "data"), "NUDGE_LLM_PROVIDER": "fake"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nudge.cli", "serve", "--port", str(port), "--log-format", fmt],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stderr is not None
        out = read_until(proc.stderr, "Ctrl+C" if fmt == "text" else '"ready"')
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    url = f"http://127.0.0.1:{port}"
    token_file = str((tmp_path / "data" / "admin-token").resolve())
    if fmt == "text":
        assert f"nudge: ready on {url} (role all, database sqlite+aiosqlite:///" in out, out
        assert f"console      {url}/console?token=<admin token>" in out, out
        assert f"admin token  {token_file}" in out and "providers    inbox, log" in out, out
    else:
        ready = next(json.loads(line) for line in out.splitlines() if '"ready"' in line)
        assert ready["url"] == url and ready["admin_token"] == token_file
        assert "inbox" in ready["providers"] and ready["console"] == f"{url}/console"
