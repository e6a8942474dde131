"""Push delivery to the local fake FCM: deliveries per second, and acceptance-to-provider latency.

    .venv/bin/python bench/delivery.py [--notifications 10000] [--rate 500] [--database-url URL]
                                       [--transports aiohttp,httpx] [--rounds 1] [--loop uvloop]

The fake FCM (OAuth2 token endpoint + HTTP v1 send API) runs in its own process under uvicorn so
that it does not share the worker's event loop; the platform runs here, with SQLite by default,
on uvloop as ``nudge serve`` runs it. Each notification goes to one user's FCM device (and their
inbox). Two runs:

  drain  N notifications are accepted with no worker running; then a worker starts and we time
         until every FCM delivery is recorded as delivered: deliveries/s, the worker's CPU time
         per delivery (and PostgreSQL's, on this machine) and the fake's per request. Once per
         push HTTP transport (NUDGE_PUSH_HTTP_TRANSPORT), alternating, ``--rounds`` times: an
         A/B in one run.
  live   N more are accepted at --rate per second while the worker (first transport) runs; for
         each, the time from acceptance (the accept call returned: durably queued) to the fake
         receiving the FCM call. ``--rate 0`` skips it.

The machine's other load moves deliveries/s a lot; CPU per delivery much less. Target (issue 3):
at least 2,000 deliveries/s.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from sqlalchemy import Connection, insert

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _load import cpu_seconds, cpu_since, database_cpu  # noqa: E402
from tests.fakes.asgi import free_port  # noqa: E402
from tests.fakes.process import start_fcm  # noqa: E402

from nudge.api.app import tune_garbage_collector  # noqa: E402
from nudge.config import Settings  # noqa: E402
from nudge.core.apps import create_app  # noqa: E402
from nudge.core.manifest import Manifest  # noqa: E402
from nudge.core.notifications import NotificationRequest  # noqa: E402
from nudge.platform import Platform  # noqa: E402
from nudge.store.models import Device, Install, User  # noqa: E402

USERS = 1000
DELIVERED = {"provider": "fcm", "outcome": "delivered"}


def add_users(conn: Connection, uids: list[str], platform: str, now: float) -> dict[str, str]:
    """An app, and ``uids`` as users who installed it, each with one device on ``platform``
    (bulk rows: setup is not timed); returns the app."""
    app = create_app(conn, Manifest(name="Bench"), direct_limit_per_hour=1_000_000)
    conn.execute(
        insert(User),
        [{"uid": u, "name": u, "token_hash": f"bench-{u}", "created_at": now} for u in uids],
    )
    conn.execute(
        insert(Install),
        [{"uid": u, "app_id": app["app_id"], "scopes": [], "installed_at": now} for u in uids],
    )
    conn.execute(
        insert(Device),
        [
            {
                "id": f"dev_{u}",
                "uid": u,
                "platform": platform,
                "token": f"{platform}-token-{u}",
                "subscription": None,
                "created_at": now,
            }
            for u in uids
        ],
    )
    return app


async def setup(platform: Platform) -> str:
    """An app, USERS users who installed it, one FCM device each."""
    uids = [f"u{i}" for i in range(USERS)]
    app = await platform.db.write_alone(lambda conn: add_users(conn, uids, "fcm", time.time()))
    return app["app_id"]


async def accept(platform: Platform, app_id: str, n: int, tag: str) -> tuple[str, float]:
    """Accept one notification; returns its id and the moment it was durably queued."""
    request = NotificationRequest(app_id=app_id, uid=f"u{n % USERS}", message=f"{tag} {n}")
    accepted = await platform.acceptor.accept(request)
    at = time.time()
    await platform.bus.wake_workers()
    return accepted.notification_id, at


def delivered(platform: Platform) -> float:
    return platform.metrics.registry.get_sample_value("nudge_deliveries_total", DELIVERED) or 0.0


async def wait_delivered(platform: Platform, count: int, timeout: float) -> float:
    """Wait until this platform recorded ``count`` FCM deliveries; returns when (perf_counter)."""
    deadline = time.perf_counter() + timeout
    while delivered(platform) < count:
        if time.perf_counter() > deadline:
            raise SystemExit(f"only {delivered(platform):.0f} of {count} delivered in {timeout} s")
        await asyncio.sleep(0.01)
    return time.perf_counter()


async def drain(
    base: Settings, transport: str, app_id: str, n: int, fake_pid: int, tag: str
) -> None:
    """Accept ``n`` with no worker running, then time one worker delivering them all."""
    settings = base.model_copy(update={"push_http_transport": transport})
    api = await Platform.start(settings.model_copy(update={"role": "api"}), migrate=False)
    for chunk in range(0, n, 1000):
        await asyncio.gather(
            *(accept(api, app_id, i, tag) for i in range(chunk, min(n, chunk + 1000)))
        )
    await api.close()
    load = os.getloadavg()[0]
    worker = await Platform.start(settings.model_copy(update={"role": "worker"}), migrate=False)
    tune_garbage_collector()  # as `nudge serve` does after start-up
    database = await database_cpu(settings.database_url)
    started, cpu, fake_cpu = (
        time.perf_counter(),
        cpu_seconds([os.getpid()]),
        cpu_seconds([fake_pid]),
    )
    finished = await wait_delivered(worker, n, timeout=300)
    cpu_us = (cpu_seconds([os.getpid()]) - cpu) / n * 1e6
    fake_us = (cpu_seconds([fake_pid]) - fake_cpu) / n * 1e6
    database_us = cpu_since(database, await database_cpu(settings.database_url)) / n * 1e6
    await worker.close()
    drain_s = finished - started
    postgres = f", PostgreSQL {database_us:.0f} us" if database_us else ""
    print(
        f"drain {transport:7s} {n} FCM deliveries sent and recorded in "
        f"{drain_s:.2f} s: {n / drain_s:,.0f}/s (target >= 2,000/s); worker CPU {cpu_us:.0f} us "
        f"per delivery ({1e6 / cpu_us:,.0f}/s per free core){postgres}, fake FCM "
        f"{fake_us:.0f} us per request; load average {load:.1f}",
        flush=True,
    )


def pct(values: list[float], p: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(p / 100 * len(data)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notifications", type=int, default=10_000)
    parser.add_argument(
        "--rate", type=float, default=500.0, help="offered rate of the live run (0: no live run)"
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--transports",
        default="aiohttp,httpx",
        help="NUDGE_PUSH_HTTP_TRANSPORT values to drain with, in turn (the first also runs live)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="drains per transport")
    args = parser.parse_args()
    n = args.notifications
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="nudge-bench-delivery-") as tmp:
        data = Path(tmp)
        port = free_port()
        fake = start_fcm(port, data / "service-account.json")
        try:
            base = Settings(
                data_dir=data,
                database_url=args.database_url or f"sqlite+aiosqlite:///{data}/nudge.db",
                admin_token="bench",
                llm_provider="fake",
                fcm_base_url=f"http://127.0.0.1:{port}",
                fcm_credentials_file=str(data / "service-account.json"),
                log_level="WARNING",
            )
            db_name = base.database_url.split(":")[0]
            print(
                f"nudge bench/delivery: {n} notifications per run, {USERS} users with one FCM "
                f"device each, database {db_name}, concurrency {base.delivery_concurrency}, "
                f"fake FCM in its own process",
                flush=True,
            )

            api = await Platform.start(base.model_copy(update={"role": "api"}))
            app_id = await setup(api)
            await api.close()
            transports = args.transports.split(",")
            for r in range(args.rounds):
                for transport in transports:
                    await drain(base, transport, app_id, n, fake.pid, f"drain {r} {transport}")

            if args.rate <= 0:
                return
            # live: accept at a steady rate while the worker delivers.
            live_settings = base.model_copy(
                update={"role": "all", "push_http_transport": transports[0]}
            )
            live = await Platform.start(live_settings, migrate=False)
            tune_garbage_collector()
            accepted: dict[str, float] = {}
            tasks = []
            t0 = time.perf_counter()
            for i in range(n):
                due = t0 + i / args.rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(accept(live, app_id, i, "live")))
            for nid, at in await asyncio.gather(*tasks):
                accepted[nid] = at
            offered_s = time.perf_counter() - t0
            await wait_delivered(live, n, timeout=300)
            await live.close()
            receipts = httpx.get(f"http://127.0.0.1:{port}/_fake/receipts", timeout=30).json()
            latencies = [
                (at - accepted[nid]) * 1000 for nid, at in receipts["receipts"] if nid in accepted
            ]
            print(
                f"live {transports[0]:7s} {n} at {n / offered_s:,.0f}/s offered: "
                f"acceptance -> FCM call "
                f"p50 {pct(latencies, 50):.1f} ms  p99 {pct(latencies, 99):.1f} ms  "
                f"max {max(latencies):.1f} ms  mean {statistics.fmean(latencies):.1f} ms "
                f"({len(latencies)} calls)",
                flush=True,
            )
        finally:
            fake.terminate()
            fake.wait(10)


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
