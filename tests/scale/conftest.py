"""Several real ``nudge serve`` processes on one PostgreSQL (and Redis), with the FCM fake running
as a process of its own (``python -m tests.fakes fcm``), which counts what it receives."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from nudge.bus.transport import asyncpg_dsn
from nudge.store.migrate import upgrade
from tests.conftest import ADMIN, Server, free_port, start_server, wait_for
from tests.fakes.process import start_fcm

ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN}"}


@dataclass
class FcmProcess:
    url: str
    account: Path
    proc: subprocess.Popen[bytes]

    def env(self) -> dict[str, str]:
        return {"NUDGE_FCM_BASE_URL": self.url, "NUDGE_FCM_CREDENTIALS_FILE": str(self.account)}

    async def receipts(self) -> collections.Counter[str]:
        """Messages the fake accepted, per notification_id."""
        async with httpx.AsyncClient(timeout=10) as c:
            r = await c.get(self.url + "/_fake/receipts")
        r.raise_for_status()
        return collections.Counter(nid for nid, _ in r.json()["receipts"])


@pytest.fixture
def fcm_process(tmp_path: Path) -> Iterator[FcmProcess]:
    port = free_port()
    account = tmp_path / "fcm-service-account.json"
    proc = start_fcm(port, account, output=(tmp_path / "fcm-fake.log").open("ab"))
    yield FcmProcess(f"http://127.0.0.1:{port}", account, proc)
    proc.terminate()
    proc.wait(10)


def base_env(postgres_url: str, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    """What every process of one deployment shares (fast polling and backoff for tests)."""
    env = {
        "NUDGE_DATABASE_URL": postgres_url,
        "NUDGE_DELIVERY_POLL_INTERVAL_S": "0.5",
        "NUDGE_DELIVERY_BASE_BACKOFF_S": "0.05",
        "NUDGE_DISPATCHER_POLL_INTERVAL_S": "0.1",
        "NUDGE_LOG_LEVEL": "INFO",
        **extra,
    }
    if redis_url:
        env["NUDGE_REDIS_URL"] = redis_url
    return env


async def start_servers(
    tmp_path: Path, env: dict[str, str], roles: list[str], **per_server: dict[str, str]
) -> list[Server]:
    """Start one process per role, in parallel, after migrating once. ``per_server`` maps
    ``"s<i>"`` to environment for the i-th process only."""
    await upgrade(env["NUDGE_DATABASE_URL"])

    def one(i: int, role: str) -> Server:
        return start_server(tmp_path, {**env, **per_server.get(f"s{i}", {})}, args=["--role", role])

    results = await asyncio.gather(
        *(asyncio.to_thread(one, i, role) for i, role in enumerate(roles)),
        return_exceptions=True,
    )
    servers = [r for r in results if isinstance(r, Server)]
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        stop_all(servers)
        raise failed[0]
    return servers


def stop_all(servers: list[Server]) -> None:
    for s in servers:
        s.stop()


async def make_users(
    url: str, count: int, *, fcm: bool = True, manifest: dict[str, Any] | None = None
) -> tuple[str, str, list[str]]:
    """An app (no hourly limit to speak of) and ``count`` users who installed it, each with an
    FCM device; returns (app_id, app_secret, uids)."""
    async with httpx.AsyncClient(base_url=url, headers=ADMIN_HEADERS, timeout=30) as c:
        r = await c.post(
            "/v1/apps",
            json={"manifest": manifest or {"name": "Scale"}, "direct_limit_per_hour": 1_000_000},
        )
        assert r.status_code == 201, r.text
        app = r.json()
        uids = [f"u{i}" for i in range(count)]

        async def user(uid: str) -> None:
            r = await c.post("/v1/users", json={"uid": uid, "name": uid})
            assert r.status_code == 201, r.text
            r = await c.post(f"/v1/users/{uid}/apps/{app['app_id']}", json={"scopes": []})
            assert r.status_code == 200, r.text
            if fcm:
                r = await c.post(
                    f"/v1/users/{uid}/devices", json={"platform": "fcm", "token": f"fcm-{uid}"}
                )
                assert r.status_code in (200, 201), r.text

        await asyncio.gather(*(user(uid) for uid in uids))
    return app["app_id"], app["app_secret"], uids


async def send_direct(
    urls: list[str], app_id: str, secret: str, uids: list[str], count: int, *, clients: int = 16
) -> dict[str, tuple[str, str]]:
    """Send ``count`` distinct direct notifications, request i through ``urls[i % len(urls)]`` to
    user ``uids[i // len(urls) % len(uids)]`` (each user gets some through every URL); returns
    notification_id -> (the API URL that accepted it, uid).

    Each client keeps to one URL, so that its one connection is never idle: a connection left
    idle while the client talks to other processes may be closed by the server's keep-alive
    timeout just as the client sends on it, and a POST is not retried."""
    accepted: dict[str, tuple[str, str]] = {}
    queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in urls]
    for i in range(count):
        queues[i % len(urls)].put_nowait(i)
    headers = {"Authorization": f"Bearer {secret}"}

    async def client(url: str, queue: asyncio.Queue[int]) -> None:
        async with httpx.AsyncClient(timeout=30, headers=headers) as c:
            while not queue.empty():
                i = queue.get_nowait()
                uid = uids[i // len(urls) % len(uids)]
                r = await c.post(
                    f"{url}/v2/integrations/{app_id}/notification",
                    params={"uid": uid, "message": f"message number {i}"},
                )
                assert r.status_code == 200, r.text
                accepted[r.json()["notification_id"]] = (url, uid)

    n = max(clients, len(urls))
    await asyncio.gather(*(client(urls[k % len(urls)], queues[k % len(urls)]) for k in range(n)))
    return accepted


async def wait_all_delivered(postgres_url: str, notifications: int, timeout: float = 20) -> None:
    """Until every delivery is ``delivered``: two per notification (an FCM device, the inbox)."""

    async def done() -> bool:
        return await delivery_states(postgres_url) == {"delivered": 2 * notifications}

    await wait_for(done, timeout=timeout, interval=0.2)


async def delivery_states(postgres_url: str) -> collections.Counter[str]:
    rows = await fetch(postgres_url, "SELECT state, count(*) AS n FROM deliveries GROUP BY state")
    return collections.Counter({r["state"]: r["n"] for r in rows})


async def fetch(postgres_url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Rows read straight from the database, past every process."""
    conn = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def limited_app(url: str, uids: list[str], limit: int) -> tuple[str, str]:
    """An app allowed ``limit`` direct sends per user per hour, installed by ``uids`` (created
    here); returns (app_id, app_secret)."""
    async with httpx.AsyncClient(base_url=url, headers=ADMIN_HEADERS, timeout=30) as c:
        r = await c.post(
            "/v1/apps", json={"manifest": {"name": "Limited"}, "direct_limit_per_hour": limit}
        )
        assert r.status_code == 201, r.text
        app = r.json()
        for uid in uids:
            r = await c.post("/v1/users", json={"uid": uid, "name": uid})
            assert r.status_code == 201, r.text
            r = await c.post(f"/v1/users/{uid}/apps/{app['app_id']}", json={"scopes": []})
            assert r.status_code == 200, r.text
    return app["app_id"], app["app_secret"]


async def send_at_once(
    urls: list[str],
    app_id: str,
    secret: str,
    uid: str,
    messages: list[str],
    headers: dict[str, str] | None = None,
) -> list[httpx.Response]:
    """One direct send per message to ``uid``, all at once, send i through ``urls[i % len]``."""
    limits = httpx.Limits(max_connections=len(messages))
    async with httpx.AsyncClient(timeout=30, limits=limits) as c:

        async def send(i: int, message: str) -> httpx.Response:
            return await c.post(
                f"{urls[i % len(urls)]}/v2/integrations/{app_id}/notification",
                params={"uid": uid, "message": message},
                headers={"Authorization": f"Bearer {secret}", **(headers or {})},
            )

        return await asyncio.gather(*(send(i, m) for i, m in enumerate(messages)))


async def listen_sse(url: str, uid: str, into: list[dict[str, Any]], ready: asyncio.Event) -> None:
    """Read the user's live inbox on ``url``; ``ready`` is set once the stream is subscribed."""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(60, connect=5)) as c,
        c.stream("GET", f"{url}/v1/users/{uid}/notifications/stream", headers=ADMIN_HEADERS) as r,
    ):
        assert r.status_code == 200
        event = None
        async for line in r.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
                if event == "ready":
                    ready.set()
            elif line.startswith("data:") and event == "notification":
                into.append(json.loads(line.split(":", 1)[1]))


class LiveInbox:
    """A user's live inbox, read on one API process while a test runs."""

    def __init__(self, url: str, uid: str) -> None:
        self.seen: list[dict[str, Any]] = []
        self._ready = asyncio.Event()
        self._task = asyncio.create_task(listen_sse(url, uid, self.seen, self._ready))

    @classmethod
    async def open(cls, url: str, uid: str) -> LiveInbox:
        """Start reading; returns once the stream is subscribed."""
        inbox = cls(url, uid)
        await asyncio.wait_for(inbox._ready.wait(), 10)
        return inbox

    async def close_once_seen(self, watched: set[str]) -> collections.Counter[str]:
        """Wait until every watched notification came on the stream, stop reading; how often
        each notification came."""

        async def all_seen() -> bool:
            return {e["id"] for e in self.seen} >= watched

        await wait_for(all_seen, timeout=10)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return collections.Counter(e["id"] for e in self.seen)
