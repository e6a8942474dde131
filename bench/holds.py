"""Held notifications at scale (issue 17): release lag and CPU per held notification.

    .venv/bin/python bench/holds.py [--users 10000] [--per-user 10] [--spread 10]
                                    [--database-url URL]

Holds ``users * per-user`` notifications (100,000 by default) as quiet hours and digests do:
each user's pushes wait for the end of the user's window (``next_attempt_at``), the windows ending
over ``--spread`` seconds (as many ending at once as time zones and digest windows line up);
their inbox deliveries are already done, as acceptance leaves them. The rows go in through the
store directly (setup, not timed). Then a delivery worker (``Platform.start`` with the worker
role, as ``nudge serve --role worker`` runs it, on uvloop) releases them: each user has one
device on the log provider, so what is measured is the queue's work (claims, summaries, the
results written), not a push service's. Printed: the release lag (``delivered_at -
next_attempt_at``: from the end of a window to the summary carrying it being recorded) p50 / p99 /
max, the worker process's CPU time per held notification (and PostgreSQL's, on PostgreSQL), and
how many pushes carried them (one per user when a user's held pushes are claimed together).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import Connection, insert, select

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from _load import cpu_seconds, cpu_since, database_cpu  # noqa: E402

from delivery import add_users  # noqa: E402
from nudge.api.app import tune_garbage_collector  # noqa: E402
from nudge.config import Settings  # noqa: E402
from nudge.ids import new_id  # noqa: E402
from nudge.platform import Platform  # noqa: E402
from nudge.store.models import Delivery, Notification  # noqa: E402
from nudge.store.notifications import HELD_STATE  # noqa: E402

CHUNK = 10_000  # rows per insert statement group (keeps PostgreSQL's parameters in bounds)


def setup(conn: Connection, users: int, per_user: int, first_end: float, spread: float) -> int:
    """The users, each with the app installed and one log device, and their held notifications
    (half quiet hours, half digests); returns how many notifications."""
    now = time.time()
    uids = [f"u{i:05d}" for i in range(users)]
    app = add_users(conn, uids, "log", now)
    notifications, deliveries = [], []
    for i, uid in enumerate(uids):
        window_end = first_end + spread * (i % 1000) / 1000  # 1,000 distinct window ends
        hold = "quiet" if i % 2 else "digest"
        for k in range(per_user):
            nid = new_id("n")  # a real id: retention reads the time in it
            created = now - (per_user - k)  # the last one is the newest
            notifications.append(
                {
                    "id": nid,
                    "app_id": app["app_id"],
                    "uid": uid,
                    "kind": "direct",
                    "type": "",
                    "title": "Bench says",
                    "body": f"held message {k}",
                    "data": {"app_id": app["app_id"], "notification_id": nid, "type": "direct"},
                    "dedupe_hash": f"{uid}-{k}",
                    "collapse_key": f"{uid}-{k}",
                    "created_at": created,
                    "hold": hold,
                    "hold_reason": "held by bench/holds.py",
                }
            )
            common = {"notification_id": nid, "attempts": 0, "last_error": ""}
            deliveries.append(
                common
                | {
                    "id": new_id("d"),
                    "provider": "inbox",
                    "device_id": None,
                    "state": "delivered",
                    "next_attempt_at": created,
                    "created_at": created,
                    "updated_at": created,
                    "delivered_at": created,
                }
            )
            deliveries.append(
                common
                | {
                    "id": new_id("d"),
                    "provider": "log",
                    "device_id": f"dev_{uid}",
                    "state": HELD_STATE,
                    "next_attempt_at": window_end,
                    "created_at": created,
                    "updated_at": created,
                    "delivered_at": None,
                }
            )
    for model, rows in ((Notification, notifications), (Delivery, deliveries)):
        for start in range(0, len(rows), CHUNK):
            conn.execute(insert(model), rows[start : start + CHUNK])
    return len(notifications)


def released(platform: Platform) -> float:
    """Held pushes recorded so far: sent (a summary) or merged into one."""
    registry = platform.metrics.registry
    return sum(
        registry.get_sample_value("nudge_deliveries_total", {"provider": "log", "outcome": outcome})
        or 0.0
        for outcome in ("delivered", "merged")
    )


def lags(conn: Connection) -> tuple[list[float], int, int]:
    """Each held push's release lag, and how many pushes carried them and were merged."""
    rows = conn.execute(
        select(Delivery.state, Delivery.delivered_at, Delivery.next_attempt_at).where(
            Delivery.provider == "log"
        )
    ).all()
    lag = [r.delivered_at - r.next_attempt_at for r in rows if r.delivered_at is not None]
    pushes = sum(1 for r in rows if r.state == "delivered")
    merged = sum(1 for r in rows if r.state == "merged")
    return lag, pushes, merged


def pct(values: list[float], p: float) -> float:
    data = sorted(values)
    return data[min(len(data) - 1, int(p / 100 * len(data)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument(
        "--spread", type=float, default=10.0, help="seconds over which the windows end"
    )
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="nudge-bench-holds-") as tmp:
        data = Path(tmp)
        settings = Settings(
            data_dir=data,
            database_url=args.database_url or f"sqlite+aiosqlite:///{data}/nudge.db",
            admin_token="bench",
            llm_provider="fake",
            log_level="WARNING",
        )
        api = await Platform.start(settings.model_copy(update={"role": "api"}))
        started = time.perf_counter()
        first_end = time.time() + 3600  # moved to just after start-up below
        n = await api.db.write_alone(
            lambda conn: setup(conn, args.users, args.per_user, first_end, args.spread)
        )
        setup_s = time.perf_counter() - started
        await api.close()
        db_name = settings.database_url.split(":")[0]
        print(
            f"nudge bench/holds: {n:,} held notifications for {args.users:,} users "
            f"({args.per_user} each, one log device each), windows ending over {args.spread} s, "
            f"database {db_name}; set up in {setup_s:.1f} s",
            flush=True,
        )

        worker = await Platform.start(settings.model_copy(update={"role": "worker"}), migrate=False)
        tune_garbage_collector()  # as `nudge serve` does after start-up
        # The windows end from now + 2 s (the worker is idle and waiting by then).
        shift = time.time() + 2.0 - first_end
        await worker.db.write_alone(
            lambda conn: conn.execute(
                Delivery.__table__.update()
                .where(Delivery.provider == "log")
                .values(next_attempt_at=Delivery.next_attempt_at + shift)
            )
        )
        await asyncio.sleep(max(0.0, first_end + shift - time.time()))
        load = os.getloadavg()[0]
        cpu = cpu_seconds([os.getpid()])
        database = await database_cpu(settings.database_url)
        deadline = time.time() + args.spread + 600
        while released(worker) < n:
            if time.time() > deadline:
                raise SystemExit(f"only {released(worker):.0f} of {n} released")
            await asyncio.sleep(0.05)
        cpu_us = (cpu_seconds([os.getpid()]) - cpu) / n * 1e6
        database_us = cpu_since(database, await database_cpu(settings.database_url)) / n * 1e6
        lag, pushes, merged = await worker.db.query(lags)
        await worker.close()
    postgres = f", PostgreSQL {database_us:.0f} us" if database_us else ""
    print(
        f"released {len(lag):,} held notifications as {pushes:,} pushes ({merged:,} merged): "
        f"release lag p50 {pct(lag, 50) * 1000:.0f} ms, p99 {pct(lag, 99) * 1000:.0f} ms, "
        f"max {max(lag) * 1000:.0f} ms; worker CPU {cpu_us:.0f} us per held notification"
        f"{postgres}; load average {load:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
