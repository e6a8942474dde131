"""Scale-out: accepted and delivered notifications per second with 1, 2 and 4 processes on
PostgreSQL, next to one process on SQLite, in one run; or a capacity run of API and worker
processes by role.

    .venv/bin/python bench/scale.py [--seconds 8] [--clients 32] [--users 200] [--redis-url URL]
                                    [--processes 1,2,4] [--no-split] [--postgres-url URL]
    .venv/bin/python bench/scale.py --capacity 1x1,2x1,2x2 [--redis-url URL] [...]

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
  CPU ms/notif  CPU time per accepted notification: nudge processes, PostgreSQL (the backends of
                the configuration's database and the server's WAL writer, checkpointer and
                background writer: see PostgresCpu), the FCM fake, this load generator, and
                the whole machine (``machine``: everything that ran, ours or not); with
                ``--role api`` and ``--role worker`` processes (the last configuration) the
                nudge CPU is shown per role
  RSS           the largest resident memory of one nudge process at the end
  WAL, disk     PostgreSQL WAL written (the whole server's, so approximate) and database growth,
                per notification

``--capacity AxW,...`` runs, instead, A ``--role api`` and W ``--role worker`` processes per
configuration against one fresh PostgreSQL database (the load goes to the API processes only) and
prints one table: accepted/s, deliveries/s (every delivery row, FCM and inbox, recorded
``delivered``, divided by the time from the start of the load until the last one was), the
backlog, CPU ms per notification and cores busy (CPU seconds over that same time) per role and
for PostgreSQL, cores busy on the whole machine (``all``: other work on a shared machine shows
here), PostgreSQL commits per notification, the most PostgreSQL connections the configuration
held at once, and the 1-minute load average before and after.

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


class PostgresCpu:
    """CPU seconds of the PostgreSQL processes working for one database: the backends of its
    connections (pg_stat_activity, looked at every 0.2 s, so that connections opened and closed
    during the load count) and the server's WAL writer, checkpointer and background writer. Other
    databases' work on a shared server is left out; a backend that exits between two looks loses
    at most its last 0.2 s. Nothing on SQLite."""

    QUERY = (
        "SELECT pid, datname IS NOT NULL AS connection FROM pg_stat_activity"
        " WHERE pid <> pg_backend_pid() AND (datname = current_database()"
        " OR backend_type IN ('walwriter', 'checkpointer', 'background writer'))"
    )

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.first: dict[int, float] = {}  # pid -> CPU when first seen (0 if born during the run)
        self.last: dict[int, float] = {}
        self.connections = 0  # the most connections to the database seen at one look
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if self.database_url.startswith("sqlite"):
            return
        conn = await asyncpg.connect(asyncpg_dsn(self.database_url))
        self.first = {r["pid"]: cpu_seconds([r["pid"]]) for r in await conn.fetch(self.QUERY)}
        self.last = dict(self.first)
        self.task = asyncio.create_task(self._watch(conn))

    async def _watch(self, conn: asyncpg.Connection) -> None:
        try:
            while True:
                await asyncio.sleep(0.2)
                rows = await conn.fetch(self.QUERY)
                self.connections = max(self.connections, sum(r["connection"] for r in rows))
                for r in rows:
                    self.last[r["pid"]] = cpu_seconds([r["pid"]]) or self.last.get(r["pid"], 0)
        finally:
            await conn.close()

    async def stop(self) -> float:
        """CPU seconds used since :meth:`start`."""
        if self.task is None:
            return 0.0
        for pid in self.last:  # one last look at those still alive
            self.last[pid] = cpu_seconds([pid]) or self.last[pid]
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        return sum(cpu - self.first.get(pid, 0.0) for pid, cpu in self.last.items())


@dataclass
class Outcome:
    name: str
    accepted_rate: float
    delivered_rate: float
    deliveries_rate: float
    backlog: int
    notifications: int
    cpu_ms: dict[str, float]
    busy: dict[str, float]  # cores: CPU seconds over the seconds from the load's start to done
    load: tuple[float, float]  # 1-minute load average before and after
    connections: int  # the most PostgreSQL connections of the nudge processes seen at once
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

    def row(self) -> str:
        """One line of the capacity table (see CAPACITY_HEADER)."""
        cpu = "".join(f"{self.cpu_ms.get(k, 0.0):8.2f}" for k in CAPACITY_ROLES)
        busy = "".join(f"{self.busy.get(k, 0.0):6.2f}" for k in (*CAPACITY_ROLES, "machine"))
        bad = f"   non-200: {self.errors}" if self.errors else ""
        return (
            f"{self.name:<10}{self.accepted_rate:9.0f}{self.deliveries_rate:13.0f}"
            f"{self.backlog:9d}{cpu}  {busy}{self.commits:8.2f}{self.connections:7d}"
            f"  {self.load[0]:5.1f} -> {self.load[1]:4.1f}{bad}"
        )


CAPACITY_ROLES = ("nudge api", "nudge worker", "postgres")
CAPACITY_HEADER = (
    f"{'api x wkr':<10}{'accept/s':>9}{'deliveries/s':>13}{'backlog':>9}"
    f"{'CPU ms/notif: api  worker  postgres':>36}  {'cores busy: api worker pg  all':>32}"
    "  commits  conns  load 1m"
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


def machine_cpu_seconds() -> float:
    """CPU seconds every process of the machine has used so far (/proc/stat): what else ran
    during a configuration shows as the gap between this and the processes measured."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def counts(database_url: str) -> tuple[int, int, int]:
    """(FCM deliveries delivered, FCM deliveries in all, deliveries of any kind delivered)."""
    query = (
        "SELECT count(*) FILTER (WHERE provider = 'fcm' AND state = 'delivered'),"
        " count(*) FILTER (WHERE provider = 'fcm'), count(*) FILTER (WHERE state = 'delivered')"
        " FROM deliveries"
    )
    if database_url.startswith("sqlite"):
        path = database_url.split(":///", 1)[1]
        with sqlite3.connect(path, timeout=30) as db:
            row = db.execute(query).fetchone()
    else:
        conn = await asyncpg.connect(asyncpg_dsn(database_url))
        try:
            row = await conn.fetchrow(query)
        finally:
            await conn.close()
    return int(row[0]), int(row[1]), int(row[2])


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

        groups = {
            role: [p.pid for p, r in zip(procs, roles, strict=True) if r == role] for role in roles
        }

        def cpu_now() -> dict[str, float]:
            return {
                "machine": machine_cpu_seconds(),
                **{f"nudge {role}": cpu_seconds(pids) for role, pids in groups.items()},
                "fake": cpu_seconds([fake.pid]),
                "loadgen": time.process_time(),
            }

        load_before = os.getloadavg()[0]
        pg_cpu = PostgresCpu(database_url)
        await pg_cpu.start()
        before = {**cpu_now(), "postgres": 0.0}
        commits_before, wal_before, size_before = await pg_stats(database_url)
        started = time.perf_counter()
        results = await asyncio.gather(
            *(
                run_load(url, request_for(i), name=name, clients=args.clients, seconds=args.seconds)
                for i, url in enumerate(urls)
            )
        )
        done, total, deliveries = await counts(database_url)
        backlog = total - done
        deadline = time.monotonic() + 120
        while done < total and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            done, total, deliveries = await counts(database_url)
        finished = time.perf_counter()
        after = {**cpu_now(), "postgres": await pg_cpu.stop()}
        commits_after, wal_after, size_after = await pg_stats(database_url)
        accepted = sum(r.ok for r in results)
        errors: dict[int, int] = {}
        for r in results:
            for status, n in r.statuses.items():
                if status != 200:
                    errors[status] = errors.get(status, 0) + n
        elapsed = finished - started
        return Outcome(
            name=name,
            accepted_rate=accepted / args.seconds,
            delivered_rate=done / elapsed if done == total else 0.0,
            deliveries_rate=deliveries / elapsed if done == total else 0.0,
            backlog=backlog,
            notifications=total,
            cpu_ms={k: (after[k] - before[k]) / total * 1000 for k in before},
            busy={k: (after[k] - before[k]) / elapsed for k in before},
            load=(load_before, os.getloadavg()[0]),
            connections=pg_cpu.connections,
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


def capacity_configs(text: str) -> list[tuple[int, int]]:
    """``1x1,2x2`` -> [(1, 1), (2, 2)]: API and worker processes of each configuration."""
    configs = []
    for config in text.split(","):
        api, _, workers = config.partition("x")
        if not (api.isdigit() and workers.isdigit() and int(api) >= 1 and int(workers) >= 1):
            raise argparse.ArgumentTypeError(f"{config!r} is not API x workers, e.g. 2x1")
        configs.append((int(api), int(workers)))
    return configs


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
    parser.add_argument(
        "--capacity",
        type=capacity_configs,
        default=[],
        metavar="AxW,...",
        help="instead: A api and W worker processes per configuration (e.g. 1x1,2x2), one table",
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
            if args.capacity:
                print(CAPACITY_HEADER, flush=True)
                for api, workers in args.capacity:
                    roles = ["api"] * api + ["worker"] * workers
                    url = await postgres_database(args.postgres_url)
                    try:
                        outcome = await run_config(
                            f"{api} x {workers}", url, roles, args, fcm_env, fake, data
                        )
                    finally:
                        await drop_database(args.postgres_url, url)
                    print(outcome.row(), flush=True)
                return
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
