"""CPU per webhook call: WebhookClient.send over proactive/http1.py versus the aiohttp path it
replaced, A/B in one run.

    .venv/bin/python bench/webhooks.py [--calls 20000] [--concurrency 50] [--rounds 4]
        [--loop uvloop]

A minimal keep-alive HTTP/1.1 app server (like bench/proactive.py's) runs in its own process and
answers every call with ``{}``. Here, ``--concurrency`` tasks make ``--calls`` signed calls
through ``WebhookClient.send`` (a small JSON body, as the dispatcher sends), first on warmed-up
connections, once per transport per round, alternating. Printed per transport: calls/s and this
process's CPU time per call (time.process_time: the server's CPU is not counted), the median
over rounds, and the ratio. ``aiohttp`` is the previous client, kept here only as the reference:
one ClientSession with the guarded resolver and socket factory, a response class that records
the peer, and the bounded read.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import Connection

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import free_port  # noqa: E402

from nudge import __version__  # noqa: E402
from nudge.config import Settings  # noqa: E402
from nudge.proactive.http1 import Answer  # noqa: E402
from nudge.proactive.webhooks import (  # noqa: E402
    GuardedResolver,
    WebhookClient,
    WebhookRefused,
    WebhookResult,
    WebhookTarget,
    address_refusal,
)

SECRET = "whsec_" + base64.b64encode(b"a-bench-signing-secret-24").decode()
PAYLOAD = {
    "session_id": "sess_bench",
    "segments": [{"text": "We talked about the garden today.", "speaker": "SPEAKER_0"}],
}
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"


# --- the app server (its own process) ------------------------------------------------------


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            if length:
                await reader.readexactly(length)
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", port)
    print("ready", flush=True)
    await server.serve_forever()


# --- the previous aiohttp path (reference only) -------------------------------------------


class AiohttpResolver(AbstractResolver):
    """The old GuardedResolver's aiohttp face: the checked address only, then the socket gate."""

    def __init__(self, guard: GuardedResolver) -> None:
        self.guard = guard

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        address = await self.guard.checked_address(host, port)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": family,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        return None

    def guarded_socket(self, addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        reason = address_refusal(ipaddress.ip_address(sockaddr[0]), self.guard.allow_private)
        if reason:
            raise WebhookRefused(reason)
        return socket.socket(family=family, type=type_, proto=proto)


class PeerResponse(aiohttp.ClientResponse):
    peer: str | None = None

    async def start(self, connection: Connection) -> aiohttp.ClientResponse:
        transport = connection.transport
        peer = transport.get_extra_info("peername") if transport else None
        self.peer = f"{peer[0]}:{peer[1]}" if peer else None
        return await super().start(connection)


async def _read_bounded(response: aiohttp.ClientResponse, limit: int) -> tuple[bytes, str | None]:
    declared = response.content_length
    if declared is not None and declared <= limit and "content-encoding" not in response.headers:
        return await response.read(), None
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.content.iter_chunked(65_536):
        size += len(chunk)
        if size > limit:
            return b"".join(chunks), f"answer over {limit} bytes; cut off"
        chunks.append(chunk)
    return b"".join(chunks), None


class AiohttpWebhookClient(WebhookClient):
    """WebhookClient with the previous transport: signing, breaker and lanes are the same."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.old_resolver = AiohttpResolver(self.resolver)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=0,
                resolver=self.old_resolver,
                use_dns_cache=False,
                socket_factory=self.old_resolver.guarded_socket,
            ),
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=settings.webhook_connect_timeout_s
            ),
            headers={"user-agent": f"Nudge-Webhooks/{__version__}"},
            trust_env=False,
            response_class=PeerResponse,
        )
        self.http.request = self._aiohttp_request  # type: ignore[method-assign]

    async def _aiohttp_request(
        self,
        method: str,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        limit: int,
        timeout_s: float,
    ) -> Answer:
        async with (
            asyncio.timeout(timeout_s),
            self.session.request(
                method,
                url,
                params=params,
                data=body or None,
                headers=headers,
                allow_redirects=False,
            ) as response,
        ):
            answer, error = await _read_bounded(response, limit)
            peer = response.peer if isinstance(response, PeerResponse) else ""
            return Answer(response.status, dict(response.headers), answer, error, peer or "")

    async def aclose(self) -> None:
        await self.session.close()


# --- the measurement -----------------------------------------------------------------------


async def run(client: WebhookClient, url: str, calls: int, concurrency: int) -> tuple[float, float]:
    """``calls`` sends from ``concurrency`` tasks; returns (calls/s, CPU µs per call)."""
    target = WebhookTarget("app_bench", SECRET)
    left = calls
    failures: list[WebhookResult] = []

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            result = await client.send(
                target,
                "POST",
                url,
                params={"session_id": "sess_bench", "uid": "u1"},
                payload=PAYLOAD,
            )
            if not result.ok:
                failures.append(result)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if failures:
        raise SystemExit(f"{len(failures)} calls failed, e.g. {failures[0].error}")
    return calls / wall, cpu / calls * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="per transport per round")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await serve(args.serve)
        return

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE
    )
    assert server.stdout is not None
    server.stdout.readline()
    settings = Settings(
        allow_private_webhooks=True,
        webhook_concurrency_per_app=args.concurrency,
        llm_provider="fake",
    )
    clients: dict[str, WebhookClient] = {
        "http1": WebhookClient(settings),
        "aiohttp": AiohttpWebhookClient(settings),
    }
    url = f"http://127.0.0.1:{port}/hook"
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in clients}
    try:
        for client in clients.values():  # warm-up: connections open, caches filled
            await run(client, url, 2000, args.concurrency)
        for n in range(args.rounds):
            order = list(clients) if n % 2 == 0 else list(reversed(clients))
            for name in order:
                rate, cpu_us = await run(clients[name], url, args.calls, args.concurrency)
                results[name].append((rate, cpu_us))
                print(f"round {n + 1}  {name:<8} {rate:8.0f} calls/s  {cpu_us:6.1f} µs CPU/call")
    finally:
        for client in clients.values():
            await client.aclose()
        server.terminate()
        server.wait(10)
    median = {name: statistics.median(c for _, c in rows) for name, rows in results.items()}
    rates = {name: statistics.median(r for r, _ in rows) for name, rows in results.items()}
    print(f"\n{args.calls} calls x {args.rounds} rounds, {args.concurrency} at once, {args.loop}")
    for name in clients:
        print(f"{name:<8} median {rates[name]:8.0f} calls/s  {median[name]:6.1f} µs CPU/call")
    print(f"http1 / aiohttp CPU per call: {median['http1'] / median['aiohttp']:.2f}")


if __name__ == "__main__":
    options = sys.argv[1:]
    if "--loop" in options and options[options.index("--loop") + 1] == "asyncio":
        asyncio.run(main())
    else:
        import uvloop

        uvloop.run(main())
