"""CPU per webhook call: WebhookClient.send over net/http1.py versus the aiohttp path it
replaced, A/B in one run.

    .venv/bin/python bench/webhooks.py [--calls 20000] [--concurrency 50] [--rounds 4]
        [--loop uvloop]

A minimal keep-alive HTTP/1.1 app server (like bench/proactive.py's) runs in its own process and
answers every call with ``{}``. Here, ``--concurrency`` tasks make ``--calls`` calls with a small
signed JSON body (as the dispatcher sends) on warmed-up connections, per variant per round, the
order reversed every other round:

  send/<transport>  WebhookClient.send: signing, breaker, lane and the exchange;
  bare/<transport>  the transport's request alone (headers signed once, beforehand).

Printed: calls/s and this process's CPU time per call (time.process_time: the server's CPU is not
counted), the medians over rounds, and the http1 / aiohttp ratios. ``aiohttp`` is the previous
client, kept here only as the reference: one ClientSession with the guarded resolver and socket
factory, a response class that records the peer, the bounded read, asyncio.timeout around it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import ipaddress
import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import aiohttp
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.connector import Connection
from standardwebhooks import Webhook

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import free_port, read_message  # noqa: E402

from nudge import __version__  # noqa: E402
from nudge.config import Settings  # noqa: E402
from nudge.net.http1 import Answer  # noqa: E402
from nudge.net.webhooks import (  # noqa: E402
    GuardedResolver,
    WebhookClient,
    WebhookRefused,
    WebhookTarget,
    address_refusal,
    sign,
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
            await read_message(reader)
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


Call = Callable[[], Awaitable[str | None]]  # one call; its error, or None


def variants(clients: dict[str, WebhookClient], url: str) -> dict[str, Call]:
    """Per transport: ``send`` (WebhookClient.send: signing, breaker, lane, the exchange) and
    ``bare`` (the transport's request alone, with headers signed once)."""
    target = WebhookTarget("app_bench", SECRET)
    params = {"session_id": "sess_bench", "uid": "u1"}
    body = json.dumps(PAYLOAD, separators=(",", ":"))
    headers = sign(Webhook(SECRET), "msg_bench", int(time.time()), body)
    headers["content-type"] = "application/json"
    found: dict[str, Call] = {}
    for name, client in clients.items():

        async def send(client: WebhookClient = client) -> str | None:
            result = await client.send(target, "POST", url, params=params, payload=PAYLOAD)
            return None if result.ok else result.error or "failed"

        async def bare(client: WebhookClient = client) -> str | None:
            answer = await client.http.request(
                "POST",
                url,
                params=params,
                headers=headers,
                body=body.encode(),
                limit=1_000_000,
                timeout_s=15,
            )
            return None if answer.status == 200 else f"HTTP {answer.status}"

        found[f"send/{name}"], found[f"bare/{name}"] = send, bare
    return found


async def run(call: Call, calls: int, concurrency: int) -> tuple[float, float]:
    """``calls`` calls from ``concurrency`` tasks; returns (calls/s, CPU µs per call)."""
    left = calls
    failures: list[str] = []

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            error = await call()
            if error:
                failures.append(error)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if failures:
        raise SystemExit(f"{len(failures)} calls failed, e.g. {failures[0]}")
    return calls / wall, cpu / calls * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="per variant per round")
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
    calls = variants(clients, f"http://127.0.0.1:{port}/hook")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in calls}
    try:
        for call in calls.values():  # warm-up: connections open, caches filled
            await run(call, 2000, args.concurrency)
        for n in range(args.rounds):
            order = list(calls) if n % 2 == 0 else list(reversed(calls))
            for name in order:
                rate, cpu_us = await run(calls[name], args.calls, args.concurrency)
                results[name].append((rate, cpu_us))
                print(f"round {n + 1}  {name:<13} {rate:7.0f} calls/s  {cpu_us:6.1f} µs CPU/call")
    finally:
        for client in clients.values():
            await client.aclose()
        server.terminate()
        server.wait(10)
    median = {name: statistics.median(c for _, c in rows) for name, rows in results.items()}
    rates = {name: statistics.median(r for r, _ in rows) for name, rows in results.items()}
    print(f"\n{args.calls} calls x {args.rounds} rounds, {args.concurrency} at once, {args.loop}")
    for name in calls:
        print(f"{name:<13} median {rates[name]:7.0f} calls/s  {median[name]:6.1f} µs CPU/call")
    for kind in ("send", "bare"):
        ratio = median[f"{kind}/http1"] / median[f"{kind}/aiohttp"]
        print(f"{kind}: http1 / aiohttp CPU per call {ratio:.2f}")


if __name__ == "__main__":
    options = sys.argv[1:]
    if "--loop" in options and options[options.index("--loop") + 1] == "asyncio":
        asyncio.run(main())
    else:
        import uvloop

        uvloop.run(main())
