"""``nudge simulate``: play a conversation to an app and show what happens at every step.

``--webhook URL`` needs no platform: each batch is one call by the platform's own webhook client,
as Omi's backend makes it, and the answer goes through the platform's own parser, decisions
(:func:`nudge.proactive.plan.plan`) and filler. ``--platform URL`` plays it through a running
platform and reads back what its dispatcher did from the app traces and the inbox. Transcript
formats and options: docs/console.md."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from nudge.api.errors import describe_validation
from nudge.config import Settings
from nudge.core.manifest import SCOPES
from nudge.ids import new_webhook_secret
from nudge.net.webhooks import WebhookClient, WebhookTarget
from nudge.proactive.context import render_conversations
from nudge.proactive.conversation import new_conversation_id, segment_json
from nudge.proactive.filler import fill
from nudge.proactive.plan import parse_answer, plan
from nudge.proactive.segments import SegmentIn, check_session_id, derive_summary
from nudge.proactive.traces import OUTCOMES
from nudge.sdk.client import error_detail

SEGMENTS = TypeAdapter(list[SegmentIn])
LINE = re.compile(r"^\s*([^:]{1,64}?)\s*:\s*(\S.*?)\s*$")
MAX_BATCH = 500  # the platform takes at most 500 segments per POST
PENDING = ("queued", "retrying")
OUTCOME_COLOURS = {"notified": "green", "message_sent": "green", "no_action": "dim"}


class SimulateError(Exception):
    """Bad input or an unreachable target; the message says what to fix."""


# --- Transcripts ---------------------------------------------------------------------------


@dataclass
class Transcript:
    segments: list[SegmentIn]
    names: dict[str, str] = field(default_factory=dict)  # "SPEAKER_00" -> the name in the file

    def who(self, segment: SegmentIn) -> str:
        name = self.names.get(segment.speaker, segment.speaker)
        return f"{name} (user)" if segment.is_user else name


def parse_transcript(text: str, *, me: str | None = None) -> Transcript:
    """``Speaker: text`` lines or JSON segments (formats: docs/console.md)."""
    stripped = text.lstrip("\ufeff \t\r\n")
    if stripped[:1] in ("[", "{"):
        return _json_transcript(stripped)
    return _line_transcript(text, me)


def _json_transcript(text: str) -> Transcript:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SimulateError(
            f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None
    if isinstance(data, dict):
        data = data.get("segments", data.get("transcript_segments"))
    if not isinstance(data, list) or not data:
        raise SimulateError(
            'expected a JSON list of segments, {"segments": [...]} or '
            '{"transcript_segments": [...]}, with at least one segment'
        )
    try:
        segments = SEGMENTS.validate_python(data)
    except ValidationError as exc:
        raise SimulateError(f"bad segment: {describe_validation(list(exc.errors()))}") from None
    return Transcript(segments)


def _line_transcript(text: str, me: str | None) -> Transcript:
    rows: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = LINE.match(line)
        if match is None:
            raise SimulateError(
                f"line {number}: expected 'Speaker: text', got {line.strip()[:60]!r}"
            )
        rows.append((match.group(1), match.group(2)))
    if not rows:
        raise SimulateError("the transcript is empty: write one 'Speaker: text' line per segment")
    speakers = list(dict.fromkeys(name for name, _ in rows))
    me = me or speakers[0]
    if me not in speakers:
        raise SimulateError(f"--me {me!r} is not a speaker here; the speakers are {speakers}")
    clock, segments = 0.0, []
    for name, said in rows:
        n = speakers.index(name)
        duration = round(max(1.0, 0.4 * len(said.split())), 1)  # about 150 words a minute
        segments.append(
            SegmentIn(
                text=said,
                speaker=f"SPEAKER_{n:02d}",
                speaker_id=n,
                is_user=name == me,
                start=round(clock, 1),
                end=round(clock + duration, 1),
            )
        )
        clock += duration + 0.3
    names = {f"SPEAKER_{n:02d}": name for n, name in enumerate(speakers)}
    return Transcript(segments, names)


def load_transcript(path: Path, *, me: str | None = None) -> Transcript:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SimulateError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SimulateError(f"{path} is not UTF-8 text") from None
    try:
        return parse_transcript(text, me=me)
    except SimulateError as exc:
        raise SimulateError(f"{path}: {exc}") from None


def wire_segment(segment: SegmentIn) -> dict[str, Any]:
    """A segment as the platform sends (and stores) it."""
    return segment_json(segment.model_copy(update={"speaker_id": segment.speaker_number()}))


def check_url(url: str, option: str, example: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SimulateError(f"{option} must be an http(s) URL such as {example}, not {url!r}")


@dataclass(frozen=True)
class Play:
    """A transcript and how to play it: ``batch`` segments per call, ``interval_s`` apart."""

    transcript: Transcript
    session_id: str
    batch: int = 1
    interval_s: float = 0.0

    def __post_init__(self) -> None:
        if not 1 <= self.batch <= MAX_BATCH:
            raise SimulateError(f"--batch must be 1 to {MAX_BATCH} segments per call")
        if self.interval_s < 0:
            raise SimulateError("--interval must be 0 or more seconds")
        check_session_id(self.session_id)

    async def calls(self) -> AsyncIterator[tuple[int, list[SegmentIn]]]:
        """Numbered batches, paced."""
        segments = self.transcript.segments
        for number, start in enumerate(range(0, len(segments), self.batch), 1):
            if number > 1 and self.interval_s:
                await asyncio.sleep(self.interval_s)
            yield number, segments[start : start + self.batch]


def new_session_id() -> str:
    return f"sim-{int(time.time() * 1000):x}"


# --- Printing ------------------------------------------------------------------------------


def say(out: Console, *parts: str | tuple[str, str]) -> None:
    """One line; user data is never read as markup."""
    out.print(Text.assemble(*parts), highlight=False, soft_wrap=True)


def show_prompt(out: Console, title: str, prompt: str) -> None:
    out.print(Panel(Text(prompt), title=title, title_align="left", border_style="cyan"))


def show_segments(out: Console, transcript: Transcript, segments: Sequence[SegmentIn]) -> None:
    for s in segments:
        say(out, "    ", (f"{transcript.who(s)}: ", "bold"), s.text)


def show_scopes(out: Console, decisions: dict[str, str]) -> None:
    for name, why in decisions.items():
        say(out, f"    {name}: ", (why, "green" if why == "filled" else "yellow"))


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _compact(body: str, limit: int = 600) -> str:
    body = body.strip()
    return body if len(body) <= limit else body[:limit] + f"… ({len(body)} chars)"


# --- Playing to a webhook ------------------------------------------------------------------


@dataclass(frozen=True)
class SampleUser:
    """The user data the platform would fill in; ``granted`` are the scopes granted at install."""

    uid: str = "user123"
    name: str = "Ana"
    facts: tuple[str, ...] = ()
    chat: tuple[str, ...] = ()
    granted: tuple[str, ...] = SCOPES
    past: tuple[str, ...] = ()  # past conversations, as {{user_context}} would bring them

    def values(self) -> dict[str, str]:
        """As the platform's context builder writes them (``{{user_context}}``: past
        conversations, never the live transcript)."""
        now = time.time()
        past = []
        for i, text in enumerate(self.past):
            title, overview = derive_summary([SegmentIn(text=text)])
            past.append(
                {
                    "title": title,
                    "overview": overview,
                    "category": "other",
                    "action_items": [],
                    "events": [],
                    "created_at": now - 86_400 * (i + 1),
                    "snippet": "",
                }
            )
        return {
            "user_name": self.name,
            "user_facts": "; ".join(f.strip().rstrip(";") for f in self.facts),
            "user_context": render_conversations(past),
            "user_chat": "\n".join(self.chat),
        }


@dataclass
class CallReport:
    status: int | None
    answer: str  # none | proactive | message | invalid | failed
    error: str | None = None
    message: str | None = None


class WebhookPlayer:
    """Plays a transcript to one webhook URL, one signed call per batch."""

    def __init__(
        self, settings: Settings, *, url: str, secret: str, user: SampleUser, out: Console
    ) -> None:
        self.client = WebhookClient(settings)
        self.target = WebhookTarget("simulated-app", secret)
        self.url, self.user, self.settings, self.out = url, user, settings, out
        self.conversation_id = new_conversation_id()
        self.last_proactive_at: float | None = None

    async def play(self, play: Play) -> list[CallReport]:
        reports: list[CallReport] = []
        try:
            async for number, chunk in play.calls():
                reports.append(await self.call(number, play, chunk))
                if reports[-1].status is None and reports[-1].answer == "failed":
                    raise SimulateError(
                        f"{self.url} did not answer ({reports[-1].error}): is the app running?"
                    )
        finally:
            await self.client.aclose()
        return reports

    async def call(self, number: int, play: Play, chunk: list[SegmentIn]) -> CallReport:
        # As Omi's backend (and the platform): the session id is the uid.
        params = {"session_id": self.user.uid, "uid": self.user.uid}
        payload = {
            "session_id": self.user.uid,
            "conversation_id": self.conversation_id,
            "segments": [wire_segment(s) for s in chunk],
        }
        query = "&".join(f"{k}={v}" for k, v in params.items())
        self.out.rule(f"call {number}", align="left", style="dim")
        say(
            self.out,
            ("→ POST ", "bold"),
            f"{self.url}?{query}",
            f"  ({plural(len(chunk), 'segment')})",
        )
        show_segments(self.out, play.transcript, chunk)
        result = await self.client.send(
            self.target, "POST", self.url, params=params, payload=payload
        )
        report = CallReport(result.status, "failed", result.error)
        if not result.ok:
            say(self.out, ("← ", "red"), (result.error or "failed", "red"))
            return report
        body = result.body.decode("utf-8", errors="replace")
        say(
            self.out,
            ("← ", "green"),
            (f"{result.status}", "green"),
            f" in {_ms(result.seconds)}  ",
            _compact(body) or "(empty body)",
        )
        self.answer(report, result.body, chunk[-1].end)
        return report

    def answer(self, report: CallReport, body: bytes, clock: float) -> None:
        """What the platform would do with this answer (:func:`nudge.proactive.plan.plan`), for
        an app whose manifest asks every scope (it is unknown here: the grants decide)."""
        answer = parse_answer(body)
        decided = plan(
            answer,
            capabilities=("external_integration", "proactive_notification"),
            manifest_scopes=SCOPES,
            granted=self.user.granted,
            kind="transcript_processed",
            message_max_chars=self.settings.message_max_chars,
            interval_s=self.settings.proactive_interval_s,
            last_sent_at=self.last_proactive_at,
            now=clock,
        )
        report.answer, step, said = decided.kind, decided.proactive, decided.message
        if decided.kind == "none":
            say(self.out, ("= no notification asked", "dim"))
            return
        refused = decided.refused or (step.refused if step else None)
        if refused is not None and refused.outcome == "invalid_answer":
            report.answer, report.error = "invalid", refused.reason
            say(self.out, ("= invalid answer: ", "red"), refused.reason or "")
        elif step is not None:
            say(
                self.out, ("= proactive notification asked", "magenta"), f"  params {answer.params}"
            )
            show_scopes(self.out, step.scopes.decisions)
            if step.refused is not None:
                why = f"the platform would send nothing: {step.refused.reason}"
                say(self.out, ("    rate limit: ", "yellow"), why)
            else:
                self.last_proactive_at = clock
            values = {k: v for k, v in self.user.values().items() if k in step.scopes.effective}
            filled = fill(answer.prompt or "", values, step.scopes.reasons)
            show_prompt(self.out, "filled prompt (what the platform's LLM gets)", filled.text)
        if said is not None and said.refused is not None:
            say(self.out, ("= not sent: ", "yellow"), said.refused.reason or "")
        elif said is not None:
            report.message = said.text
            say(self.out, ("= message notification: ", "magenta"), said.text)


def summarize_calls(out: Console, reports: list[CallReport]) -> bool:
    """Print the totals; True when every call was answered with a 2xx."""
    failed = sum(r.answer == "failed" for r in reports)
    asked = sum(r.answer == "proactive" for r in reports)
    messages = sum(r.message is not None for r in reports)
    out.rule(style="dim")
    say(
        out,
        f"{plural(len(reports), 'call')}, {len(reports) - failed} answered 2xx, "
        f"{plural(asked, 'proactive notification')} asked, "
        f"{plural(messages, 'message notification')}",
    )
    return failed == 0


# --- Playing through a platform ------------------------------------------------------------


async def platform_call(http: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    """One platform API call; its JSON, or a :class:`SimulateError` with the platform's detail."""
    try:
        response = await http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise SimulateError(
            f"cannot reach the platform at {http.base_url} ({type(exc).__name__}): "
            "is `nudge serve` running there?"
        ) from None
    if response.is_success:
        return response.json() if response.content else None
    raise SimulateError(f"{method} {path}: {response.status_code} {error_detail(response)}")


class PlatformPlayer:
    """Posts a transcript to a running platform and reads back its traces and the inbox."""

    def __init__(self, http: httpx.AsyncClient, *, uid: str, out: Console) -> None:
        self.http, self.uid, self.out = http, uid, out
        self.apps: dict[str, dict[str, Any]] = {}  # app_id -> its manifest (apps we can trace)

    async def api(self, method: str, path: str, **kwargs: Any) -> Any:
        return await platform_call(self.http, method, path, **kwargs)

    async def watch(self, app_ids: Sequence[str]) -> None:
        """Which installed apps to follow (all when ``app_ids`` is empty)."""
        user = await self.api("GET", f"/v1/users/{self.uid}")
        installed = [a["app_id"] for a in user["apps"]]
        missing = [a for a in app_ids if a not in installed]
        if missing:
            raise SimulateError(
                f"user {self.uid!r} has not installed {missing}: install it first "
                f"(POST /v1/users/{self.uid}/apps/<app_id> or `nudge users install`)"
            )
        for app_id in app_ids or installed:
            app = await self.api("GET", f"/v1/apps/{app_id}")
            self.apps[app_id] = app
        names = ", ".join(f"{a['name']} ({i})" for i, a in self.apps.items()) or "none"
        say(self.out, ("user ", "dim"), f"{user['name']} ({self.uid})", ("  apps ", "dim"), names)

    async def play(self, play: Play, *, finish: bool, wait_s: float) -> list[dict[str, Any]]:
        """Play it, print what the platform did and the user's new notifications; the traces."""
        started = time.time()
        conversation_id = None  # the conversation the platform opened for the segments
        base = f"/v1/users/{self.uid}/sessions/{play.session_id}"
        async for _, chunk in play.calls():
            stored = await self.api(
                "POST", f"{base}/segments", json={"segments": [wire_segment(s) for s in chunk]}
            )
            conversation_id = conversation_id or stored["conversation_id"]
            say(self.out, ("→ ", "bold"), f"POST {base}/segments", ("  202", "green"))
            show_segments(self.out, play.transcript, chunk)
        if finish:
            await self.api("POST", f"{base}/finish")
            say(self.out, ("→ ", "bold"), f"POST {base}/finish", ("  done", "green"))
        assert conversation_id is not None  # a transcript has at least one segment
        traces = await self.follow(conversation_id, len(play.transcript.segments), finish, wait_s)
        await self.show_inbox(started)
        return traces

    def _complete(
        self, app_id: str, traces: list[dict[str, Any]], sent: int, finished: bool
    ) -> bool:
        manifest = self.apps[app_id].get("manifest") or {}
        integration = manifest.get("external_integration") or {}
        trigger = integration.get("triggers_on")
        if "external_integration" not in manifest.get("capabilities", []) or not integration:
            return True  # no webhook: nothing will be called
        if trigger == "transcript_processed":
            traced = sum(
                (t.get("request") or {}).get("segments", 0)
                for t in traces
                if t["kind"] == "transcript_processed"
            )
            return traced >= sent
        if trigger == "memory_creation":
            return not finished or any(t["kind"] == "memory_creation" for t in traces)
        return True

    async def follow(
        self, conversation_id: str, sent: int, finished: bool, wait_s: float
    ) -> list[dict[str, Any]]:
        """Print each app's traces for this conversation as they appear, until every segment
        (and the finished conversation) has been traced, or ``wait_s`` passes."""
        seen: dict[str, dict[str, Any]] = {}
        done: set[str] = set()
        deadline = time.monotonic() + wait_s
        with self.out.status("waiting for the platform's webhook calls…"):
            while True:
                for app_id in self.apps:
                    if app_id in done:
                        continue
                    page = await self.api(
                        "GET",
                        f"/v1/apps/{app_id}/traces",
                        params={"conversation_id": conversation_id, "limit": 200},
                    )
                    mine = list(reversed(page["items"]))  # oldest first
                    for trace in mine:
                        if trace["id"] not in seen:
                            seen[trace["id"]] = trace
                            if trace["notification_id"]:
                                trace = await self.settled(trace)
                                seen[trace["id"]] = trace
                            show_trace(self.out, trace, self.apps[app_id]["name"])
                    if self._complete(app_id, mine, sent, finished):
                        done.add(app_id)
                if len(done) == len(self.apps):
                    break
                if time.monotonic() > deadline:
                    waiting = ", ".join(self.apps[a]["name"] for a in self.apps if a not in done)
                    say(
                        self.out,
                        ("still waiting ", "yellow"),
                        f"on {waiting} after {wait_s:g} s; "
                        "see GET /v1/apps/<app_id>/traces for what comes later",
                    )
                    break
                await asyncio.sleep(0.25)
        return sorted(seen.values(), key=lambda t: t["created_at"])

    async def settled(self, trace: dict[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
        """The trace again once its deliveries are past the queue (or after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while any(d["state"] in PENDING for d in trace["deliveries"]):
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
            trace = await self.api("GET", f"/v1/apps/{trace['app_id']}/traces/{trace['id']}")
        return trace

    async def show_inbox(self, started: float) -> None:
        page = await self.api("GET", f"/v1/users/{self.uid}/notifications", params={"limit": 50})
        items = [n for n in page["items"] if n["created_at"] >= started - 1]
        self.out.rule("the user's inbox", align="left", style="dim")
        if not items:
            say(self.out, ("no new notifications", "dim"))
        for n in reversed(items):
            say(self.out, ("● ", "magenta"), (n["title"], "bold"), f"  [{n['kind']}]")
            say(self.out, "  ", n["body"])


def show_trace(out: Console, trace: dict[str, Any], app_name: str) -> None:
    """One webhook call as the platform traced it: request, answer, every decision, deliveries."""
    outcome = trace.get("outcome") or "?"
    request = trace.get("request") or {}
    colour = OUTCOME_COLOURS.get(outcome, "yellow")
    out.rule(f"{app_name} · {trace['kind']}", align="left", style="dim")
    say(
        out,
        ("call ", "dim"),
        f"{plural(request.get('segments', 0), 'segment')} → ",
        (outcome, colour),
        f"  ({OUTCOMES.get(outcome, '')})",
    )
    if trace.get("error"):
        say(out, ("    error: ", "red"), trace["error"])
    response = trace.get("response") or {}
    if response.get("status") is not None:
        say(
            out,
            "    answer: ",
            f"{response['status']} in {_ms(response.get('seconds') or 0)}  ",
            _compact(response.get("body") or "") or "(empty body)",
        )
    show_scopes(out, (trace.get("scopes") or {}).get("decisions") or {})
    limit = trace.get("rate_limit")
    if limit:
        say(
            out,
            "    rate limit: ",
            f"{limit['decision']} ({limit['backend']}, one per {limit['interval_s']:g} s)",
        )
    filled = (trace.get("prompt") or {}).get("filled")
    if filled:
        show_prompt(out, "filled prompt", filled)
    llm = trace.get("llm")
    if llm:
        say(
            out,
            "    LLM ",
            (f"{llm['provider']} {llm['model']}", "dim"),
            f" in {_ms(llm['seconds'])}: ",
            llm["output"] or "(nothing)",
        )
        if llm.get("raw") and llm["raw"].strip().strip('"') != llm["output"]:
            say(out, ("    model wrote: ", "dim"), _compact(llm["raw"]))
        if llm.get("decision") and llm["decision"] != "send":
            say(out, "    decision: ", (f"{llm['decision']}: {llm.get('reason', '')}", "yellow"))
    note = trace.get("notification")
    if note:
        say(out, ("    notification: ", "magenta"), (note["title"], "bold"), "  ", note["body"])
    for d in trace.get("deliveries") or []:
        state = d["state"]
        say(
            out,
            f"    delivery {d['provider']}: ",
            (state, "green" if state == "delivered" else "yellow"),
            f"  {d['last_error']}" if d.get("last_error") else "",
        )


# --- Entry points (the CLI and ``nudge demo``) ------------------------------------------------


async def run_webhook(
    play: Play, out: Console, *, url: str, secret: str | None, user: SampleUser
) -> bool:
    """Play to a webhook; True when every call was answered with a 2xx."""
    check_url(url, "--webhook", "http://127.0.0.1:8001/webhook")
    if not secret:
        secret = new_webhook_secret()
        say(
            out,
            ("no --secret (or NUDGE_WEBHOOK_SECRET): ", "yellow"),
            f"signing with a generated one, {secret}. An app that checks signatures answers 401; "
            "start it with NUDGE_WEBHOOK_SECRET set to this, or pass the app's own secret",
        )
    if not secret.startswith("whsec_") or len(secret) < 10:
        raise SimulateError(
            "--secret or NUDGE_WEBHOOK_SECRET: the app's webhook_secret starts with whsec_ "
            "(shown once when the app was created)"
        )
    bad = [s for s in user.granted if s not in SCOPES]
    if bad:
        raise SimulateError(f"unknown scopes {bad} in --grant; choose from {list(SCOPES)}")
    # The developer's own app usually runs on this machine: private targets are allowed here.
    settings = Settings(allow_private_webhooks=True)
    player = WebhookPlayer(settings, url=url, secret=secret, user=user, out=out)
    return summarize_calls(out, await player.play(play))


async def run_platform(
    play: Play,
    out: Console,
    *,
    url: str,
    token: str | None,
    uid: str,
    apps: Sequence[str],
    finish: bool,
    wait_s: float,
) -> None:
    """Play through a running platform and report what it did."""
    check_url(url, "--platform", "http://127.0.0.1:8000")
    if not token:
        raise SimulateError(
            "set --token or NUDGE_ADMIN_TOKEN to the platform's admin token (printed on its first "
            "start and kept in nudge-data/admin-token)"
        )
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=30) as http:
        player = PlatformPlayer(http, uid=uid, out=out)
        await player.watch(apps)
        await player.play(play, finish=finish, wait_s=wait_s)
