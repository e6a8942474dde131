"""The mentor example answers the platform's calls as Omi's docs say."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from examples.common import AppSettings
from examples.mentor.app import PROMPT, create_app

from tests.examples.conftest import ROOT, SECRET, example, realtime_call, run_example


def mentor_answer(discussion: str) -> dict[str, object]:
    """The mentor's answer when ``discussion`` was said: its prompt and the transcript."""
    return {
        "session_id": "abc123",
        "notification": {
            "prompt": PROMPT + discussion,
            "params": ["user_name", "user_facts", "user_context"],
        },
    }


@pytest.fixture
async def mentor() -> AsyncIterator[httpx.AsyncClient]:
    async with example(create_app) as http:
        yield http


async def test_trigger_phrase_returns_the_mentor_prompt(mentor: httpx.AsyncClient) -> None:
    r = await realtime_call(mentor, "abc123", "What do you think about this approach?")
    assert r.status_code == 200
    assert r.json() == mentor_answer("What do you think about this approach?")
    for placeholder in ("{{user_name}}", "{{user_facts}}", "{{user_context}}"):
        assert placeholder in r.json()["notification"]["prompt"]


async def test_other_talk_returns_nothing_and_old_words_do_not_retrigger(
    mentor: httpx.AsyncClient,
) -> None:
    quiet = await realtime_call(mentor, "abc123", "We should ship on Friday.")
    asked = await realtime_call(mentor, "abc123", "Any advice", "on how to plan it?")
    after = await realtime_call(mentor, "abc123", "Okay, let's do that.")
    assert quiet.json() == {"session_id": "abc123"}
    assert asked.json() == mentor_answer("We should ship on Friday. Any advice on how to plan it?")
    assert after.json() == {"session_id": "abc123"}


async def test_unsigned_or_wrongly_signed_calls_are_refused(mentor: httpx.AsyncClient) -> None:
    other = "whsec_" + "b" * 32
    r = await realtime_call(mentor, "abc123", "what do you think", secret=other)
    assert r.status_code == 401
    r = await mentor.post("/webhook?session_id=abc123&uid=u", json={"session_id": "abc123"})
    assert r.status_code == 401


def test_settings_come_from_the_environment() -> None:
    with pytest.raises(SystemExit, match="NUDGE_WEBHOOK_SECRET"):
        AppSettings.from_env({})
    with pytest.raises(SystemExit, match="all of"):
        AppSettings.from_env({"NUDGE_WEBHOOK_SECRET": SECRET, "NUDGE_APP_ID": "app_1"})
    assert AppSettings.from_env({"NUDGE_WEBHOOK_SECRET": SECRET}).client() is None


async def test_runs_as_a_program(tmp_path: Path) -> None:
    env = {"NUDGE_WEBHOOK_SECRET": SECRET}
    with run_example("examples.mentor.app", env, tmp_path / "mentor.log") as url:
        async with httpx.AsyncClient(base_url=url) as http:
            r = await realtime_call(http, "abc123", "what do you think?")
            health = await http.get("/healthz")
    assert r.json() == mentor_answer("what do you think?")
    assert health.json() == {"status": "ok", "sessions": 1}


def test_refuses_to_start_without_a_secret() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "examples.mentor.app", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0 and "NUDGE_WEBHOOK_SECRET" in done.stderr
