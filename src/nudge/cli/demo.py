"""``nudge demo``: the whole platform on the embedded defaults, end to end, in one command.

It starts the platform and the mentor example app (as its own process, exactly as a developer
runs it), plays a conversation through the platform with the player of ``nudge simulate
--platform``, sends a direct notification with the SDK, and prints what happened at each step
(docs/console.md). ``examples/`` is not an installed package: it is found next to the source tree
of the installed ``nudge`` (a clone's editable install), then in the current directory, or named
with ``--examples DIR``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

import nudge
from nudge.api.app import create_app
from nudge.cli.simulate import (
    PlatformPlayer,
    Play,
    SimulateError,
    parse_transcript,
    platform_call,
    say,
)
from nudge.config import Settings
from nudge.llm import LLMError
from nudge.platform import Platform
from nudge.sdk import AsyncNudgeClient

CONVERSATION = """\
Ana: I signed up for the city marathon in April.
Ben: Nice! How is the training going?
Ana: Slowly. I run twice a week, and my knee hurts after the long runs.
Ana: What do you think I should change?
"""
FACTS = [
    "Wants to run a marathon in under four hours",
    "Works night shifts as a nurse",
    "Had knee surgery two years ago",
]
SCOPES = ["user_name", "user_facts", "user_context"]
SMALL_MODEL_NOTE = (
    "Written by the embedded 135M model, which runs offline; for production use a stronger "
    "one (NUDGE_LLM_PROVIDER=openai, docs/proactive.md)."
)
STRONGER_MODEL = (
    "The embedded SmolLM2-135M runs anywhere but often writes nothing usable. For messages "
    "people can use, point Nudge at a stronger model, e.g. with Ollama:\n"
    "  export NUDGE_LLM_PROVIDER=openai\n"
    "  export NUDGE_LLM_BASE_URL=http://127.0.0.1:11434/v1\n"
    "  export NUDGE_LLM_MODEL=qwen2.5:7b-instruct\n"
    "  nudge demo\n"
    "or OpenAI: NUDGE_LLM_PROVIDER=openai NUDGE_LLM_API_KEY=sk-… NUDGE_LLM_MODEL=gpt-4o-mini "
    "(docs/proactive.md, section 5)."
)
DIRECT_MESSAGE = "Your long run is tomorrow at 7am: 18 km, easy pace."


class DemoError(Exception):
    """Something the person running the demo can fix; the message says how."""


@dataclass(frozen=True)
class DemoOptions:
    data_dir: Path = Path("./nudge-data")
    host: str = "127.0.0.1"
    port: int = 8000
    keep: bool = False
    examples: Path | None = None
    wait_s: float = 300.0  # for the model's answer on a slow machine


def demo_settings(data_dir: Path) -> Settings:
    """The embedded defaults (environment settings still apply), on SQLite in ``data_dir``."""
    data_dir.mkdir(parents=True, exist_ok=True)
    return Settings(
        data_dir=data_dir,
        database_url=f"sqlite+aiosqlite:///{data_dir.resolve()}/nudge.db",
        allow_private_webhooks=True,  # the mentor runs on this machine
        log_format="text",
        log_level="WARNING",
    )


def find_examples(given: Path | None) -> Path:
    """The repository's ``examples`` folder (see the module docstring)."""
    source_root = Path(nudge.__file__).resolve().parents[2]
    candidates = [given] if given else [source_root / "examples", Path.cwd() / "examples"]
    for folder in candidates:
        if folder is not None and (folder / "mentor" / "app.py").is_file():
            if folder.resolve().name != "examples":
                raise DemoError(f"--examples must be the repository's examples/ folder: {folder}")
            return folder.resolve()
    where = given or candidates[0]
    raise DemoError(
        f"the mentor example was not found at {where}/mentor/app.py: run the demo from a clone "
        "of the repository (make demo installs it in editable mode), or pass --examples "
        "<clone>/examples"
    )


def free_port(host: str, preferred: int) -> int:
    """``preferred`` if it is free, else any free port (0 also means any)."""
    for port in (preferred, 0) if preferred else (0,):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise DemoError(f"no free port on {host}")


class Server(uvicorn.Server):
    """uvicorn in this event loop; the demo handles Ctrl-C itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(app: Any, host: str, port: int) -> AsyncIterator[str]:
    server = Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise DemoError(f"the platform could not listen on {host}:{port}")
        await asyncio.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def mentor_process(
    examples: Path, port: int, webhook_secret: str, log_path: Path
) -> AsyncIterator[str]:
    """``python -m examples.mentor.app`` in the repository root; yields its URL once healthy."""
    log_file = log_path.open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "examples.mentor.app",
            "--port",
            str(port),
            "--log-level",
            "WARNING",
        ],
        cwd=examples.parent,
        env={**os.environ, "NUDGE_WEBHOOK_SECRET": webhook_secret},
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # Ctrl-C reaches the demo, which stops the mentor in order
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=1) as http:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise DemoError(f"the mentor example exited; its log is {log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url + "/healthz")).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise DemoError(f"the mentor example did not start; its log is {log_path}")
                await asyncio.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log_file.close()


async def load_model(platform: Platform, out: Console) -> None:
    """Load the embedded model now, with progress, instead of on the first notification."""
    load = getattr(platform.llm, "load", None)
    if load is None:
        say(out, ("model ", "dim"), f"{platform.settings.llm_provider} (nothing to load)")
        return
    name = Path(getattr(platform.llm, "model_path", "model")).name
    say(out, ("model ", "dim"), f"loading {name} (embedded llama.cpp)…")
    started = time.monotonic()
    with out.status(f"loading {name}…"):
        try:
            await load()
        except LLMError as exc:
            raise DemoError(str(exc)) from None
    say(out, ("model ", "dim"), f"{name} loaded in {time.monotonic() - started:.1f} s")


def mentor_manifest(port: int) -> dict[str, Any]:
    return {
        "name": "Mentor",
        "description": "Real-time mentoring advice (examples/mentor)",
        "capabilities": ["external_integration", "proactive_notification"],
        "external_integration": {
            "triggers_on": "transcript_processed",
            "webhook_url": f"http://127.0.0.1:{port}/webhook",
        },
        "proactive_notification": {"scopes": SCOPES},
    }


async def run_demo(options: DemoOptions, out: Console | None = None) -> dict[str, Any]:
    """Run the demo; returns the notifications it produced. Raises :class:`DemoError`."""
    out = out or Console(highlight=False)
    examples = find_examples(options.examples)
    settings = demo_settings(options.data_dir)
    say(out, ("nudge demo", "bold"), f" · SQLite at {settings.database_url.split('///')[-1]}")
    async with contextlib.AsyncExitStack() as stack:  # closed in reverse: mentor, server, platform
        with out.status("starting the platform…"):
            try:
                platform = await Platform.start(settings)
            except LLMError as exc:
                raise DemoError(str(exc)) from None
        stack.push_async_callback(platform.close)
        await load_model(platform, out)
        app = create_app(settings, platform=platform)
        port = free_port(options.host, options.port)
        base_url = await stack.enter_async_context(serving(app, options.host, port))
        say(out, ("platform ", "dim"), base_url)
        admin = {"Authorization": f"Bearer {platform.admin_token}"}
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=base_url, headers=admin, timeout=30)
        )
        mentor_port = free_port("127.0.0.1", 0)
        manifest = mentor_manifest(mentor_port)
        created = await platform_call(http, "POST", "/v1/apps", json={"manifest": manifest})
        log_path = Path(settings.data_dir) / "mentor.log"
        mentor_url = await stack.enter_async_context(
            mentor_process(examples, mentor_port, created["webhook_secret"], log_path)
        )
        say(out, ("app ", "dim"), f"Mentor {created['app_id']} at {mentor_url}/webhook")
        user = await platform_call(http, "POST", "/v1/users", json={"name": "Ana", "facts": FACTS})
        uid = user["uid"]
        install = f"/v1/users/{uid}/apps/{created['app_id']}"
        await platform_call(http, "POST", install, json={"scopes": SCOPES})
        say(out, ("install ", "dim"), f"Ana ({uid}) granted Mentor {', '.join(SCOPES)}")
        trace = await _conversation(http, uid, created["app_id"], options.wait_s, out)
        direct = await _direct(base_url, created, uid, out)
        note = trace.get("notification")
        if note:
            out.print(_card("proactive notification", note["title"], note["body"]))
            if settings.llm_provider == "embedded":
                say(out, ("    ", "dim"), (SMALL_MODEL_NOTE, "dim"))
        else:
            out.print(_not_sent(trace))
        out.print(_card("direct notification (SDK)", direct["title"], direct["body"]))
        console_url = f"{base_url}/console?token={platform.admin_token}&uid={uid}"
        if options.keep:
            say(out, ("console ", "bold"), console_url)
            say(
                out,
                ("mentor ", "dim"),
                f"{mentor_url}/webhook, signing secret ",
                created["webhook_secret"],
            )
            say(out, "Press Ctrl-C to stop.")
            await _until_interrupted()
        else:
            say(out, ("done. ", "green"), "`nudge demo --keep` stays up, with the web console.")
        result = {
            "uid": uid,
            "app_id": created["app_id"],
            "proactive": note,  # None when the model's answer was held or quiet
            "filled_prompt": trace["prompt"]["filled"],
            "direct": direct,
            "console": console_url,
        }
    return result


async def _conversation(
    http: httpx.AsyncClient, uid: str, app_id: str, wait_s: float, out: Console
) -> dict[str, Any]:
    """Play the conversation through the platform; the trace of the proactive notification."""
    out.rule("a conversation, through the platform", align="left")
    # Two batches a little over a second apart: the platform makes two webhook calls.
    play = Play(parse_transcript(CONVERSATION), f"demo-{int(time.time())}", 2, 1.2)
    player = PlatformPlayer(http, uid=uid, out=out)
    await player.watch([app_id])
    traces = await player.play(play, finish=True, wait_s=wait_s)
    # The notification, else the call whose model answer was held or quiet (the demo says why).
    for wanted in (("notified",), ("held", "quiet")):
        found = [t for t in traces if t["outcome"] in wanted]
        if found:
            return found[0]
    outcomes = [t["outcome"] for t in traces] or ["no call traced"]
    raise DemoError(
        f"no proactive notification came out ({', '.join(outcomes)}); the traces above say why"
    )


async def _direct(base_url: str, app: dict[str, str], uid: str, out: Console) -> dict[str, Any]:
    """A direct notification sent with the SDK, once every delivery is past the queue."""
    async with AsyncNudgeClient(base_url, app["app_id"], app["app_secret"]) as client:
        sent = await client.send_notification(uid, DIRECT_MESSAGE)
        say(out, ("→ ", "bold"), f"SDK send_notification: {sent.notification_id}")
        deadline = time.monotonic() + 30
        while True:
            status = await client.notification_status(sent.notification_id)
            states = [d.state for d in status.deliveries]
            if all(s not in ("queued", "retrying") for s in states) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
    say(out, "    deliveries: ", ", ".join(f"{d.provider} {d.state}" for d in status.deliveries))
    return {"id": sent.notification_id, "title": status.title, "body": status.body}


def _not_sent(trace: dict[str, Any]) -> Panel:
    """Why the model's answer was not sent, what it wrote, and how to use a stronger model."""
    llm = trace.get("llm") or {}
    why = "held: it failed the checks" if trace["outcome"] == "held" else "the model chose quiet"
    text = Text.assemble(
        ("No proactive notification was sent ", "bold"),
        f"({why}: {llm.get('reason') or trace.get('error') or '?'}).\n",
        ("The model wrote: ", "dim"),
        (llm.get("raw") or "(nothing)").strip()[:300],
        "\n\n",
        STRONGER_MODEL,
    )
    return Panel(
        text, title="proactive notification", title_align="left", border_style="yellow", width=72
    )


def _card(label: str, title: str, body: str) -> Panel:
    text = Text.assemble((title, "bold"), "\n", body)
    return Panel(text, title=label, title_align="left", border_style="magenta", width=72)


async def _until_interrupted() -> None:
    """Wait for Ctrl-C or SIGTERM. The handlers stay until the loop closes, so a second Ctrl-C
    during shutdown does not interrupt the cleanup."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main(options: DemoOptions) -> int:
    out = Console(highlight=False)
    try:
        asyncio.run(run_demo(options, out))
    except (DemoError, SimulateError) as exc:
        out.print(Text(f"error: {exc}", style="red"))
        return 1
    return 0
