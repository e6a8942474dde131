"""Scale-out: accepted and delivered notifications per second with 1, 2 and 4 processes on
PostgreSQL, next to one process on SQLite, in one run.

    .venv/bin/python bench/scale.py [--seconds 8] [--clients 32] [--users 200] [--redis-url URL]
                                    [--processes 1,2,4] [--no-split] [--postgres-url URL]

Each configuration gets a fresh database (PostgreSQL: created and dropped here) and N
``nudge serve --role all`` processes (API and worker in each), sharing the FCM fake, which runs in
a process of its own. Every user has one FCM device, so each notification is two deliveries (FCM
and the inbox). The load generator opens ``--clients`` keep-alive HTTP/1.1 connections to each
process (one adds processes when load grows) and sends distinct direct notifications for
``--seconds`` after a 1 s warm-up; the workers deliver meanwhile. Printed per configuration:

  accepted/s    answered 200 per second during the measured window
  delivered/s   FCM deliveries recorded ``delivered``, divided by the time from the start of the
                load until the last one was (deliveries keep up if this is close to accepted/s)
  backlog       deliveries not yet done when the load stopped
  PG commits    transactions committed in the configuration's database per notification
  CPU ms/notif  CPU time per accepted notification: nudge processes, PostgreSQL (every postgres
                process on the machine, so other work there counts too), the FCM fake, and this
                load generator; with ``--role api`` and ``--role worker`` processes (the last
                configuration) the nudge CPU is shown per role
  RSS           the largest resident memory of one nudge process at the end
  WAL, disk     PostgreSQL WAL written (the whole server's, so approximate) and database growth,
                per notification

Everything shares this machine's cores (``nproc``), so the processes compete with PostgreSQL, the
fake and the load generator; the CPU columns are what the capacity model in docs/deploy.md uses.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from _load import cpu_seconds, direct_request, free_port, run_load, start_server  # noqa: E402
from tests.fakes.process import start_fcm  # noqa: E402

from nudge.bus.transport import asyncpg_dsn  # noqa: E402
from nudge.store.migrate import upgrade  # noqa: E402

ADMIN = "bench-admin"


def postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@dataclass
class Outcome:
    name: str
    accepted_rate: float
    delivered_rate: float
    backlog: int
    notifications: int
    cpu_ms: dict[str, float]
    commits: float
    wal_kb: float
    disk_kb: float
    rss_mb: float
    errors: dict[int, int]

    def line(self) -> str:
        cpu = "  ".join(f"{k} {v:.2f}" for k, v in self.cpu_ms.items())
        bad = f"   non-200: {self.errors}" if self.errors else ""
        return (
            f"{self.name:<22} {self.accepted_rate:6.0f} accepted/s {self.delivered_rate:6.0f} "
            f"delivered/s  backlog {self.backlog:4d}  PG/notif {self.commits:.2f} commits "
            f"{self.wal_kb:.1f} KB WAL {self.disk_kb:.1f} KB disk  RSS {self.rss_mb:.0f} MB\n"
            f"{'':<22} CPU ms/notif: {cpu}{bad}"
        )


async def pg_stats(database_url: str) -> tuple[int, int, int]:
    """(transactions committed in this database, WAL position of the server, database size in
    bytes) so far; zeros on SQLite. The WAL position counts every database of the server."""
    if database_url.startswith("sqlite"):
        return 0, 0, 0
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS wal,"
            " pg_database_size(datname) AS size"
            " FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await conn.close()
    return int(row["xact_commit"]), int(row["wal"]), int(row["size"])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def counts(database_url: str) -> tuple[int, int]:
    """(FCM deliveries delivered, FCM deliveries in all)."""
    query = (
        "SELECT count(*) FILTER (WHERE state = 'delivered'), count(*) FROM deliveries"
        " WHERE provider = 'fcm'"
    )
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        with sqlite3.connect(path, timeout=30) as db:
            row = db.execute(query).fetchone()
        return int(row[0]), int(row[1])
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        row = await conn.fetchrow(query)
    finally:
        await conn.close()
    return int(row[0]), int(row[1])


async def setup(url: str, users: int) -> tuple[str, str]:
    """An app without a practical hourly limit and ``users`` users, each with an FCM device."""
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
    ) as c:
        r = await c.post(
            "/v1/apps", json={"manifest": {"name": "Bench"}, "direct_limit_per_hour": 1_000_000}
        )
        r.raise_for_status()
        app = r.json()
        sem = asyncio.Semaphore(16)

        async def user(i: int) -> None:
            async with sem:
                uid = f"u{i}"
                (await c.post("/v1/users", json={"uid": uid, "name": uid})).raise_for_status()
                r = await c.post(f"/v1/users/{uid}/apps/{app['app_id']}", json={"scopes": []})
                r.raise_for_status()
                r = await c.post(
                    f"/v1/users/{uid}/devices", json={"platform": "fcm", "token": f"fcm-{uid}"}
                )
                r.raise_for_status()

        await asyncio.gather(*(user(i) for i in range(users)))
    return app["app_id"], app["app_secret"]


async def run_config(
    name: str,
    database_url: str,
    roles: list[str],
    args: argparse.Namespace,
    fcm_env: dict[str, str],
    fake: subprocess.Popen[bytes],
    data: Path,
) -> Outcome:
    """One ``nudge serve`` per entry of ``roles``; the load goes to those that serve the API."""
    await upgrade(database_url)  # once, before the processes start
    env = {
        "NUDGE_ADMIN_TOKEN": ADMIN,
        "NUDGE_DATA_DIR": str(data),
        "NUDGE_DATABASE_URL": database_url,
        "NUDGE_LOG_LEVEL": "WARNING",
        "NUDGE_LLM_PROVIDER": "fake",
        **fcm_env,
    }
    if args.redis_url and not database_url.startswith("sqlite"):
        env["NUDGE_REDIS_URL"] = args.redis_url
    ports = [free_port() for _ in roles]
    procs = await asyncio.gather(
        *(
            asyncio.to_thread(start_server, data, env, port, ["--role", role])
            for port, role in zip(ports, roles, strict=True)
        )
    )
    try:
        urls = [f"http://127.0.0.1:{p}" for p, r in zip(ports, roles, strict=True) if r != "worker"]
        app_id, secret = await setup(urls[0], args.users)
        tag = secrets.token_hex(3)

        def request_for(server: int) -> Callable[[int, int], bytes]:
            def make(n: int, i: int) -> bytes:
                uid = f"u{(n * 7919 + i) % args.users}"
                return direct_request(app_id, secret, uid, f"bench+{tag}+{server}+{n}+{i}")

            return make

        pg = postgres_pids()
        groups = {
            role: [p.pid for p, r in zip(procs, roles, strict=True) if r == role] for role in roles
        }

        def cpu_now() -> dict[str, float]:
            return {
                **{f"nudge {role}": cpu_seconds(pids) for role, pids in groups.items()},
                "postgres": cpu_seconds(pg),
                "fake": cpu_seconds([fake.pid]),
                "loadgen": time.process_time(),
            }

        before = cpu_now()
        commits_before, wal_before, size_before = await pg_stats(database_url)
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                run_load(url, request_for(i), name=name, clients=args.clients, seconds=args.seconds)
                for i, url in enumerate(urls)
            )
        )
        done, total = await counts(database_url)
        backlog = total - done
        deadline = time.monotonic() + 120
        while done < total and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            done, total = await counts(database_url)
        finished = time.perf_counter()
        after = cpu_now()
        commits_after, wal_after, size_after = await pg_stats(database_url)
        accepted = sum(r.ok for r in results)
        errors: dict[int, int] = {}
        for r in results:
            for status, n in r.statuses.items():
                if status != 200:
                    errors[status] = errors.get(status, 0) + n
        return Outcome(
            name=name,
            accepted_rate=accepted / args.seconds,
            delivered_rate=done / (finished - started) if done == total else 0.0,
            backlog=backlog,
            notifications=total,
            cpu_ms={k: (after[k] - before[k]) / total * 1000 for k in before},
            commits=(commits_after - commits_before) / total,
            wal_kb=(wal_after - wal_before) / total / 1024,
            disk_kb=(size_after - size_before) / total / 1024,
            rss_mb=max(rss_mb(p.pid) for p in procs),
            errors=errors,
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


async def postgres_database(base_url: str) -> str:
    name = "nudge_bench_" + secrets.token_hex(4)
    conn = await asyncpg.connect(asyncpg_dsn(base_url))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return base_url.rsplit("/", 1)[0] + "/" + name


async def drop_database(base_url: str, url: str) -> None:
    conn = await asyncpg.connect(asyncpg_dsn(base_url))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument(
        "--clients", type=int, default=32, help="per process: the offered load grows with them"
    )
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--processes", default="1,2,4", help="PostgreSQL configurations")
    parser.add_argument(
        "--postgres-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/test"
    )
    parser.add_argument("--redis-url", default=None, help="also carry events over Redis")
    parser.add_argument(
        "--no-split",
        dest="split",
        action="store_false",
        help="skip the 1 api + 1 worker configuration (CPU per role)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="nudge-bench-scale-") as tmp:
        data = Path(tmp)
        port = free_port()
        account = data / "fcm-service-account.json"
        fake = start_fcm(port, account, output=(data / "fcm.log").open("ab"))
        fcm_env = {
            "NUDGE_FCM_BASE_URL": f"http://127.0.0.1:{port}",
            "NUDGE_FCM_CREDENTIALS_FILE": str(account),
        }
        print(
            f"nudge bench/scale: {os.cpu_count()} cores, {args.clients} clients per process, "
            f"{args.seconds:.0f} s per configuration, {args.users} users with one FCM device, "
            f"events over {'Redis' if args.redis_url else 'PostgreSQL LISTEN/NOTIFY'}",
            flush=True,
        )
        try:
            sqlite = f"sqlite+aiosqlite:///{data}/sqlite/nudge.db"
            (data / "sqlite").mkdir()
            configs = [(f"postgres all x{n}", ["all"] * int(n)) for n in args.processes.split(",")]
            if args.split:
                configs.append(("postgres api + worker", ["api", "worker"]))
            outcome = await run_config("sqlite all x1", sqlite, ["all"], args, fcm_env, fake, data)
            print(outcome.line(), flush=True)
            for name, roles in configs:
                url = await postgres_database(args.postgres_url)
                try:
                    outcome = await run_config(name, url, roles, args, fcm_env, fake, data)
                finally:
                    await drop_database(args.postgres_url, url)
                print(outcome.line(), flush=True)
        finally:
            fake.terminate()
            fake.wait(10)


if __name__ == "__main__":
    asyncio.run(main())
