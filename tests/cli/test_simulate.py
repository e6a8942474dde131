"""``nudge simulate``: transcripts parsed, calls made exactly as the platform makes them (checked by
a recording app and by the mentor example's signature check), prompts filled by the platform's
filler, playing through a running platform, and clear errors."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from examples.common import AppSettings
from examples.mentor.app import create_app as create_mentor
from fastapi import FastAPI, Request
from standardwebhooks import Webhook
from typer.testing import CliRunner

from nudge.cli.main import cli
from nudge.cli.simulate import SimulateError, parse_transcript
from tests.conftest import ADMIN, ServeASGI, free_port, make_world
from tests.console.conftest import MENTOR_SCOPES, mentor_manifest

SECRET = "whsec_" + "c2ltdWxhdGUtdGVzdC1zZWNyZXQtMTIzNA=="
TALK = """\
# Ana and her coach
Ana: I signed up for the city marathon in April.
Coach: Nice! How is the training going?
Ana: Slowly. What do you think I should change?
"""


@dataclass
class Cli:
    code: int
    out: str
    err: str


async def nudge(*args: str, env: dict[str, str] | None = None) -> Cli:
    """``python -m nudge.cli ...`` as a user runs it, without the caller's NUDGE_* settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NUDGE_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "nudge.cli", *args,
        env={**clean, "COLUMNS": "200", **(env or {})},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    result = Cli(proc.returncode or 0, out.decode(), err.decode())
    assert "Traceback" not in result.out + result.err, result
    return result


@pytest.fixture
def talk(tmp_path: Path) -> Path:
    path = tmp_path / "talk.txt"
    path.write_text(TALK)
    return path


# --- Transcripts ---------------------------------------------------------------------------


def test_speaker_lines_become_segments() -> None:
    t = parse_transcript(TALK)
    assert [(s.speaker, s.speaker_id, s.is_user, s.text) for s in t.segments] == [
        ("SPEAKER_00", 0, True, "I signed up for the city marathon in April."),
        ("SPEAKER_01", 1, False, "Nice! How is the training going?"),
        ("SPEAKER_00", 0, True, "Slowly. What do you think I should change?"),
    ]
    assert all(a.end <= b.start for a, b in zip(t.segments, t.segments[1:]))
    assert all(s.end > s.start for s in t.segments)
    assert t.who(t.segments[1]) == "Coach" and t.who(t.segments[0]) == "Ana (user)"
    coach = parse_transcript(TALK, me="Coach")
    assert [s.is_user for s in coach.segments] == [False, True, False]
    # Colons after the first belong to the text.
    assert parse_transcript("Ana: at 7:30: run").segments[0].text == "at 7:30: run"


def test_json_segments_are_read_with_the_platforms_model() -> None:
    segments = [{"text": "hi", "speaker": "SPEAKER_03", "is_user": False, "start": 1, "end": 2}]
    for doc in (segments, {"segments": segments}, {"id": "c1", "transcript_segments": segments}):
        parsed = parse_transcript(json.dumps(doc)).segments
        assert [(s.text, s.speaker, s.speaker_number()) for s in parsed] == [
            ("hi", "SPEAKER_03", 3)
        ]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "empty"),
        ("  \n# only a comment\n", "empty"),
        ("Ana: hi\nno speaker here\n", "line 2: expected 'Speaker: text'"),
        ("[1, 2", "not valid JSON (line 1"),
        ('{"foo": []}', "expected a JSON list of segments"),
        ('[{"speaker": "SPEAKER_00"}]', "bad segment: 0.text: Field required"),
        ('[{"text": ""}]', "bad segment: 0.text"),
    ],
)
def test_bad_transcripts_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(SimulateError) as caught:
        parse_transcript(text)
    assert error in str(caught.value)


def test_me_must_be_a_speaker() -> None:
    with pytest.raises(SimulateError, match=r"--me 'Bob' is not a speaker"):
        parse_transcript(TALK, me="Bob")


# --- Playing to a webhook ------------------------------------------------------------------


class Recorder:
    """An app that records each call and answers from a script (then ``{}``)."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers
        self.calls: list[tuple[dict[str, str], dict[str, str], bytes]] = []
        self.app = FastAPI()
        self.app.post("/hook")(self.hook)

    async def hook(self, request: Request) -> Any:
        self.calls.append((dict(request.query_params), dict(request.headers), await request.body()))
        return self.answers.pop(0) if self.answers else {}


@pytest.fixture
async def recorder() -> AsyncIterator[tuple[Recorder, str]]:
    prompt = "Hi {{user_name}}. Facts: {{user_facts}}. Chat: {{user_chat}}. Now: {{user_context}}"
    rec = Recorder(
        [
            {},
            {"message": "ok"},  # too short: the platform ignores it
            {
                "notification": {
                    "prompt": prompt,
                    "params": ["user_name", "user_facts", "user_context"],
                }
            },
        ]
    )
    async with ServeASGI(rec.app) as served:
        yield rec, f"{served.url}/hook"


async def test_calls_are_the_platforms_and_the_prompt_is_filled(
    recorder: tuple[Recorder, str], talk: Path
) -> None:
    rec, url = recorder
    r = await nudge(
        "simulate", "--webhook", url, "-t", str(talk), "--secret", SECRET, "--uid", "u-7",
        "--session-id", "s-1", "--user-name", "Bea", "--fact", "Likes tea", "--fact", "Runs",
        "--grant", "user_name", "--grant", "user_context", "--chat", "App: hello",
        "--past", "We planned the spring race. Training starts in March.",
    )  # fmt: skip
    assert r.code == 0, r
    # One signed call per segment, with the platform's query and body: as Omi's backend, the
    # session id is the uid, and the conversation has an id of its own.
    assert len(rec.calls) == 3
    conversations = set()
    for i, (query, headers, body) in enumerate(rec.calls):
        assert query == {"session_id": "u-7", "uid": "u-7"}
        assert headers["content-type"] == "application/json"
        Webhook(SECRET).verify(body, headers)  # raises on a bad signature
        payload = json.loads(body)
        assert payload["session_id"] == "u-7"
        conversations.add(payload["conversation_id"])
        assert [set(s) for s in payload["segments"]] == [
            {"text", "speaker", "speaker_id", "is_user", "start", "end"}
        ]
        assert payload["segments"][0]["text"] == parse_transcript(TALK).segments[i].text
    assert len(conversations) == 1
    # What the platform would do with each answer.
    assert "= no notification asked" in r.out
    assert "= not sent: message: must be over 5 characters; ignored" in r.out
    assert "= proactive notification asked" in r.out
    assert "user_facts: not granted by the user" in r.out
    assert "user_chat: not listed in notification.params" in r.out
    # {{user_context}}: the past conversation given, as the platform writes it (not the talk).
    assert "Hi Bea. Facts: . Chat: . Now: Conversation #1" in r.out
    assert "│ We planned the spring race." in r.out
    assert "What do you think I should change?" not in r.out.split("filled prompt")[-1]
    assert "3 calls, 3 answered 2xx, 1 proactive notification asked, 0 message notif" in r.out


async def test_the_mentor_example_accepts_the_calls(talk: Path) -> None:
    port = free_port()
    async with ServeASGI(create_mentor(AppSettings(SECRET)), port=port):
        url = f"http://127.0.0.1:{port}/webhook"
        ok = await nudge(
            "simulate", "--webhook", url, "-t", str(talk), "--fact", "Wants to run a marathon",
            "--batch", "2", env={"NUDGE_WEBHOOK_SECRET": SECRET},
        )  # fmt: skip
        assert ok.code == 0, ok
        assert "(2 segments)" in ok.out and "(1 segment)" in ok.out
        assert "│ You are a helpful mentor for Ana." in ok.out
        assert "│ Based on their goals (Wants to run a marathon), what they talked about" in ok.out
        assert "2 calls, 2 answered 2xx, 1 proactive notification asked" in ok.out
        # Another secret: the app refuses every call, and the run says so and fails.
        other = "whsec_" + "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldA=="
        bad = await nudge("simulate", "--webhook", url, "-t", str(talk), "--secret", other)
        assert bad.code == 1
        assert bad.out.count("answered HTTP 401") == 3
        assert "3 calls, 0 answered 2xx" in bad.out


def run_cli(*args: str) -> Cli:
    """The CLI in-process (for errors found before or without a running platform)."""
    result = CliRunner().invoke(
        cli,
        list(args),
        env={
            "NUDGE_WEBHOOK_SECRET": None,
            "NUDGE_ADMIN_TOKEN": None,
            "NUDGE_DATA_DIR": "/nonexistent/nudge-data",  # no kept admin token either
            "COLUMNS": "200",
        },
    )
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return Cli(result.exit_code, result.stdout, result.stderr)


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--webhook", "ftp://x/hook"], "--webhook must be an http(s) URL"),
        (["--webhook", "http://127.0.0.1:9/hook", "--batch", "0"], "--batch must be 1 to 500"),
        (["--webhook", "http://127.0.0.1:9/hook", "--session-id", "a b"], "session_id: must be"),
        (["--webhook", "http://127.0.0.1:9/hook", "--grant", "user_soul"], "unknown scopes"),
        (["--platform", "localhost:8000"], "--platform must be an http(s) URL"),
        (["--platform", "http://127.0.0.1:9", "--interval", "-1"], "--interval must be 0 or"),
        ([], "give exactly one of --webhook"),
        (["--webhook", "http://a/h", "--platform", "http://b"], "give exactly one of --webhook"),
    ],
)
def test_bad_options_are_clear_errors(talk: Path, args: list[str], error: str) -> None:
    r = run_cli("simulate", "-t", str(talk), "--secret", SECRET, "--token", "t", *args)
    assert r.code != 0 and error in r.err, r


def test_files_secrets_and_unreachable_targets_are_clear_errors(tmp_path: Path) -> None:
    hook = ["simulate", "--webhook", "http://127.0.0.1:9/h"]
    missing = run_cli(*hook, "-t", str(tmp_path / "nope.txt"))
    assert missing.code == 1 and "cannot read" in missing.err and "nope.txt" in missing.err
    bad = tmp_path / "bad.txt"
    bad.write_text("Ana: hi\nhello there\n")
    r = run_cli(*hook, "-t", str(bad))
    assert r.code == 1 and "bad.txt: line 2: expected 'Speaker: text'" in r.err
    binary = tmp_path / "talk.bin"
    binary.write_bytes(b"\xff\xfe\x00")
    r = run_cli(*hook, "-t", str(binary))
    assert r.code == 1 and "is not UTF-8 text" in r.err
    good = tmp_path / "good.txt"
    good.write_text("Ana: hi there\n")
    r = run_cli(*hook, "-t", str(good))  # no secret: signed with a generated one, said so
    assert "no --secret (or NUDGE_WEBHOOK_SECRET): signing with a generated one, whsec_" in r.out
    assert r.code == 1 and "did not answer" in r.err  # and it did call
    r = run_cli(*hook, "-t", str(good), "--secret", "sk_not_a_webhook_secret")
    assert r.code == 1 and "starts with whsec_" in r.err
    r = run_cli("simulate", "--platform", "http://127.0.0.1:9", "-t", str(good))
    assert r.code == 1 and "--platform needs the admin token: pass --token" in r.err
    closed = f"http://127.0.0.1:{free_port()}"
    r = run_cli("simulate", "--webhook", closed + "/webhook", "-t", str(good), "--secret", SECRET)
    assert r.code == 1 and "did not answer" in r.err and "is the app running?" in r.err
    assert "answered" not in r.out.splitlines()[-1]  # stopped at the first call
    r = run_cli("simulate", "--platform", closed, "-t", str(good), "--token", ADMIN)
    assert r.code == 1 and "cannot reach the platform" in r.err


# --- Playing through a platform ------------------------------------------------------------


async def test_through_a_platform_shows_the_notification_and_its_deliveries(
    live_url: str, client: httpx.AsyncClient, talk: Path
) -> None:
    port = free_port()
    world = await make_world(client, mentor_manifest(port), scopes=MENTOR_SCOPES)
    async with ServeASGI(create_mentor(AppSettings(world.webhook_secret)), port=port):
        r = await nudge(
            "simulate", "--platform", live_url, "-t", str(talk), "--uid", world.uid,
            "--session-id", "sim-platform", env={"NUDGE_ADMIN_TOKEN": ADMIN},
        )  # fmt: skip
    assert r.code == 0, r
    inbox = (await client.get(f"/v1/users/{world.uid}/notifications")).json()["items"]
    assert [n["kind"] for n in inbox] == ["proactive"]
    body = inbox[0]["body"]
    traces = (await client.get(f"/v1/apps/{world.app_id}/traces")).json()["items"]
    assert sum(t["request"]["segments"] for t in traces) == 3
    assert f"user Ana ({world.uid})  apps Mentor ({world.app_id})" in r.out
    assert r.out.count("POST /v1/users/user123/sessions/sim-platform/segments  202") == 3
    assert "POST /v1/users/user123/sessions/sim-platform/finish  done" in r.out
    assert "→ notified  (a notification was generated and queued)" in r.out
    assert "│ You are a helpful mentor for Ana." in r.out
    assert f"notification: Mentor says  {body[:60]}" in r.out
    assert "delivery inbox: delivered" in r.out
    assert "● Mentor says  [proactive]" in r.out


async def test_through_a_platform_errors_are_clear(
    live_url: str, client: httpx.AsyncClient, talk: Path
) -> None:
    await make_world(client)
    base = ["simulate", "--platform", live_url, "-t", str(talk)]
    r = await nudge(*base, "--token", "wrong")
    assert r.code == 1 and "GET /v1/users/user123: 401" in r.err
    r = await nudge(*base, "--token", ADMIN, "--uid", "nobody")
    assert r.code == 1 and "404 user 'nobody' not found" in r.err
    r = await nudge(*base, "--token", ADMIN, "--app", "app_other")
    assert r.code == 1 and "has not installed ['app_other']" in r.err
