"""Bounded requests and failed-authentication throttling, against real ``nudge serve`` processes
(docs/security.md): oversized bodies, query strings and heads, clients that trickle, the
connection cap, and 429 after refused credentials. Requests are written on raw sockets where
the point is what a client that does not play by the rules gets."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from nudge.api.throttle import AuthFailures, client_key
from tests.conftest import ADMIN, Server, start_server

MiB = 1024 * 1024
TIMEOUT_S = 1.0  # the head and body timeouts of the shared server


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def port_of(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def setup_world(url: str) -> dict[str, str]:
    """An app, and a user who installed it: their ids and secrets."""
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as c:
        app = c.post("/v1/apps", json={"manifest": {"name": "Limits"}}).json()
        user = c.post("/v1/users", json={"uid": "ana", "name": "Ana"}).json()
        c.post(f"/v1/users/ana/apps/{app['app_id']}", json={"scopes": []}).raise_for_status()
    return {"app_id": app["app_id"], "secret": app["app_secret"], "token": user["user_token"]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Default sizes; 1 s to send a head or a body; 5 refused credentials a minute."""
    s = start_server(
        tmp_path_factory.mktemp("limits"),
        {
            "NUDGE_HEADER_TIMEOUT_S": str(TIMEOUT_S),
            "NUDGE_BODY_TIMEOUT_S": str(TIMEOUT_S),
            "NUDGE_AUTH_FAILURE_LIMIT": "5",
            "NUDGE_ROLE": "api",
        },
    )
    yield s
    s.stop()


@pytest.fixture(scope="module")
def world(server: Server) -> dict[str, str]:
    return setup_world(server.url)


class Answer:
    def __init__(self, head: bytes, body: bytes, seconds: float) -> None:
        self.status = int(head.split(b" ", 2)[1]) if head else 0
        self.head = head
        self.body = body
        self.seconds = seconds

    def json(self) -> dict[str, str]:
        data: dict[str, str] = json.loads(self.body)
        return data


async def exchange(
    port: int,
    head: bytes,
    body: list[bytes] | None = None,
    *,
    pause: float = 0.0,
    source: str = "127.0.0.1",
) -> Answer:
    """Write ``head`` then each part of ``body`` (``pause`` s apart) while reading the answer,
    as a client that reads early answers does; stop writing once one has come."""
    started = time.monotonic()  # before connecting: the server's clock starts at accept
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))

    async def write() -> None:
        try:
            writer.write(head)
            for part in body or ():
                await writer.drain()
                if pause:
                    await asyncio.sleep(pause)
                writer.write(part)
            await writer.drain()
        except ConnectionError:
            pass  # the server answered and closed

    writing = asyncio.create_task(write())
    try:
        answer_head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        length = 0
        for line in answer_head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        answer_body = await reader.readexactly(length)
        return Answer(answer_head, answer_body, time.monotonic() - started)
    finally:
        writing.cancel()
        writer.close()


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sends until it closes the connection (fails if it does not)."""
    return await asyncio.wait_for(reader.read(), seconds)


# -- bodies ---------------------------------------------------------------------------------------


def chunked(total: int, size: int = MiB) -> list[bytes]:
    part = b"%x\r\n" % size + b"a" * size + b"\r\n"
    return [part] * (total // size) + [b"0\r\n\r\n"]


@pytest.mark.parametrize(
    ("path", "streamed_status"),
    [
        ("/v1/apps", 413),  # a FastAPI route (with an admin-only dependency)
        ("/v1/users/ana/sessions/s1/segments", 413),  # the segments fast path
        # The direct fast path never reads a body: with no Content-Length to refuse, it
        # answers (here: no credential) and the rest of the body is read past, not kept.
        ("/v2/integrations/app_x/notification?uid=ana&message=hi", 401),
    ],
)
async def test_a_100_mb_body_is_refused_before_it_is_read(
    server: Server, path: str, streamed_status: int
) -> None:
    port, pid = port_of(server), server.proc.pid
    before = rss_mib(pid)
    start = f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    declared = await exchange(
        port,
        f"{start}Content-Length: {100 * MiB}\r\n\r\n".encode(),
        [b"a" * MiB] * 100,
        source="127.0.0.9",
    )
    streamed = await exchange(
        port,
        f"{start}Transfer-Encoding: chunked\r\n\r\n".encode(),
        chunked(100 * MiB),
        source="127.0.0.9",
    )
    assert declared.status == 413, declared.head
    assert "NUDGE_MAX_BODY_BYTES" in declared.json()["detail"]
    assert declared.seconds < 1, declared.seconds  # from the header, before the body
    assert streamed.status == streamed_status, streamed.head
    assert rss_mib(pid) - before < 8, (before, rss_mib(pid))


async def test_bodies_up_to_the_limit_are_taken(server: Server, world: dict[str, str]) -> None:
    """A 1 MiB facts list (500 facts of 2,000 characters, the most a request may hold) fits."""
    facts = ["f" * 2000] * 500
    assert len(json.dumps({"facts": facts})) > 0.95 * MiB
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        r = await c.post(
            "/v1/users/ana/facts",
            json={"facts": facts},
            headers={"Authorization": f"Bearer {world['token']}"},
        )
    assert r.status_code == 200, r.text
    assert len(r.json()["facts"]) == 500


# -- query strings and heads ----------------------------------------------------------------------


async def test_a_100_mb_query_string_is_refused_fast(server: Server) -> None:
    line = b"GET /healthz?q=" + b"a" * (100 * MiB)
    answer = await exchange(
        port_of(server), b"", [line[i : i + MiB] for i in range(0, len(line), MiB)]
    )
    assert answer.status == 414, answer.head
    assert "JSON body" in answer.json()["detail"]
    assert answer.seconds < 2, answer.seconds


async def test_a_long_query_string_gets_a_clear_414(server: Server, world: dict[str, str]) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        r = await c.post(
            f"/v2/integrations/{world['app_id']}/notification",
            params={"uid": "ana", "message": "a" * 40_000},
            headers={"Authorization": f"Bearer {world['secret']}"},
        )
    assert r.status_code == 414
    assert "NUDGE_MAX_QUERY_BYTES" in r.json()["detail"]


async def test_a_2000_character_message_of_any_script_fits_the_query(
    server: Server, world: dict[str, str]
) -> None:
    """The longest direct message, percent-encoded 4-byte UTF-8, is well inside the limits."""
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as c:
        r = await c.post(
            f"/v2/integrations/{world['app_id']}/notification",
            params={"uid": "ana", "message": "😀" * 2000},
            headers={"Authorization": f"Bearer {world['secret']}"},
        )
    assert r.status_code == 200, r.text


async def test_oversized_headers_get_431(server: Server) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + b"X-Filler: " + b"a" * (80 * 1024)
    answer = await exchange(port_of(server), head, [b"a" * 16 * 1024] * 8)
    assert answer.status == 431, answer.head
    assert "NUDGE_MAX_HEADER_BYTES" in answer.json()["detail"]


# -- clients that trickle -------------------------------------------------------------------------


async def test_trickled_headers_are_cut_off(server: Server) -> None:
    answer = await exchange(
        port_of(server),
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n",
        [b"X-Slow: %d\r\n" % i for i in range(100)],
        pause=0.1,
    )
    assert answer.status == 408, answer.head
    assert "NUDGE_HEADER_TIMEOUT_S" in answer.json()["detail"]
    assert TIMEOUT_S <= answer.seconds < TIMEOUT_S + 1.5, answer.seconds


async def test_trickled_bodies_are_cut_off(server: Server, world: dict[str, str]) -> None:
    """A FastAPI route waiting for its body gets 408; the direct route, which has answered
    without reading it, sees the connection closed."""
    admin = f"Authorization: Bearer {ADMIN}\r\n"
    head = f"POST /v1/apps HTTP/1.1\r\nHost: t\r\n{admin}Content-Length: 1000\r\n\r\n"
    answer = await exchange(port_of(server), head.encode(), [b"x"] * 100, pause=0.1)
    assert answer.status == 408, answer.head
    assert "NUDGE_BODY_TIMEOUT_S" in answer.json()["detail"]
    assert TIMEOUT_S <= answer.seconds < TIMEOUT_S + 1.5, answer.seconds

    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(server))
    started = time.monotonic()
    path = f"/v2/integrations/{world['app_id']}/notification?uid=ana&message=trickle"
    auth = f"Authorization: Bearer {world['secret']}\r\n"
    writer.write(f"POST {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 1000\r\n\r\n".encode())
    trickle = asyncio.create_task(trickle_bytes(writer))
    try:
        received = await closed_within(reader, TIMEOUT_S + 3)
    finally:
        trickle.cancel()
        writer.close()
    assert received.startswith(b"HTTP/1.1 200"), received[:100]
    assert time.monotonic() - started < TIMEOUT_S + 1.5


async def trickle_bytes(writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            await asyncio.sleep(0.1)
            writer.write(b"x")
            await writer.drain()
    except ConnectionError:
        pass


async def test_many_trickling_and_idle_connections_are_all_dropped(server: Server) -> None:
    """200 connections that trickle headers and 100 that send nothing are closed within the
    timeout, while the server keeps answering others."""
    port = port_of(server)
    connections = [await asyncio.open_connection("127.0.0.1", port) for _ in range(300)]
    started = time.monotonic()
    tricklers = []
    for _, writer in connections[:200]:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
        tricklers.append(asyncio.create_task(trickle_bytes(writer)))
    async with httpx.AsyncClient(base_url=server.url) as c:
        assert (await c.get("/healthz")).status_code == 200
    try:
        ends = await asyncio.gather(
            *(closed_within(reader, TIMEOUT_S + 5) for reader, _ in connections)
        )
    finally:
        for task in tricklers:
            task.cancel()
        for _, writer in connections:
            writer.close()
    assert time.monotonic() - started < TIMEOUT_S + 5
    assert all(end.startswith(b"HTTP/1.1 408") for end in ends[:200])
    assert all(end == b"" for end in ends[200:])  # never sent a byte: closed without a word


# -- connections per process ----------------------------------------------------------------------


async def test_connections_beyond_the_cap_get_503(tmp_path: Path) -> None:
    server = start_server(tmp_path, {"NUDGE_MAX_CONNECTIONS": "5", "NUDGE_ROLE": "api"})
    try:
        port = port_of(server)
        held = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
        refused = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert refused.status == 503
        for _, writer in held:
            writer.close()
        await asyncio.sleep(0.3)
        served = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert served.status == 200
    finally:
        server.stop()


# -- refused credentials --------------------------------------------------------------------------


def client_from(url: str, address: str) -> httpx.AsyncClient:
    """A client whose requests come from ``address`` (any 127.x.y.z reaches the server)."""
    return httpx.AsyncClient(
        base_url=url, transport=httpx.AsyncHTTPTransport(local_address=address), timeout=30
    )


async def test_refused_app_secrets_are_throttled_per_address(
    server: Server, world: dict[str, str]
) -> None:
    path = f"/v2/integrations/{world['app_id']}/notification"
    guess = {"Authorization": "Bearer sk_" + "0" * 32}
    good = {"Authorization": f"Bearer {world['secret']}"}
    async with client_from(server.url, "127.0.0.2") as guesser:
        for i in range(5):
            r = await guesser.post(path, params={"uid": "ana", "message": f"g{i}"}, headers=guess)
            assert r.status_code == 401, r.text
        r = await guesser.post(path, params={"uid": "ana", "message": "g5"}, headers=guess)
        assert r.status_code == 429
        assert 1 <= int(r.headers["Retry-After"]) <= 60
        # Blocked before the secret is looked at: a right one fares no better from here ...
        r = await guesser.post(path, params={"uid": "ana", "message": "g6"}, headers=good)
        assert r.status_code == 429
        # ... but what needs no credential is still served.
        assert (await guesser.get("/healthz")).status_code == 200
    async with client_from(server.url, "127.0.0.3") as app:
        r = await app.post(path, params={"uid": "ana", "message": "from elsewhere"}, headers=good)
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("address", "method", "path", "token"),
    [
        ("127.0.0.4", "GET", "/v1/users/ana/notifications", "ut_" + "0" * 48),  # user token
        ("127.0.0.5", "POST", "/v1/apps", "not-the-admin-token"),  # admin token
        ("127.0.0.6", "POST", "/v1/users/ana/sessions/s1/segments", "wrong"),  # segments path
        ("127.0.0.7", "GET", "/console/api/whoami", "wrong"),  # the console's login
    ],
)
async def test_every_kind_of_refused_credential_counts(
    server: Server, address: str, method: str, path: str, token: str
) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    body = {"segments": [{"text": "hello"}]} if "segments" in path else None
    async with client_from(server.url, address) as c:
        statuses = [
            (await c.request(method, path, headers=headers, json=body)).status_code
            for _ in range(6)
        ]
    assert statuses[:5] in ([401] * 5, [403] * 5), statuses
    assert statuses[5] == 429


async def test_websockets_outlive_the_head_timeout_and_are_throttled_too(
    server: Server, world: dict[str, str]
) -> None:
    listen = server.url.replace("http://", "ws://") + "/v1/users/ana/listen?session_id=ws1"
    async with websockets.connect(f"{listen}&token={world['token']}") as ws:
        await asyncio.sleep(TIMEOUT_S + 0.5)  # the HTTP head and body timeouts do not apply
        await ws.send(json.dumps([{"text": "still here"}]))
        assert json.loads(await ws.recv())["accepted"] == 1
        # A message is a body by another name: over NUDGE_MAX_BODY_BYTES, the socket closes.
        await ws.send(json.dumps([{"text": "a" * 10_000}] * 110))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
    for _ in range(5):
        async with websockets.connect(f"{listen}&token=ut_nope", local_addr=("127.0.0.8", 0)) as ws:
            assert json.loads(await ws.recv())["status"] == 401
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(f"{listen}&token=ut_nope", local_addr=("127.0.0.8", 0))
    assert refused.value.response.status_code == 403


# -- the table ------------------------------------------------------------------------------------


def test_a_block_ends_with_its_window() -> None:
    failures = AuthFailures(limit=3, window_s=60)
    assert [failures.failed("1.2.3.4", now=100 + i) for i in range(3)] == [False, False, True]
    assert failures.retry_after("1.2.3.4", now=103) == 57
    assert failures.retry_after("5.6.7.8", now=103) == 0
    assert failures.retry_after("1.2.3.4", now=160) == 0
    assert not failures  # the expired entry is gone
    # Failures spread wider than the window never block.
    for t in (0, 70, 140, 210):
        failures.failed("1.2.3.4", now=t)
    assert failures.retry_after("1.2.3.4", now=211) == 0


def test_the_table_is_bounded() -> None:
    failures = AuthFailures(limit=2, window_s=60, capacity=100)
    for i in range(1000):
        failures.failed(f"10.0.{i // 256}.{i % 256}", now=0)
    assert len(failures._watched) == 100


def test_ipv6_addresses_count_by_their_64() -> None:
    assert client_key("2001:db8:1:2::1") == client_key("2001:db8:1:2:ffff::9")
    assert client_key("2001:db8:1:2::1") != client_key("2001:db8:1:3::1")
    assert client_key("192.0.2.1") == "192.0.2.1"
