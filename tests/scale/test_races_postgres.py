"""Four ``nudge serve`` processes racing on one PostgreSQL: the guarantees that must hold whichever
process a request or a claim lands on (docs/deploy.md).

- The hourly direct limit is exact: of many concurrent sends to one user, spread over four API
  processes, exactly the limit is accepted, the rest are 429 with Retry-After, and the table holds
  exactly the limit's rows.
- Repeats: one Idempotency-Key, or one message within the duplicate window, sent concurrently
  through the four processes makes one notification, every answer carries its id, and the repeats
  use none of the hourly limit.
- Delivery: every notification accepted through any process has each delivery row recorded once
  (``delivered``, first attempt), reaches FCM once, streams once and is listed once in its user's
  inbox; with a worker killed (SIGKILL) mid-run nothing is lost, and only what that worker held
  can reach FCM or the stream a second time.
"""

from __future__ import annotations

import asyncio
import collections
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import wait_for
from tests.scale.conftest import (
    ADMIN_HEADERS,
    FcmProcess,
    LiveInbox,
    base_env,
    fetch,
    limited_app,
    make_users,
    send_at_once,
    send_direct,
    start_servers,
    stop_all,
    wait_all_delivered,
)

pytestmark = pytest.mark.skipif(
    not os.environ.get("NUDGE_TEST_POSTGRES_URL"),
    reason="races across processes need the real PostgreSQL: set NUDGE_TEST_POSTGRES_URL "
    "(e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test)",
)

LIMIT = 25
SENDS = 200  # per user, all at once
BACKLOG = 1000  # notifications waiting when the workers start


async def rows_for(postgres_url: str, app_id: str, uid: str) -> list[str]:
    rows = await fetch(
        postgres_url, "SELECT id FROM notifications WHERE app_id = $1 AND uid = $2", app_id, uid
    )
    return [r["id"] for r in rows]


async def test_limit_and_repeats_hold_across_four_api_processes(
    tmp_path: Path, postgres_url: str
) -> None:
    servers = await start_servers(tmp_path, base_env(postgres_url), ["api"] * 4)
    urls = [s.url for s in servers]
    try:
        racers = ["limit-a", "limit-b"]
        app_id, secret = await limited_app(urls[0], [*racers, "keyed", "same"], LIMIT)

        # (a) The hourly limit, twice (two users), each a burst through all four processes.
        for uid in racers:
            answers = await send_at_once(
                urls, app_id, secret, uid, [f"{uid} {i}" for i in range(SENDS)]
            )
            codes = collections.Counter(r.status_code for r in answers)
            assert codes == {200: LIMIT, 429: SENDS - LIMIT}, codes
            for r in answers:
                if r.status_code == 429:
                    # Within the hour plus the minute the window counts the oldest send in.
                    assert 1 <= int(r.headers["Retry-After"]) <= 3660, r.headers
                    assert r.headers["X-RateLimit-Remaining"] == "0"
            ids = {r.json()["notification_id"] for r in answers if r.status_code == 200}
            assert len(ids) == LIMIT
            assert sorted(await rows_for(postgres_url, app_id, uid)) == sorted(ids)

        # (c) One idempotency key (messages differing) and one message without a key, each sent
        # 40 times at once through the four processes: one notification each.
        repeats = 40
        keyed = await send_at_once(
            urls,
            app_id,
            secret,
            "keyed",
            [f"keyed {i}" for i in range(repeats)],
            headers={"Idempotency-Key": "one-key-for-all"},
        )
        same = await send_at_once(urls, app_id, secret, "same", ["the same words"] * repeats)
        for uid, answers in (("keyed", keyed), ("same", same)):
            assert {r.status_code for r in answers} == {200}, [r.text for r in answers]
            bodies = [r.json() for r in answers]
            stored = await rows_for(postgres_url, app_id, uid)
            assert len(stored) == 1, stored
            assert {b["notification_id"] for b in bodies} == set(stored)
            assert sum(not b.get("duplicate", False) for b in bodies) == 1, bodies
            # The repeats used none of the hourly limit: LIMIT - 1 more distinct sends fit.
            more = await send_at_once(
                urls, app_id, secret, uid, [f"{uid} more {i}" for i in range(LIMIT + 5)]
            )
            codes = collections.Counter(r.status_code for r in more)
            assert codes == {200: LIMIT - 1, 429: 6}, codes
    finally:
        stop_all(servers)


async def inbox_ids(urls: list[str], uid: str) -> list[str]:
    """Every id the user's inbox lists, page by page, each page from the next process."""
    ids: list[str] = []
    cursor: str | None = None
    async with httpx.AsyncClient(headers=ADMIN_HEADERS, timeout=30) as c:
        for page in range(10_000):
            params: dict[str, Any] = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            r = await c.get(f"{urls[page % len(urls)]}/v1/users/{uid}/notifications", params=params)
            assert r.status_code == 200, r.text
            ids += [n["id"] for n in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                return ids
    raise AssertionError("the inbox never ended")


async def check_delivered_once(
    postgres_url: str,
    api_urls: list[str],
    accepted: dict[str, tuple[str, str]],
    fcm_process: FcmProcess,
    resendable: set[tuple[str, str]],
) -> collections.Counter[str]:
    """Each accepted notification: an inbox and an FCM delivery, each recorded ``delivered`` on
    its first attempt; one FCM receipt (more only for a (notification, "fcm") in ``resendable``);
    listed once in its user's inbox. Returns the FCM receipts."""
    rows = await fetch(
        postgres_url, "SELECT notification_id, provider, state, attempts FROM deliveries"
    )
    targets = collections.Counter((r["notification_id"], r["provider"]) for r in rows)
    assert targets == collections.Counter(
        {(nid, provider): 1 for nid in accepted for provider in ("inbox", "fcm")}
    )
    assert {(r["state"], r["attempts"]) for r in rows} == {("delivered", 1)}
    await asyncio.sleep(0.5)  # a duplicate send would have reached the fake by now
    receipts = await fcm_process.receipts()
    assert set(receipts) == set(accepted), "a notification never reached FCM"
    twice = {nid for nid, n in receipts.items() if n > 1}
    assert all((nid, "fcm") in resendable and receipts[nid] == 2 for nid in twice), twice
    per_user = collections.defaultdict(set)
    for nid, (_, uid) in accepted.items():
        per_user[uid].add(nid)
    for uid, expected in per_user.items():
        listed = await inbox_ids(api_urls, uid)
        assert len(listed) == len(set(listed)) and set(listed) == expected, uid
    return receipts


async def test_four_processes_deliver_each_notification_once(
    tmp_path: Path, postgres_url: str, fcm_process: FcmProcess
) -> None:
    """Four ``all`` processes: each takes a quarter of the sends and races the others for claims
    (wake-ups over PostgreSQL NOTIFY)."""
    env = base_env(postgres_url, **fcm_process.env())
    servers = await start_servers(tmp_path, env, ["all"] * 4)
    urls = [s.url for s in servers]
    try:
        app_id, secret, uids = await make_users(urls[0], 40)
        inbox = await LiveInbox.open(urls[1], uids[0])

        accepted = await send_direct(urls, app_id, secret, uids, 800)
        assert len(accepted) == 800
        await wait_all_delivered(postgres_url, len(accepted), timeout=60)
        await check_delivered_once(postgres_url, urls, accepted, fcm_process, set())

        watched = {nid for nid, (_, uid) in accepted.items() if uid == uids[0]}
        streams = await inbox.close_once_seen(watched)
        assert streams == dict.fromkeys(watched, 1)
    finally:
        stop_all(servers)


@pytest.mark.slow
async def test_a_worker_killed_mid_run_loses_nothing(
    tmp_path: Path, postgres_url: str, redis_url: str, fcm_process: FcmProcess
) -> None:
    """Two API and two worker processes; the workers start on a backlog, and one is killed
    (SIGKILL) while it holds claims and sends are still arriving through both API processes. Its
    claims come due when their lease (5 s here) runs out and the other worker delivers them:
    nothing is lost, and only a claim it held can be sent a second time."""
    env = base_env(postgres_url, redis_url, NUDGE_DELIVERY_LEASE_S="5", **fcm_process.env())
    servers = await start_servers(tmp_path, env, ["api", "api"])
    api_urls = [s.url for s in servers]
    try:
        app_id, secret, uids = await make_users(api_urls[0], 40)
        inbox = await LiveInbox.open(api_urls[0], uids[0])
        # Distinct users for each batch: the same message to the same user is a repeat.
        accepted = await send_direct(api_urls, app_id, secret, uids[:20], BACKLOG)
        servers += await start_servers(
            tmp_path, env, ["worker", "worker"], s0={"NUDGE_WORKER_ID": "victim"}
        )
        sending = asyncio.create_task(send_direct(api_urls, app_id, secret, uids[20:], BACKLOG))

        async def victim_busy() -> bool:
            query = "SELECT 1 FROM deliveries WHERE claimed_by = 'victim' LIMIT 1"
            return bool(await fetch(postgres_url, query))

        await wait_for(victim_busy, timeout=60, interval=0.01)
        servers[2].kill()
        held = await fetch(
            postgres_url,
            "SELECT notification_id, provider FROM deliveries"
            " WHERE claimed_by = 'victim' AND state = 'sending'",
        )
        resendable = {(r["notification_id"], r["provider"]) for r in held}
        accepted |= await sending
        assert len(accepted) == 2 * BACKLOG

        await wait_all_delivered(postgres_url, len(accepted), timeout=60)
        receipts = await check_delivered_once(
            postgres_url, api_urls, accepted, fcm_process, resendable
        )

        watched = {nid for nid, (_, uid) in accepted.items() if uid == uids[0]}
        streams = await inbox.close_once_seen(watched)
        assert set(streams) == watched
        assert all(n == 1 or (nid, "inbox") in resendable for nid, n in streams.items())
        print(
            f"kill -9 of one of two workers: {len(resendable)} claims stranded, "
            f"{sum(n - 1 for n in receipts.values())} FCM sends repeated"
        )
    finally:
        stop_all(servers)
