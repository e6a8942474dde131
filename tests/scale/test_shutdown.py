"""Workers that stop: SIGTERM finishes in-flight deliveries and gives back claims; ``kill -9``
leaves claims that run out after ``NUDGE_DELIVERY_LEASE_S`` and are delivered by another worker.

"Exactly once" here means: each delivery row ends ``delivered``, once. At the provider, a message
whose send was in flight when its worker died (or was abandoned after the shutdown grace) may
arrive twice: its row was claimed but never recorded. The tests count those resends and check they
never exceed the claims the stopped worker held. A resend is recognisable downstream: it carries
the same ``notification_id`` in its data and the same collapse key (FCM ``collapse_key``, APNs
``apns-collapse-id``, Web Push ``Topic``); APNs also gets the same ``apns-id``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import Server, wait_for
from tests.fakes.asgi import Reply, Request, asgi_app, serve
from tests.fakes.fcm import FakeFcm
from tests.scale.conftest import (
    FcmProcess,
    base_env,
    fetch,
    make_users,
    send_direct,
    start_servers,
    stop_all,
    wait_all_delivered,
)


async def fcm_rows(postgres_url: str, where: str = "true") -> list[asyncpg.Record]:
    return await fetch(
        postgres_url,
        "SELECT d.id, d.state, d.claimed_by, n.id AS notification_id FROM deliveries d "
        f"JOIN notifications n ON n.id = d.notification_id WHERE d.provider = 'fcm' AND {where}",
    )


KILLS = 3  # workers killed one after the other, each mid-drain
BACKLOG = 1500  # notifications added before each worker starts: it drains thousands a second
SENDS_BEFORE_KILL = 100  # FCM sends (at least) from when a worker is up until it is killed


@pytest.mark.slow
async def test_kill_9_worker_mid_delivery(
    tmp_path: Path, postgres_url: str, redis_url: str, fcm_process: FcmProcess
) -> None:
    """A backlog drained by one worker at a time, each killed (SIGKILL) mid-drain and replaced:
    nothing is lost, and what FCM sees twice is measured (docs/delivery.md, "kill -9"). Only a
    send whose claim died with its worker can be sent again, once more per such death."""
    # A lease shorter than the default (60 s), so the stranded claims come due soon, and longer
    # than a claim takes to send and record here, so a live worker never re-claims its own.
    env = base_env(postgres_url, redis_url, NUDGE_DELIVERY_LEASE_S="5", **fcm_process.env())
    (api,) = await start_servers(tmp_path, env, ["api"])
    servers = [api]
    try:
        app_id, secret, uids = await make_users(api.url, 20 * KILLS)
        accepted: dict[str, tuple[str, str]] = {}
        held: list[set[str]] = []  # per kill: the FCM claims its worker held when it died
        for kill in range(KILLS):
            # Other users each time: the same message to the same user would be deduplicated.
            group = uids[20 * kill : 20 * (kill + 1)]
            accepted |= await send_direct([api.url], app_id, secret, group, BACKLOG)
            worker_id = f"victim{kill}"
            (victim,) = await start_servers(
                tmp_path, env, ["worker"], s0={"NUDGE_WORKER_ID": worker_id}
            )
            servers.append(victim)
            target = sum((await fcm_process.receipts()).values()) + SENDS_BEFORE_KILL
            mine = f"d.claimed_by = '{worker_id}'"

            async def mid_drain(target: int = target, mine: str = mine) -> bool:
                """Sending, and holding claims."""
                if sum((await fcm_process.receipts()).values()) < target:
                    return False
                return bool(await fcm_rows(postgres_url, mine))

            await wait_for(mid_drain, timeout=60, interval=0.01)
            victim.kill()  # SIGKILL
            rows = await fcm_rows(postgres_url, f"d.state = 'sending' AND {mine}")
            held.append({r["notification_id"] for r in rows})
        # A worker may (rarely) be caught between batches, holding nothing: that kill strands
        # nothing and repeats nothing. The others must have held claims.
        assert sum(bool(claims) for claims in held) >= KILLS - 1, held
        servers += await start_servers(tmp_path, env, ["worker"])

        await wait_all_delivered(postgres_url, len(accepted), timeout=60)
        await asyncio.sleep(0.5)
        receipts = await fcm_process.receipts()
        assert set(receipts) == set(accepted)  # none lost
        resent = {nid: n - 1 for nid, n in receipts.items() if n > 1}
        for nid, extra in resent.items():  # at most once more per worker that died holding it
            assert extra <= sum(nid in claims for claims in held), nid
        per_kill = [(len(claims), len(claims & set(resent))) for claims in held]
        stranded = sum(len(claims) for claims in held)
        print(
            f"kill -9 x{KILLS}: {stranded} FCM claims stranded, {sum(resent.values())} sends "
            f"repeated ({100 * sum(resent.values()) / stranded:.1f} %); per kill "
            f"(claims stranded, sent again): {per_kill}"
        )
    finally:
        stop_all(servers)


class SlowFcm:
    """The FCM fake behind a delay per send, counting sends started and answered."""

    def __init__(self) -> None:
        self.fake = FakeFcm(record=False)
        self.delay = 0.0
        self.started: collections.Counter[str] = collections.Counter()
        self.answered: collections.Counter[str] = collections.Counter()
        self.app = asgi_app(self.handle)

    async def handle(self, request: Request) -> Reply:
        if not request.path.endswith("/messages:send"):
            return await self.fake.handle(request)
        nid = json.loads(request.body)["message"]["data"]["notification_id"]
        self.started[nid] += 1
        await asyncio.sleep(self.delay)
        reply = await self.fake.handle(request)
        self.answered[nid] += 1
        return reply

    def env(self, tmp_path: Path) -> dict[str, str]:
        account = tmp_path / "slow-fcm.json"
        account.write_text(json.dumps(self.fake.service_account()))
        return {
            "NUDGE_FCM_BASE_URL": self.fake.base_url,
            "NUDGE_FCM_CREDENTIALS_FILE": str(account),
        }


@pytest.fixture
async def slow_fcm() -> AsyncIterator[SlowFcm]:
    slow = SlowFcm()
    async with serve(slow.app) as url:
        slow.fake.base_url = url
        yield slow


async def sigterm(server: Server) -> None:
    server.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(server.proc.wait, 30)
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells of it.
    assert code in (0, -signal.SIGTERM), server.log_path.read_text()[-2000:]


async def start_backlog(
    tmp_path: Path, postgres_url: str, slow: SlowFcm, **extra: str
) -> tuple[list[Server], dict[str, Any], dict[str, str]]:
    """An API process with 60 queued notifications for FCM devices, and one worker sending them
    (with the inbox deliveries) 20 at a time; a long lease: only a release hands a claim back
    quickly."""
    env = base_env(
        postgres_url,
        NUDGE_DELIVERY_LEASE_S="60",
        NUDGE_DELIVERY_CONCURRENCY="20",
        NUDGE_DELIVERY_BATCH_SIZE="20",
        **slow.env(tmp_path),
        **extra,
    )
    servers = await start_servers(tmp_path, env, ["api"])
    try:
        app_id, secret, uids = await make_users(servers[0].url, 20)
        accepted = await send_direct([servers[0].url], app_id, secret, uids, 60)
        servers += await start_servers(tmp_path, env, ["worker"])

        async def sending() -> bool:  # the first claim's sends are under way
            return sum(slow.started.values()) >= 5

        await wait_for(sending, timeout=15)
    except BaseException:
        stop_all(servers)
        raise
    return servers, accepted, env


async def test_sigterm_finishes_in_flight_deliveries(
    tmp_path: Path, postgres_url: str, slow_fcm: SlowFcm
) -> None:
    slow_fcm.delay = 1.5
    servers, accepted, env = await start_backlog(tmp_path, postgres_url, slow_fcm)
    try:
        unanswered_at_term = set(slow_fcm.started) - set(slow_fcm.answered)
        await sigterm(servers[1])
        assert unanswered_at_term, "nothing was in flight at SIGTERM"
        # What was being sent finished and is recorded; nothing is left claimed.
        in_flight = set(slow_fcm.started)
        assert set(slow_fcm.answered) == in_flight
        rows = {r["notification_id"]: r for r in await fcm_rows(postgres_url)}
        assert {rows[nid]["state"] for nid in in_flight} == {"delivered"}
        rest = [r for nid, r in rows.items() if nid not in in_flight]
        assert rest and {(r["state"], r["claimed_by"]) for r in rest} == {("queued", None)}

        slow_fcm.delay = 0.0
        servers += await start_servers(tmp_path, env, ["worker"])

        await wait_all_delivered(postgres_url, len(accepted))
        assert slow_fcm.started == collections.Counter(dict.fromkeys(accepted, 1))
    finally:
        stop_all(servers)


async def test_sigterm_after_the_grace_releases_abandoned_claims(
    tmp_path: Path, postgres_url: str, slow_fcm: SlowFcm
) -> None:
    slow_fcm.delay = 60.0  # longer than the grace (and than nothing: the lease is 60 s too)
    servers, accepted, env = await start_backlog(
        tmp_path, postgres_url, slow_fcm, NUDGE_SHUTDOWN_GRACE_S="1"
    )
    try:
        await sigterm(servers[1])
        # Read once the worker is gone: a send may still start between a snapshot and the signal.
        abandoned = set(slow_fcm.started)
        rows = await fcm_rows(postgres_url)
        # Nothing was answered; every claim is back in the queue at once, not after the lease.
        assert not slow_fcm.answered
        assert {(r["state"], r["claimed_by"]) for r in rows} == {("queued", None)}

        slow_fcm.delay = 0.0
        servers += await start_servers(tmp_path, env, ["worker"])

        await wait_all_delivered(postgres_url, len(accepted))
        # The provider saw the abandoned ones twice (their first send never completed here).
        assert slow_fcm.started == collections.Counter(
            {nid: 2 if nid in abandoned else 1 for nid in accepted}
        )
    finally:
        stop_all(servers)
