"""The acceptance batch alone: CPU per accepted notification, without HTTP.

    .venv/bin/python bench/accept_batch.py [--sizes 1,8,16,32] [--rounds 8] [--per-round 1600]
                                           [--users 500] [--database-url URL]

Runs ``nudge.core.notifications.accept_batch`` in write transactions on a fresh database
(SQLite file by default; a PostgreSQL URL works too, on a database you can drop), as the
Acceptor does, for distinct direct notifications from one app to ``--users`` users, and prints
the process CPU time per request for each batch size, and the wall time (on PostgreSQL the
server's work and the round trips are not in this process's CPU); on a PostgreSQL on this
machine also the CPU of the database's backends (from /proc, in clock ticks of 10 ms: a round
of 1,600 requests spans tens of ticks). The sizes take turns round by
round, so the machine's other load touches them alike; the table grows as it runs (as in
bench/direct.py), which the later rounds show. Under ``bench/direct.py``'s 32 clients the
batches hold about 16.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from functools import partial
from itertools import count
from pathlib import Path

from sqlalchemy import Connection, insert, text

from nudge.core.notifications import Limits, NotificationRequest, accept_batch  # noqa: E402
from nudge.ids import hash_secret  # noqa: E402
from nudge.store.db import Database  # noqa: E402
from nudge.store.migrate import upgrade  # noqa: E402
from nudge.store.models import App, AppKey, Install, User  # noqa: E402

SECRET = "sk_" + "ab" * 16
LIMITS = Limits(default_per_hour=1_000_000, dedupe_window_s=60.0)
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


async def backend_cpu(db: Database) -> dict[int, float]:
    """PostgreSQL: CPU seconds used so far by each backend of the bench's database (empty when
    the server's processes cannot be read here, e.g. it runs on another machine)."""
    if not db.is_postgres:
        return {}
    query = text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
    pids = await db.query(lambda conn: list(conn.execute(query).scalars()))
    cpu: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        cpu[pid] = (int(fields[11]) + int(fields[12])) * TICK_S  # utime + stime
    return cpu


def seed(conn: Connection, users: int) -> None:
    now = time.time()
    conn.execute(
        insert(App),
        [
            dict(
                id="app_bench",
                name="Bench",
                description="",
                manifest={},
                webhook_secret="whsec_bench",
                direct_limit_per_hour=1_000_000,
                status="active",
                status_reason="",
                created_at=now,
            )
        ],
    )
    key = dict(id="key_bench", app_id="app_bench", key_hash=hash_secret(SECRET), hint="sk_a")
    conn.execute(insert(AppKey), [key | {"created_at": now}])
    uids = [f"u{i}" for i in range(users)]
    conn.execute(insert(User), [dict(uid=u, name=u, token_hash=u, created_at=now) for u in uids])
    conn.execute(
        insert(Install),
        [dict(uid=u, app_id="app_bench", scopes=[], installed_at=now) for u in uids],
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,8,16,32")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--per-round", type=int, default=1600, help="requests per size and round")
    parser.add_argument("--users", type=int, default=500)
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="nudge-bench-") as tmp:
        url = args.database_url or f"sqlite+aiosqlite:///{tmp}/nudge.db"
        await upgrade(url)
        db = Database(url)
        numbers = count()
        try:
            await db.write_alone(lambda conn: seed(conn, args.users))

            def requests(size: int) -> list[NotificationRequest]:
                return [
                    NotificationRequest(
                        app_id="app_bench",
                        uid=f"u{(n * 7919) % args.users}",
                        message=f"bench {n}",
                        key_hash=hash_secret(SECRET),
                    )
                    for n in (next(numbers) for _ in range(size))
                ]

            # As the Acceptor writes (a commit before write_keyed wrote through db.write).
            write = getattr(db, "write_keyed", db.write)

            async def one_round(size: int) -> tuple[float, float, float]:
                batches = max(1, args.per_round // size)
                server = await backend_cpu(db)
                started, wall = time.process_time(), time.perf_counter()
                for _ in range(batches):
                    batch = requests(size)
                    results = await write(
                        partial(
                            accept_batch, requests=batch, limits=LIMITS, lock_rows=db.is_postgres
                        )
                    )
                    if any(isinstance(r, Exception) for r in results):
                        raise SystemExit(f"a request was refused: {results}")
                n = batches * size
                cpu, wall = time.process_time() - started, time.perf_counter() - wall
                after = await backend_cpu(db)
                server_s = sum(t - server.get(pid, 0.0) for pid, t in after.items())
                return cpu / n * 1e6, wall / n * 1e6, server_s / n * 1e6

            print(
                f"nudge bench/accept_batch: {url.split(':')[0]}, {args.users} users, "
                f"{args.rounds} rounds of {args.per_round} requests per batch size",
                flush=True,
            )
            per_size: dict[int, list[tuple[float, float, float]]] = {size: [] for size in sizes}
            for n in range(args.rounds):
                for size in sizes:
                    per_size[size].append(await one_round(size))
                print(f"  round {n + 1}/{args.rounds} done", flush=True)
            for size, values in per_size.items():
                rounds = " ".join(f"{v[0]:.0f}" for v in values)
                cpu, wall, server = (statistics.median(v[i] for v in values) for i in range(3))
                database = f", {server:6.1f} us PostgreSQL CPU" if db.is_postgres else ""
                print(
                    f"batch {size:3d}: median {cpu:6.1f} us CPU{database}, {wall:6.1f} us wall"
                    f" per request   (CPU by round: {rounds})"
                )
        finally:
            await db.close()


if __name__ == "__main__":
    asyncio.run(main())
