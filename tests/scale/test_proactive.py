"""The proactive pipeline across processes: two API and two worker processes on PostgreSQL.

Segments of each session arrive through both API processes, land in one conversation, and reach
the app once each, whichever worker flushed them; when the app asks for a proactive notification
from calls handled by both workers at the same moment, the 30 s claim (Redis, or the
``rate_claims`` table) lets one through.
"""

from __future__ import annotations

import asyncio
import collections
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request

from tests.conftest import ADMIN, ServeASGI, wait_for
from tests.proactive.helpers import create_app, create_user, install, manifest, post_segments
from tests.scale.conftest import base_env, start_servers, stop_all

SESSIONS = 40  # at most; the test stops opening sessions once both workers hold a call


def pid_of_port(port: int, pids: list[int]) -> int | None:
    """Which of ``pids`` owns the local TCP port ``port`` (read from Linux's /proc)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(fields[9])
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return pid
    return None


@pytest.mark.parametrize("claims", ["redis", "sql"])
async def test_claim_raced_by_two_workers_sends_one(
    tmp_path: Path, postgres_url: str, redis_url: str, claims: str
) -> None:
    # Calls are held open below until both workers have one: let each worker hold more calls per
    # app than sessions we open (the default lane of 4 would queue the rest behind the held ones).
    env = base_env(
        postgres_url,
        redis_url if claims == "redis" else None,
        NUDGE_WEBHOOK_CONCURRENCY_PER_APP=str(SESSIONS * 2),
    )
    servers = await start_servers(tmp_path, env, ["api", "api", "worker", "worker"])
    apis = [s.url for s in servers[:2]]
    workers = [s.proc.pid for s in servers[2:]]

    calls: list[tuple[str, list[str], int | None]] = []  # (conversation, texts, worker pid)
    release = asyncio.Event()
    hook = FastAPI()

    @hook.post("/hook")
    async def answer(request: Request) -> dict[str, Any]:
        body = await request.json()
        assert request.client is not None
        pid = pid_of_port(request.client.port, workers)
        calls.append((body["conversation_id"], [s["text"] for s in body["segments"]], pid))
        await release.wait()  # held until both workers have a call in hand
        return {
            "session_id": body["session_id"],
            "notification": {"prompt": "Cheer {{user_name}} on.", "params": ["user_name"]},
        }

    try:
        async with (
            ServeASGI(hook) as served,
            httpx.AsyncClient(base_url=apis[0], headers={"Authorization": f"Bearer {ADMIN}"}) as c,
        ):
            app = await create_app(c, manifest("Coach", served.url + "/hook", scopes=["user_name"]))
            await create_user(c, "ana")
            await install(c, "ana", app["app_id"], ["user_name"])
            clients = [httpx.AsyncClient(base_url=u, headers=c.headers) for u in apis]
            posted: list[str] = []
            for i in range(SESSIONS):
                session = f"s{i}"
                opened: set[str] = set()
                for part in range(2):  # the session's segments come through both API processes
                    text = f"{session} part {part}"
                    stored = await post_segments(clients[(i + part) % 2], "ana", session, text)
                    opened.add(stored["conversation_id"])
                    posted.append(text)
                assert len(opened) == 1  # one conversation, whichever process took each part

                async def called(conversation: str = opened.pop()) -> bool:
                    return any(c == conversation for c, _, _ in calls)

                await wait_for(called, timeout=10)
                if {pid for _, _, pid in calls} >= set(workers):
                    break
            holders = collections.Counter(pid for _, _, pid in calls)
            assert set(holders) == set(workers), f"calls held per worker pid: {dict(holders)}"
            release.set()

            async def settled() -> list[dict[str, Any]] | None:
                sent = sorted(t for _, texts, _ in calls for t in texts)
                r = await c.get(f"/v1/apps/{app['app_id']}/traces", params={"limit": 200})
                items: list[dict[str, Any]] = r.json()["items"]
                return items if sent == sorted(posted) and len(items) == len(calls) else None

            traces = await wait_for(settled, timeout=20)
            for client in clients:
                await client.aclose()

            # Each segment reached the app once, whichever process took it in or flushed it.
            texts = collections.Counter(t for _, ts, _ in calls for t in ts)
            assert texts == collections.Counter(posted)
            # One call won the claim; every other was refused by it.
            outcomes = collections.Counter(t["outcome"] for t in traces)
            assert outcomes == {"notified": 1, "rate_limited": len(calls) - 1}, outcomes
            inbox = (await c.get("/v1/users/ana/notifications")).json()["items"]
            assert len(inbox) == 1 and inbox[0]["title"] == "Coach says"
    finally:
        release.set()  # a failed assertion must not leave the hook's handlers waiting
        stop_all(servers)
