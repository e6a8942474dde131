"""Shared fixtures: settings on a fresh SQLite file, the real PostgreSQL and Redis, a platform,
an in-process client, and a real ``nudge serve`` subprocess."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Connection, event

from nudge.api.app import create_app
from nudge.config import Settings
from nudge.platform import Platform

ADMIN = "test-admin-token"
POSTGRES_URL = os.environ.get(
    "NUDGE_TEST_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("NUDGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
IN_CI = os.environ.get("CI") == "true"

MENTOR_MANIFEST: dict[str, Any] = {
    "name": "Mentor",
    "description": "Real-time mentoring advice",
    "capabilities": ["external_integration", "proactive_notification"],
    "external_integration": {
        "triggers_on": "transcript_processed",
        "webhook_url": "http://127.0.0.1:9/webhook",
    },
    "proactive_notification": {"scopes": ["user_name", "user_facts", "user_context", "user_chat"]},
}


def unavailable(what: str, start: str) -> None:
    """Skip outside CI with what to start; fail in CI, where the service must be there."""
    message = f"{what} is not reachable; start it with: {start}"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _postgres_database() -> str:
    """A fresh, empty database on the real PostgreSQL server; returns its URL."""
    import asyncpg

    base = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    name = "nudge_t_" + secrets.token_hex(6)
    try:
        conn = await asyncpg.connect(base, timeout=3)
    except (TimeoutError, OSError, asyncpg.PostgresError):
        unavailable("PostgreSQL", "pg_ctlcluster --skip-systemctl-redirect 15 main start")
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name


async def _drop_postgres_database(url: str) -> None:
    import asyncpg

    base = POSTGRES_URL.replace("postgresql+asyncpg://", "postgresql://")
    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(base, timeout=3)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    url = await _postgres_database()
    yield url
    await _drop_postgres_database(url)


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    import redis.asyncio as redis

    client = redis.from_url(REDIS_URL)
    try:
        await client.ping()
    except (OSError, redis.RedisError):
        unavailable("Redis", "redis-server --daemonize yes --port 6379")
    finally:
        await client.aclose()
    yield REDIS_URL


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """Each test using this runs on SQLite and on the real PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path}/nudge.db"
        return
    url = await _postgres_database()
    yield url
    await _drop_postgres_database(url)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/nudge.db",
        "admin_token": ADMIN,
        "llm_provider": "fake",
        "allow_private_webhooks": True,
        "delivery_poll_interval_s": 0.05,
        "delivery_base_backoff_s": 0.05,
        "log_format": "text",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
async def platform(settings: Settings) -> AsyncIterator[Platform]:
    p = await Platform.start(settings)
    yield p
    await p.close()


@pytest.fixture
async def client(settings: Settings, platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, platform=platform)
    app.state.platform = platform
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport,
        base_url="http://nudge.test",
        headers={"Authorization": f"Bearer {ADMIN}"},
    ) as c:
        yield c


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Platform, httpx.AsyncClient]]:
    """A platform (with its worker) on ``settings`` and an admin client on it."""
    platform = await Platform.start(settings)
    app = create_app(settings, platform=platform)
    app.state.platform = platform
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://nudge.test",
            headers={"Authorization": f"Bearer {ADMIN}"},
        ) as client:
            yield platform, client
    finally:
        await platform.close()


@dataclass
class World:
    """An app, a user who installed it, and their secrets."""

    app_id: str
    app_secret: str
    webhook_secret: str
    uid: str
    user_token: str


async def make_world(
    c: httpx.AsyncClient,
    manifest: dict[str, Any] | None = None,
    scopes: list[str] | None = None,
    uid: str = "user123",
    **app_extra: Any,
) -> World:
    r = await c.post("/v1/apps", json={"manifest": manifest or MENTOR_MANIFEST, **app_extra})
    assert r.status_code == 201, r.text
    app = r.json()
    r = await c.post(
        "/v1/users", json={"uid": uid, "name": "Ana", "facts": ["Wants to run a marathon"]}
    )
    assert r.status_code == 201, r.text
    user = r.json()
    r = await c.post(
        f"/v1/users/{uid}/apps/{app['app_id']}",
        json={"scopes": scopes if scopes is not None else ["user_name", "user_facts"]},
    )
    assert r.status_code == 200, r.text
    return World(app["app_id"], app["app_secret"], app["webhook_secret"], uid, user["user_token"])


@pytest.fixture
async def world(client: httpx.AsyncClient) -> World:
    return await make_world(client)


async def wait_for(predicate: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s (last value: {value!r})")
        await asyncio.sleep(interval)


@dataclass
class Server:
    """A real ``nudge serve`` process."""

    url: str
    env: dict[str, str]
    proc: subprocess.Popen[bytes]
    log_path: Path

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def start_server(
    tmp_path: Path,
    env_extra: dict[str, str] | None = None,
    *,
    port: int | None = None,
    args: list[str] | None = None,
) -> Server:
    port = port or free_port()
    env = {
        **os.environ,
        "NUDGE_ADMIN_TOKEN": ADMIN,
        "NUDGE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/nudge.db",
        "NUDGE_DATA_DIR": str(tmp_path / "data"),
        "NUDGE_LLM_PROVIDER": "fake",
        "NUDGE_ALLOW_PRIVATE_WEBHOOKS": "1",
        "NUDGE_LOG_FORMAT": "json",
        **(env_extra or {}),
    }
    log_path = tmp_path / f"server-{port}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nudge.cli", "serve", "--port", str(port), *(args or [])],
        env=env,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    # Generous: several servers start at once on a 2-core machine that may be busy.
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"nudge serve exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return Server(url, env, proc, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"nudge serve did not come up: {log_path.read_text()[-2000:]}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = start_server(tmp_path)
    yield s
    s.stop()


class ServeASGI:
    """Run an ASGI app under a real uvicorn server on a free port, in this event loop."""

    def __init__(self, app: Any, port: int | None = None) -> None:
        import uvicorn

        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(
                app,
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                lifespan="off",
                # A handler still waiting when a test fails must not hold the shutdown forever.
                timeout_graceful_shutdown=3,
            )
        )

    async def __aenter__(self) -> ServeASGI:
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.02)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.should_exit = True
        await self.task


@pytest.fixture
async def live_url(settings: Settings, platform: Platform) -> AsyncIterator[str]:
    """The platform's API served over real HTTP (streams such as SSE need a real server)."""
    app = create_app(settings, platform=platform)
    app.state.platform = platform
    async with ServeASGI(app) as served:
        yield served.url


@contextmanager
def statements_run(conn: Connection) -> Iterator[list[tuple[str, Any]]]:
    """The single-row SQL statements run on ``conn`` inside the block, to EXPLAIN afterwards.

    On the ``sqlite3`` driver they are taken from SQLite itself (its trace callback, values
    inlined), so the statements that ``nudge.store.fast`` runs on the driver are seen too."""
    seen: list[tuple[str, Any]] = []
    raw = conn.connection.driver_connection
    if isinstance(raw, sqlite3.Connection):

        def trace(sql: str) -> None:
            if sql.lstrip().split(None, 1)[0].upper() in ("SELECT", "UPDATE", "DELETE", "WITH"):
                seen.append((sql, ()))

        raw.set_trace_callback(trace)
        try:
            yield seen
        finally:
            raw.set_trace_callback(None)
        return

    def record(_c: Any, _cursor: Any, sql: str, params: Any, _ctx: Any, many: bool) -> None:
        if not many:
            seen.append((sql, params))

    event.listen(conn, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(conn, "before_cursor_execute", record)


def sqlite_scans(conn: Connection, statements: list[tuple[str, Any]]) -> list[str]:
    """The steps of these statements' SQLite query plans that read a whole table or index, or
    every notification of an app (costs that grow with every row ever stored), instead of
    searching for the rows wanted."""
    plans = [
        str(row[-1])
        for sql, params in statements
        for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params)
    ]
    return [
        p
        for p in plans
        if (p.startswith("SCAN") and "CONSTANT ROW" not in p)
        or (p.startswith("SEARCH notifications") and p.endswith("(app_id=?)"))
    ]
