"""Schemathesis against a real ``nudge serve``, on SQLite and on PostgreSQL: no request it makes
from ``/openapi.json`` (valid, boundary or invalid) gets a 5xx (its ``not_a_server_error`` check).

It runs as the admin and as an app (its secret), each for a bounded time, with the ids of a real
app and user offered half of the time so that requests get past "not found" into the code behind.
Not fuzzed: the live inbox (``/notifications/stream``, a Server-Sent Events stream that never ends;
its parameters and auth are the inbox list's, which is fuzzed). The WebSocket endpoint is not in
the OpenAPI document. ``NUDGE_FUZZ_SECONDS`` and ``NUDGE_FUZZ_SEED`` change the budget and the
seed (fixed, so that CI runs the same cases and a failure can be replayed).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ADMIN, MENTOR_MANIFEST, make_world, start_server

SECONDS = int(os.environ.get("NUDGE_FUZZ_SECONDS", "45"))  # per identity and database
SEED = os.environ.get("NUDGE_FUZZ_SEED", "20261207")
NOT_FUZZED = r"/notifications/stream$"

# The integration API answers beyond its 403 only for an app whose manifest lists the actions.
MANIFEST = {
    **MENTOR_MANIFEST,
    "external_integration": {
        **MENTOR_MANIFEST["external_integration"],
        "actions": [
            {"action": a}
            for a in (
                "create_conversation",
                "create_memories",
                "read_memories",
                "read_conversations",
            )
        ],
    },
}


def config(app_id: str, uid: str) -> str:
    """Schemathesis's configuration: the real ids, offered with probability one half."""
    return f"""
[dictionaries.uids]
values = ["{uid}"]
[dictionaries.apps]
values = ["{app_id}"]

[parameters]
"path.uid" = {{ dictionary = "uids", probability = 0.5 }}
"query.uid" = {{ dictionary = "uids", probability = 0.5 }}
"body.user_id" = {{ dictionary = "uids", probability = 0.5 }}
"path.app_id" = {{ dictionary = "apps", probability = 0.5 }}
"""


def fuzz(url: str, token: str, config_file: Path) -> subprocess.CompletedProcess[str]:
    command = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config_file)),
        *("run", f"{url}/openapi.json", "--header", f"Authorization: Bearer {token}"),
        *("--checks", "not_a_server_error", "--phases", "examples,coverage,fuzzing"),
        *("--max-time", str(SECONDS), "--max-examples", "25", "--max-failures", "5"),
        *("--seed", SEED, "--workers", "1", "--request-timeout", "15"),
        *("--exclude-path-regex", NOT_FUZZED, "--generation-database", "none", "--no-color"),
    ]
    return subprocess.run(
        command,
        cwd=config_file.parent,  # hypothesis and schemathesis leave their folders here
        capture_output=True,
        text=True,
        timeout=SECONDS + 120,
    )


def report(run: subprocess.CompletedProcess[str], server_log: Path) -> str:
    """What failed, how to reproduce it, and the end of each error the server logged."""
    out = run.stdout + run.stderr
    start = out.find("FAILURES")
    errors = []
    for line in server_log.read_text().splitlines():
        if '"level": "error"' in line:
            record = json.loads(line)
            last = str(record.get("exc", "")).strip().splitlines()[-3:]
            errors.append(f"{record.get('path')}: {record.get('msg')}: {' | '.join(last)}")
    return (out[start:] if start >= 0 else out[-4000:])[:8000] + "\n" + "\n".join(errors[-10:])


async def test_no_generated_request_gets_a_5xx(tmp_path: Path, database_url: str) -> None:
    server = start_server(
        tmp_path,
        {
            "NUDGE_DATABASE_URL": database_url,
            # Most generated requests fail auth on purpose: the throttle must not answer them.
            "NUDGE_AUTH_FAILURE_LIMIT": "1000000000",
        },
    )
    try:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        async with httpx.AsyncClient(base_url=server.url, headers=admin, timeout=10) as c:
            world = await make_world(c, MANIFEST)
        config_file = tmp_path / "schemathesis.toml"
        config_file.write_text(config(world.app_id, world.uid))
        failed = []
        for who, token in (("the admin", ADMIN), ("an app", world.app_secret)):
            run = await asyncio.to_thread(fuzz, server.url, token, config_file)
            if run.returncode != 0:
                failed.append(f"as {who} (exit {run.returncode}):\n{report(run, server.log_path)}")
        assert not failed, "\n\n".join(failed)
    finally:
        server.stop()
