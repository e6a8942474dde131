"""The SDK's own costs, in one run (prints numbers; no targets are asserted).

    .venv/bin/python bench/sdk.py [--calls 2000] [--sessions 5000]

1. Webhook kit: signed realtime calls per second through the kit in-process (signature check,
   accumulation, phrase matching, answer), over more sessions than the store keeps, and the
   number of sessions held at the end (bounded by ``max_sessions``).
2. Client: sequential ``send_notification`` latency against a real ``nudge serve`` with
   ``AsyncNudgeClient`` vs. the same request made with bare httpx (the plan/driver overhead).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _load import free_port, start_server  # noqa: E402

from nudge.sdk import AsyncNudgeClient  # noqa: E402
from nudge.sdk.webhook import (  # noqa: E402
    Answer,
    SessionStore,
    TranscriptEvent,
    WebhookKit,
    proactive,
    signature_headers,
)

ADMIN = "bench-admin"


async def bench_kit(calls: int, sessions: int) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(24)).decode()
    store = SessionStore(max_sessions=1_000)

    async def on_loop(event: TranscriptEvent) -> Answer | None:
        return proactive("Advise {{user_name}}") if event.matches(["any advice"]) else None

    kit = WebhookKit(secret, on_transcript=on_loop, sessions=store)
    requests = []
    for i in range(calls):
        sid = f"s{i % sessions}"
        body = json.dumps(
            {
                "session_id": sid,
                "segments": [
                    {
                        "text": f"line {i} any advice" if i % 10 == 0 else f"line {i}",
                        "speaker": "SPEAKER_00",
                        "speaker_id": 0,
                        "is_user": True,
                        "start": i,
                        "end": i + 1,
                    }
                ],
            }
        ).encode()
        requests.append((sid, body, signature_headers(secret, body)))
    transport = httpx.ASGITransport(app=kit.app())
    async with httpx.AsyncClient(transport=transport, base_url="http://kit") as http:
        start = time.perf_counter()
        answered = 0
        for sid, body, headers in requests:
            r = await http.post(
                "/webhook", params={"session_id": sid, "uid": "u1"}, content=body, headers=headers
            )
            answered += "notification" in r.json()
        seconds = time.perf_counter() - start
    print(
        f"webhook kit: {calls / seconds:8.0f} calls/s in-process ({calls} calls over {sessions} "
        f"sessions, {answered} prompts); sessions held at the end: {len(store)} "
        f"(max_sessions 1000)"
    )


async def bench_client(sends: int) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        env = {
            "NUDGE_ADMIN_TOKEN": ADMIN,
            "NUDGE_DATA_DIR": str(data),
            "NUDGE_DATABASE_URL": f"sqlite+aiosqlite:///{data}/nudge.db",
            "NUDGE_LOG_LEVEL": "WARNING",
            "NUDGE_LLM_PROVIDER": "fake",
        }
        proc = start_server(data, env, port)
        try:
            async with httpx.AsyncClient(
                base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}
            ) as admin:
                app = (
                    await admin.post(
                        "/v1/apps",
                        json={"manifest": {"name": "Bench"}, "direct_limit_per_hour": 1_000_000},
                    )
                ).json()
                await admin.post("/v1/users", json={"uid": "u1", "name": "U"})
                await admin.post(f"/v1/users/u1/apps/{app['app_id']}", json={"scopes": []})
            raw_times: list[float] = []
            sdk_times: list[float] = []
            async with (
                httpx.AsyncClient(base_url=url) as raw,
                AsyncNudgeClient(url, app["app_id"], app["app_secret"]) as client,
            ):
                for i in range(sends):
                    start = time.perf_counter()
                    r = await raw.post(
                        f"/v2/integrations/{app['app_id']}/notification",
                        params={"uid": "u1", "message": f"raw {i}"},
                        headers={
                            "Authorization": f"Bearer {app['app_secret']}",
                            "Idempotency-Key": f"raw-{i}",
                        },
                    )
                    r.raise_for_status()
                    raw_times.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    await client.send_notification("u1", f"sdk {i}")
                    sdk_times.append(time.perf_counter() - start)
        finally:
            proc.terminate()
            proc.wait(15)
    for name, times in (("bare httpx", raw_times), ("AsyncNudgeClient", sdk_times)):
        ms = sorted(t * 1000 for t in times)
        print(
            f"client {name:<17} p50 {statistics.median(ms):6.2f} ms   "
            f"p99 {ms[int(0.99 * (len(ms) - 1))]:6.2f} ms   ({sends} sequential sends)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--sessions", type=int, default=5000)
    parser.add_argument("--sends", type=int, default=300)
    args = parser.parse_args()
    asyncio.run(bench_kit(args.calls, args.sessions))
    asyncio.run(bench_client(args.sends))


if __name__ == "__main__":
    main()
