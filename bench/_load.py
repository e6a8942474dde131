"""A small, cheap HTTP/1.1 keep-alive load generator (raw asyncio streams), so that the client
spends as little of this 2-core machine's CPU as possible. Shared by the benchmarks."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

TICK = os.sysconf("SC_CLK_TCK")


def cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """User + system CPU seconds of each of these processes so far (Linux /proc); processes
    that are gone are left out."""
    cpu: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu[pid] = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    return cpu


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (Linux /proc)."""
    return sum(cpu_by_pid(pids).values())


async def database_cpu(database_url: str | None) -> dict[int, float]:
    """PostgreSQL on this machine: CPU seconds so far of each server process serving the
    database (:func:`cpu_by_pid`); empty for SQLite or when they cannot be read."""
    if not database_url or not database_url.startswith("postgresql"):
        return {}
    import asyncpg

    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg", "postgresql"))
    try:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await conn.close()
    return cpu_by_pid([row["pid"] for row in rows])


def cpu_since(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two :func:`database_cpu` readings (a process that started
    in between counts from zero)."""
    return sum(t - before.get(pid, 0.0) for pid, t in after.items())


@dataclass
class Result:
    name: str
    seconds: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    server_cpu_s: float | None = None  # the server's CPU time over the measured seconds
    database_cpu_s: float | None = None  # PostgreSQL's (its processes serving the database)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds

    def pct(self, p: float) -> float:
        if not self.latencies:
            return float("nan")
        data = sorted(self.latencies)
        return data[min(len(data) - 1, int(p / 100 * len(data)))] * 1000

    @property
    def cpu_us(self) -> float | None:
        """Server CPU per successful request (less sensitive to a busy machine than rates)."""
        if self.server_cpu_s is None or not self.ok:
            return None
        return self.server_cpu_s / self.ok * 1e6

    @property
    def database_cpu_us(self) -> float | None:
        """PostgreSQL's CPU per successful request."""
        if not self.database_cpu_s or not self.ok:
            return None
        return self.database_cpu_s / self.ok * 1e6

    def line(self) -> str:
        cpu = f"   server CPU {self.cpu_us:5.0f} us/req" if self.cpu_us is not None else ""
        if self.database_cpu_us is not None:
            cpu += f"   PostgreSQL CPU {self.database_cpu_us:5.0f} us/req"
        return (
            f"{self.name:<28} {self.rate:9.0f} req/s   p50 {self.pct(50):6.2f} ms   "
            f"p99 {self.pct(99):6.2f} ms{cpu}   statuses {dict(sorted(self.statuses.items()))}"
        )


def direct_request(app_id: str, secret: str, uid: str, message: str) -> bytes:
    """A raw keep-alive POST of a direct notification (``message`` already URL-safe)."""
    return (
        f"POST /v2/integrations/{app_id}/notification?uid={uid}&message={message} HTTP/1.1\r\n"
        f"Host: bench\r\nAuthorization: Bearer {secret}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One HTTP/1.1 message with a content-length (or none): its head and its body."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return head, await reader.readexactly(length) if length else b""


async def _read_response(reader: asyncio.StreamReader) -> int:
    head, _ = await read_message(reader)
    return int(head.split(b" ", 2)[1])


async def run_load(
    url: str,
    make_request: Callable[[int, int], bytes],
    *,
    name: str,
    clients: int = 32,
    seconds: float = 5.0,
    warmup: float = 1.0,
    server_pid: int | None = None,
    database_url: str | None = None,
) -> Result:
    """``clients`` connections send back-to-back requests for ``seconds`` after a warm-up.

    With ``server_pid``, the server's CPU time over the measured seconds is recorded too, and
    with a PostgreSQL ``database_url`` that of the database's server processes."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = Result(name, seconds)
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds

    async def client(n: int) -> None:
        reader, writer = await asyncio.open_connection(host, port)
        writer.transport.get_extra_info("socket").setsockopt(
            socket.IPPROTO_TCP, socket.TCP_NODELAY, 1
        )
        i = 0
        while True:
            t0 = time.perf_counter()
            if t0 >= stop_at:
                break
            i += 1
            writer.write(make_request(n, i))
            status = await _read_response(reader)
            t1 = time.perf_counter()
            if t0 >= measure_from:
                result.latencies.append(t1 - t0)
                result.statuses[status] = result.statuses.get(status, 0) + 1
        writer.close()

    async def server_cpu(pid: int) -> None:
        await asyncio.sleep(measure_from - time.perf_counter())
        before, database = cpu_seconds([pid]), await database_cpu(database_url)
        await asyncio.sleep(stop_at - time.perf_counter())
        result.server_cpu_s = cpu_seconds([pid]) - before
        if database:
            result.database_cpu_s = cpu_since(database, await database_cpu(database_url))

    tasks = [client(n) for n in range(clients)]
    if server_pid is not None:
        tasks.append(server_cpu(server_pid))
    await asyncio.gather(*tasks)
    return result


def start_server(
    data_dir: Path, env: dict[str, str], port: int, args: list[str] | None = None
) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "nudge.cli", "serve", "--port", str(port), *(args or [])],
        env=full_env,
        stdout=(data_dir / f"server-{port}.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server did not start; see {data_dir}/server-{port}.log")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.0f}"
