"""Proactive pipeline under load: live sessions -> app webhooks -> fake LLM -> inbox.

    .venv/bin/python bench/proactive.py [--sessions 200] [--seconds 40] [--warmup 10] [--apps 3]
        [--llm-latency 0.2] [--interval 30] [--database-url URL]

Starts `nudge serve` (one process, SQLite by default, fake LLM with a fixed latency) and a
separate process with the app webhook servers (minimal HTTP servers that, like the seed docs'
example, answer with a proactive prompt when the segment says "what do you think", one segment in
ten, and with ``{}`` otherwise). Each session posts one segment a second. Every app is installed
by every user, so each segment means one webhook call per app; a prompt runs the pipeline (scope
checks, the 30 s claim; when the claim is won: context, filling, LLM, delivery to the inbox).

The first ``--warmup`` seconds (sessions starting, the first wave of claims) are not measured.
Prints segments/s, the server's CPU time per segment and, from the platform's own traces:
- dispatch latency: segment ingested -> webhook call started;
- added latency: segment ingested -> inbox delivery, minus the webhook's and the LLM's time
  (what the platform itself adds). Target (issue 4): p99 under 20 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import _read_response, cpu_seconds, free_port, read_message, start_server  # noqa: E402

ADMIN = "bench-admin"
TRIGGER = b"what do you think"
TRIGGER_EVERY = 10  # one segment in ten asks for advice
PROMPT = "Give {{user_name}} one short tip about this: {{user_context}}"
ANSWER = json.dumps(
    {"notification": {"prompt": PROMPT, "params": ["user_name", "user_context"]}}
).encode()


# --- the app webhook servers (run in their own process) -----------------------------------


def _http_200(body: bytes) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


PROMPT_ANSWER, EMPTY_ANSWER = _http_200(ANSWER), _http_200(b"{}")


async def _serve_app(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Like the seed docs' example: a prompt when the transcript asks for advice, else nothing."""
    try:
        while True:
            _, body = await read_message(reader)
            writer.write(PROMPT_ANSWER if TRIGGER in body.lower() else EMPTY_ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def serve_apps(ports: list[int]) -> None:
    servers = [await asyncio.start_server(_serve_app, "127.0.0.1", p) for p in ports]
    print("apps ready", flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


# --- the load --------------------------------------------------------------------------------


def setup(url: str, users: int, app_ports: list[int]) -> list[str]:
    app_ids = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as c:
        for n, port in enumerate(app_ports):
            manifest = {
                "name": f"Bench App {n}",
                "capabilities": ["external_integration", "proactive_notification"],
                "external_integration": {
                    "triggers_on": "transcript_processed",
                    "webhook_url": f"http://127.0.0.1:{port}/webhook",
                },
                "proactive_notification": {"scopes": ["user_name", "user_context"]},
            }
            r = c.post("/v1/apps", json={"manifest": manifest})
            r.raise_for_status()
            app_ids.append(r.json()["app_id"])
        for i in range(users):
            c.post("/v1/users", json={"uid": f"u{i}", "name": f"User {i}"}).raise_for_status()
            for app_id in app_ids:
                c.post(
                    f"/v1/users/u{i}/apps/{app_id}", json={"scopes": ["user_name", "user_context"]}
                ).raise_for_status()
    return app_ids


@dataclass
class Load:
    """The sessions' schedule and what they saw after the warm-up."""

    start: float  # time.monotonic() when the first segment is due
    warmup: float
    seconds: float  # measured, after the warm-up
    latencies: list[float] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)


def segment_body(n: int, k: int) -> bytes:
    said = "what do you think about the plan?" if (k + n) % TRIGGER_EVERY == 0 else "we went on."
    segment = {"text": f"Segment {k} of session {n}: {said}", "speaker": "SPEAKER_01"}
    return json.dumps({"segments": [segment | {"is_user": k % 2 == 0}]}).encode()


async def session(port: int, n: int, sessions: int, load: Load) -> None:
    """One live session: a segment a second, on its own keep-alive connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    offset = n / sessions  # spread the sessions over each second
    k = 0
    while offset + k < load.warmup + load.seconds:
        await asyncio.sleep(max(load.start + offset + k - time.monotonic(), 0))
        body = segment_body(n, k)
        head = (
            f"POST /v1/users/u{n}/sessions/bench-{n}/segments HTTP/1.1\r\n"
            f"host: 127.0.0.1\r\nauthorization: Bearer {ADMIN}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode()
        t0 = time.perf_counter()
        writer.write(head + body)
        status = await _read_response(reader)
        if offset + k >= load.warmup:
            load.latencies.append(time.perf_counter() - t0)
            load.statuses.append(status)
        k += 1
    writer.close()


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    data = sorted(values)
    return data[min(len(data) - 1, int(p / 100 * len(data)))] * 1000


def all_traces(url: str, app_id: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60) as c:
        while True:
            params: dict[str, Any] = {"limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = c.get(f"/v1/apps/{app_id}/traces", params=params).json()
            out += page["items"]
            cursor = page["next_cursor"]
            if not cursor:
                return out


def report(traces: list[dict[str, Any]], since: float) -> dict[str, Any]:
    """Latencies of the calls whose segments were ingested after ``since`` (wall clock)."""
    dispatch: list[float] = []
    added: list[float] = []
    pipeline: list[float] = []
    delivery: list[float] = []
    outcomes: dict[str, int] = {}
    for t in traces:
        timing = t.get("timing") or {}
        ingested = timing.get("segments_first_at")
        if ingested is not None and ingested >= since:
            outcomes[t["outcome"]] = outcomes.get(t["outcome"], 0) + 1
        if ingested is None or ingested < since or "sent_at" not in timing:
            continue
        dispatch.append(timing["sent_at"] - ingested)
        inbox = [d for d in t["deliveries"] if d["provider"] == "inbox" and d["delivered_at"]]
        # A duplicate (same text within the dedupe window) points at an earlier delivery.
        duplicate = (t.get("notification") or {}).get("duplicate")
        if t["outcome"] == "notified" and inbox and not duplicate:
            total = inbox[0]["delivered_at"] - ingested
            added.append(total - timing.get("webhook_s", 0) - timing.get("llm_s", 0))
            pipeline.append(
                timing["accepted_at"] - timing["sent_at"] - timing["webhook_s"] - timing["llm_s"]
            )
            delivery.append(inbox[0]["delivered_at"] - timing["accepted_at"])
    return {
        "dispatch": dispatch,
        "added": added,
        "pipeline": pipeline,
        "delivery": delivery,
        "outcomes": outcomes,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=200)
    # 40 s: with the 30 s interval and a trigger every 10 s, a (user, app) wins every 40 s.
    parser.add_argument("--seconds", type=float, default=40.0, help="measured (after warm-up)")
    parser.add_argument("--warmup", type=float, default=10.0, help="not measured (s)")
    parser.add_argument("--apps", type=int, default=3)
    parser.add_argument("--llm-latency", type=float, default=0.2)
    parser.add_argument("--interval", type=float, default=30.0, help="proactive interval (s)")
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--serve-apps", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_apps:
        await serve_apps([int(p) for p in args.serve_apps.split(",")])
        return

    import subprocess

    with tempfile.TemporaryDirectory(prefix="nudge-bench-") as tmp:
        data = Path(tmp)
        app_ports = [free_port() for _ in range(args.apps)]
        apps_proc = subprocess.Popen(
            [sys.executable, __file__, "--serve-apps", ",".join(map(str, app_ports))],
            stdout=subprocess.PIPE,
        )
        assert apps_proc.stdout is not None
        apps_proc.stdout.readline()
        port = free_port()
        env = {
            "NUDGE_ADMIN_TOKEN": ADMIN,
            "NUDGE_DATA_DIR": str(data),
            "NUDGE_DATABASE_URL": args.database_url or f"sqlite+aiosqlite:///{data}/nudge.db",
            "NUDGE_LOG_LEVEL": "WARNING",
            "NUDGE_LLM_PROVIDER": "fake",
            "NUDGE_LLM_FAKE_LATENCY_S": str(args.llm_latency),
            "NUDGE_ALLOW_PRIVATE_WEBHOOKS": "1",
            "NUDGE_PROACTIVE_INTERVAL_S": str(args.interval),
        }
        proc = start_server(data, env, port, [])
        try:
            url = f"http://127.0.0.1:{port}"
            print(f"setting up {args.sessions} users and {args.apps} apps …", flush=True)
            app_ids = setup(url, args.sessions, app_ports)
            print(
                f"running {args.sessions} sessions × 1 segment/s × {args.apps} apps for "
                f"{args.seconds:g} s (fake LLM {args.llm_latency * 1000:.0f} ms, "
                f"proactive interval {args.interval:g} s) …",
                flush=True,
            )
            load = Load(time.monotonic() + 1.0, args.warmup, args.seconds)
            since = time.time() + 1.0 + args.warmup
            sessions = [
                asyncio.create_task(session(port, n, args.sessions, load))
                for n in range(args.sessions)
            ]
            await asyncio.sleep(load.start + load.warmup - time.monotonic())
            cpu_before = cpu_seconds([proc.pid])
            await asyncio.gather(*sessions)
            cpu = cpu_seconds([proc.pid]) - cpu_before
            await asyncio.sleep(3.0)  # let the last calls, generations and deliveries finish
            traces = [t for app_id in app_ids for t in all_traces(url, app_id)]
        finally:
            proc.terminate()
            proc.wait(30)
            apps_proc.terminate()
            apps_proc.wait(10)

    accepted, elapsed = load.statuses.count(202), args.seconds
    stats = report(traces, since)
    calls = sum(stats["outcomes"].values())
    print()
    print(
        f"segments accepted    {accepted} of {len(load.statuses)} "
        f"({accepted / elapsed:.0f} segments/s, after a {args.warmup:g} s warm-up)"
    )
    print(
        f"server CPU           {cpu:.1f} s ({cpu / elapsed * 100:.0f} % of a core, "
        f"{cpu / max(accepted, 1) * 1000:.2f} ms per segment)"
    )
    print(
        f"POST latency         p50 {pct(load.latencies, 50):6.2f} ms   "
        f"p99 {pct(load.latencies, 99):6.2f} ms"
    )
    print(f"webhook calls        {calls} ({calls / elapsed:.0f}/s)   {stats['outcomes']}")
    d, a = stats["dispatch"], stats["added"]
    print(
        f"dispatch latency     p50 {pct(d, 50):6.2f} ms   p99 {pct(d, 99):6.2f} ms   "
        "(ingest -> webhook call)"
    )
    p, q = stats["pipeline"], stats["delivery"]
    print(
        f"  pipeline           p50 {pct(p, 50):6.2f} ms   p99 {pct(p, 99):6.2f} ms   "
        "(answer received -> notification accepted, minus LLM)"
    )
    print(
        f"  delivery           p50 {pct(q, 50):6.2f} ms   p99 {pct(q, 99):6.2f} ms   "
        "(accepted -> delivered to the inbox)"
    )
    print(
        f"added latency        p50 {pct(a, 50):6.2f} ms   p99 {pct(a, 99):6.2f} ms   "
        f"({len(a)} notifications: ingest -> inbox, minus webhook and LLM time; "
        "target p99 < 20 ms)"
    )


if __name__ == "__main__":
    asyncio.run(main())
