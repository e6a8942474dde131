"""Direct-notification acceptance rate vs. the same server's /healthz rate, in one run.

    .venv/bin/python bench/direct.py [--seconds 5] [--clients 32] [--database-url URL]
                                     [--role api|all|both] [--hot-user [--hot-prior 50000]]
                                     [--repeats]

Starts `nudge serve` (one process, SQLite by default) and drives it over keep-alive HTTP/1.1 with
32 concurrent clients: first GET /healthz, then POST /v2/integrations/{app}/notification (each
request a different user/message so neither the duplicate window nor the hourly limit answers).
Prints requests/s, p50/p99 latency, the server's CPU per request (on a PostgreSQL of this machine
also the CPU of the database's server processes) and the ratio.

By default twice, each on a fresh server and database: ``--role api`` (acceptance alone) and
``--role all`` (the worker in the same process also delivers every accepted notification to the
inbox, on the same core, while /healthz was measured with nothing to deliver). The targets
(issue 2: ratio >= 50 %, >= 1,500 accepted/s) are about the endpoint, so they are read on the
api run; the all run shows what delivering in the same process costs on top.

``--hot-user`` (issue 18) then gives one user ``--hot-prior`` notifications made just before
(accepted in batches of 500 through ``accept_batch`` on the same database: the app's limit is
1,000,000) and sends the same load all to that user: its rate next to the many-user rate, and
the ratio. An hourly window whose cost grows with the user's sends shows as a low ratio.

``--repeats`` then sends the many-user load's messages again, within the duplicate window: those
sent before are answered as repeats (their first notification again), as a retrying client is.

The server is ``python -m nudge.cli`` of this interpreter, so ``PYTHONPATH=<other tree>/src``
measures another commit with the same load.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import direct_request, free_port, run_load, start_server  # noqa: E402

ADMIN = "bench-admin"
USERS = 500
HOT = "hot"  # the --hot-user run's one user


def setup(url: str) -> tuple[str, str]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as c:
        app = c.post(
            "/v1/apps", json={"manifest": {"name": "Bench"}, "direct_limit_per_hour": 1_000_000}
        ).json()
        for uid in [*(f"u{i}" for i in range(USERS)), HOT]:
            c.post("/v1/users", json={"uid": uid, "name": f"User {uid}"}).raise_for_status()
            c.post(f"/v1/users/{uid}/apps/{app['app_id']}", json={"scopes": []}).raise_for_status()
    return app["app_id"], app["app_secret"]


async def seed_hot_user(database_url: str, app_id: str, prior: int) -> float:
    """``prior`` notifications to the hot user, made now; returns the seconds it took."""
    from nudge.core.notifications import Limits, NotificationRequest, accept_batch
    from nudge.store.db import Database

    limits = Limits(default_per_hour=1_000_000, dedupe_window_s=60.0)
    db = Database(database_url)
    started = time.perf_counter()
    try:
        for start in range(0, prior, 500):
            batch = [
                NotificationRequest(app_id=app_id, uid=HOT, message=f"prior {n}")
                for n in range(start, min(prior, start + 500))
            ]
            results = await db.write_now(
                partial(accept_batch, requests=batch, limits=limits, lock_rows=db.is_postgres)
            )
            if any(isinstance(r, Exception) for r in results):
                raise SystemExit(f"a prior notification was refused: {results}")
    finally:
        await db.close()
    return time.perf_counter() - started


async def measure(role: str, args: argparse.Namespace) -> dict[str, float]:
    """One fresh server of ``role``: its /healthz rate, then its direct-notification rate."""
    with tempfile.TemporaryDirectory(prefix="nudge-bench-") as tmp:
        data = Path(tmp)
        port = free_port()
        env = {
            "NUDGE_ADMIN_TOKEN": ADMIN,
            "NUDGE_DATA_DIR": str(data),
            "NUDGE_DATABASE_URL": args.database_url or f"sqlite+aiosqlite:///{data}/nudge.db",
            "NUDGE_LOG_LEVEL": "WARNING",
        }
        proc = start_server(data, env, port, ["--role", role])
        try:
            url = f"http://127.0.0.1:{port}"
            app_id, secret = setup(url)
            health_req = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"

            def send_req(n: int, i: int) -> bytes:
                uid = f"u{(n * 7919 + i) % USERS}"
                return direct_request(app_id, secret, uid, f"bench+{n}+{i}")

            print(
                f"nudge bench/direct: {args.clients} clients, {args.seconds:.0f} s each, "
                f"database {env['NUDGE_DATABASE_URL'].split(':')[0]}, role {role}",
                flush=True,
            )
            load = dict(
                clients=args.clients,
                seconds=args.seconds,
                server_pid=proc.pid,
                database_url=env["NUDGE_DATABASE_URL"],
            )
            health = await run_load(url, lambda n, i: health_req, name="GET /healthz", **load)
            print(health.line(), flush=True)
            direct = await run_load(url, send_req, name="POST direct notification", **load)
            print(direct.line(), flush=True)
            repeats = None
            if args.repeats:
                repeats = await run_load(url, send_req, name="POST direct, repeats", **load)
                print(repeats.line(), flush=True)
            hot = None
            if args.hot_user:
                took = await seed_hot_user(env["NUDGE_DATABASE_URL"], app_id, args.hot_prior)
                print(f"{args.hot_prior} prior notifications to one user in {took:.1f} s")

                def hot_req(n: int, i: int) -> bytes:
                    return direct_request(app_id, secret, HOT, f"hot+{n}+{i}")

                hot = await run_load(url, hot_req, name="POST direct, one hot user", **load)
                print(hot.line(), flush=True)
        finally:
            proc.terminate()
            proc.wait(20)
    ratio = direct.rate / health.rate if health.rate else 0.0
    print(f"ratio direct/healthz: {ratio:.0%}", flush=True)
    out = {
        "healthz_rps": round(health.rate),
        "direct_rps": round(direct.rate),
        "direct_p50_ms": round(direct.pct(50), 2),
        "direct_p99_ms": round(direct.pct(99), 2),
        "ratio": round(ratio, 3),
        "healthz_cpu_us": round(health.cpu_us or 0),
        "direct_cpu_us": round(direct.cpu_us or 0),
        "direct_database_cpu_us": round(direct.database_cpu_us or 0),
    }
    if repeats is not None:
        out |= {"repeats_rps": round(repeats.rate), "repeats_cpu_us": round(repeats.cpu_us or 0)}
    if hot is not None:
        hot_ratio = hot.rate / direct.rate if direct.rate else 0.0
        print(
            f"hot user {hot.rate:.0f}/s vs many users {direct.rate:.0f}/s: {hot_ratio:.0%} "
            f"(target >= 90 %); CPU {hot.cpu_us or 0:.0f} vs {direct.cpu_us or 0:.0f} us/req",
            flush=True,
        )
        out |= {
            "hot_rps": round(hot.rate),
            "hot_p99_ms": round(hot.pct(99), 2),
            "hot_cpu_us": round(hot.cpu_us or 0),
            "hot_ratio": round(hot_ratio, 3),
        }
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument(
        "--database-url",
        default=None,
        help="an empty database (each role run needs its own; default: a new SQLite file)",
    )
    parser.add_argument(
        "--hot-user", action="store_true", help="then the same load to one user with history"
    )
    parser.add_argument("--hot-prior", type=int, default=50_000)
    parser.add_argument(
        "--repeats", action="store_true", help="then the same messages again (each a repeat)"
    )
    parser.add_argument(
        "--role",
        default="both",
        choices=["both", "api", "all"],
        help="api: acceptance alone (what the targets are about); all: the worker delivers "
        "what is accepted in the same process; both (default): api, then all",
    )
    args = parser.parse_args()
    roles = ["api", "all"] if args.role == "both" else [args.role]
    results = {role: await measure(role, args) for role in roles}
    if "api" in results:
        api = results["api"]
        print(
            f"targets (role api): ratio {api['ratio']:.0%} (>= 50 %), "
            f"{api['direct_rps']} accepted/s (>= 1500)"
        )
    print(json.dumps(results))


if __name__ == "__main__":
    asyncio.run(main())
