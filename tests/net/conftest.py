"""A bare TCP listener on 127.0.0.1 that counts connections and answers any HTTP request with
201: a call the guard should have refused shows up here (and, answered, looks successful)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from nudge.net.guard import system_resolve

# Host forms that reach (or would reach) this machine; every guarded call must refuse them.
REFUSED_FORMS = [
    "localhost",
    "rebind.example",  # a name resolving to 127.0.0.1 (see ``resolve``)
    "nat64.example",  # a name resolving to a NAT64 form of it
    "0x7f.1",
    "127.1",
    "2130706433",
    "0177.0.0.1",
    "[::ffff:127.0.0.1]",
    "[::127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
]

ANSWERS = {
    "rebind.example": ["127.0.0.1"],
    "nat64.example": ["64:ff9b::7f00:1"],
    "fcm.googleapis.com": ["127.0.0.1"],  # an allowed push service whose DNS points here
}


async def resolve(host: str, port: int) -> list[str]:
    """DNS, except that the names in ``ANSWERS`` point at this machine and ``gone.example``
    does not resolve."""
    if host == "gone.example":
        raise OSError(-2, "Name or service not known")
    return ANSWERS[host] if host in ANSWERS else await system_resolve(host, port)


class Listener:
    def __init__(self) -> None:
        self.connections = 0
        self.hosts: list[str] = []  # each request's Host header
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.strip().lower() == "host":
                    self.hosts.append(value.strip())
                if name.strip().lower() == "content-length":
                    await reader.readexactly(int(value))
            writer.write(b"HTTP/1.1 201 Created\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> Listener:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    async with Listener() as served:
        yield served
