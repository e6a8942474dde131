"""A bare TCP listener on 127.0.0.1 that counts connections and answers any HTTP request with
201: a call the guard should have refused shows up here (and, answered, looks successful)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


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
