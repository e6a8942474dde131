"""The `nudge` admin commands, run as a user would: a subprocess, JSON out, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import MENTOR_MANIFEST


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


def test_admin_token_generated_once(tmp_path: Path) -> None:
    from nudge.config import Settings
    from nudge.platform import resolve_admin_token

    settings = Settings(data_dir=tmp_path / "d", admin_token=None)
    first = resolve_admin_token(settings)
    assert first.startswith("adm_") and resolve_admin_token(settings) == first
    assert (tmp_path / "d" / "admin-token").stat().st_mode & 0o077 == 0
    assert resolve_admin_token(Settings(data_dir=tmp_path / "d", admin_token="set")) == "set"
