"""Issue 17 in the delivery worker, on SQLite and PostgreSQL: held pushes released as one summary
when their window ends (the rest recorded merged), expired notifications recorded and never
sent, and the APNs badge from the user's unread count."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import Connection, update

from nudge.bus.local import LocalEventBus
from nudge.core import users
from nudge.core.notifications import Accepted, Limits, accept_batch, notification_status
from nudge.delivery import queue
from nudge.delivery.held import Send, plan, summary
from nudge.delivery.providers.base import Outcome, PushMessage, SendResult, Target
from nudge.delivery.providers.payload import remaining_ttl
from nudge.delivery.worker import DeliveryWorker
from nudge.metrics import Metrics
from nudge.net.guard import HostAllowList
from nudge.store import notifications as store
from nudge.store.db import Database
from nudge.store.models import Delivery, Notification
from tests.conftest import wait_for
from tests.store.test_store import req, seed

POLICY = queue.DeliveryRetry(base_s=0.05, max_s=0.2, max_age_s=3600.0)
LIMITS = Limits(default_per_hour=100, dedupe_window_s=60)
FINAL = ("delivered", "merged", "expired", "failed", "token-removed")


class Recording:
    """A provider that keeps what it was asked to send."""

    def __init__(self) -> None:
        self.sent: list[tuple[PushMessage, Target]] = []

    async def send(self, message: PushMessage, target: Target) -> SendResult:
        self.sent.append((message, target))
        return SendResult(Outcome.DELIVERED)

    async def aclose(self) -> None:
        pass


async def notify(db: Database, app_id: str, message: str, **request: Any) -> str:
    batch = [req(app_id, message=message, **request)]
    [accepted] = await db.write(
        lambda conn: accept_batch(conn, batch, LIMITS, lock_rows=db.is_postgres)
    )
    assert isinstance(accepted, Accepted)
    return accepted.notification_id


async def hold(db: Database, ids: list[str], until: float) -> None:
    """What acceptance does in quiet hours: the pushes wait for the window's end."""

    def work(conn: Connection) -> None:
        conn.execute(
            update(Notification)
            .where(Notification.id.in_(ids))
            .values(hold="quiet", hold_reason="quiet hours until 07:00 Europe/Paris")
        )
        conn.execute(
            update(Delivery)
            .where(Delivery.notification_id.in_(ids), Delivery.provider != "inbox")
            .values(next_attempt_at=until, state=store.HELD_STATE)
        )

    await db.write(work)


async def statuses(db: Database, app_id: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    """notification id -> its status as the status endpoint shows it."""

    def work(conn: Connection) -> dict[str, dict[str, Any]]:
        return {nid: notification_status(conn, app_id, nid) for nid in ids}

    return await db.query(work)


async def run_until_settled(
    db: Database,
    app_id: str,
    ids: list[str],
    providers: dict[str, Recording],
    poll_interval_s: float = 0.05,
    batch_size: int = 200,
) -> dict[str, dict[str, Any]]:
    bus = LocalEventBus()
    worker = DeliveryWorker(
        db,
        bus,
        providers,  # type: ignore[arg-type]
        {},
        worker_id="w1",
        policy=POLICY,
        metrics=Metrics(),
        batch_size=batch_size,
        poll_interval_s=poll_interval_s,
    )
    running = asyncio.create_task(worker.run())

    async def settled() -> dict[str, dict[str, Any]] | None:
        found = await statuses(db, app_id, ids)
        states = [d["state"] for s in found.values() for d in s["deliveries"]]
        return found if all(state in FINAL for state in states) else None

    try:
        return await wait_for(settled, timeout=20)
    finally:
        worker.stop()
        await bus.wake_workers()  # from its wait for work, however long its poll interval
        await running


def device_delivery(status: dict[str, Any]) -> dict[str, Any]:
    [delivery] = [d for d in status["deliveries"] if d["provider"] != "inbox"]
    return delivery


async def test_held_pushes_of_a_device_go_out_as_one_summary_and_the_rest_are_merged(
    db: Database,
) -> None:
    app_id, _ = await seed(db)  # u1 has one device (the log provider)
    ids = [await notify(db, app_id, text) for text in ("first", "second", "third")]
    window_end = time.time() + 0.5
    await hold(db, ids, window_end)
    inbox, device = Recording(), Recording()

    found = await run_until_settled(db, app_id, ids, {"inbox": inbox, "log": device})

    assert sorted(m.body for m, _ in inbox.sent) == ["first", "second", "third"]  # each, whole
    [(pushed, _)] = device.sent  # one push for the three
    assert pushed.title == "Store Test says (3)" and pushed.body == "third"
    assert pushed.notification_id == ids[2] and pushed.data["summary_of"] == 3
    carrier = device_delivery(found[ids[2]])
    assert carrier["state"] == "delivered" and carrier["delivered_at"] >= window_end
    for nid in ids[:2]:
        merged = device_delivery(found[nid])
        assert merged["state"] == "merged"
        assert carrier["id"] in merged["last_error"]
        assert merged["delivered_at"] >= window_end  # when the summary carrying it went
    inboxes = [d for s in found.values() for d in s["deliveries"] if d["provider"] == "inbox"]
    assert [d["state"] for d in inboxes] == ["delivered"] * 3


async def many_held(db: Database, devices: int, each: int, until: float) -> tuple[str, list[str]]:
    """``devices`` more devices of u1, and ``each`` notifications held until ``until`` (so
    each device has ``each`` held pushes); the app id and the notification ids."""
    app_id, _ = await seed(db)

    def add_devices(conn: Connection) -> None:
        for n in range(devices - 1):  # seed gave u1 one already
            device = users.NewDevice(platform="log", token=f"device-token-extra-{n}")
            users.add_device(conn, "u1", device, webpush_hosts=HostAllowList.parse("*"))

    await db.write(add_devices)
    ids = [await notify(db, app_id, f"message {n}") for n in range(each)]
    await hold(db, ids, until)
    return app_id, ids


async def test_the_ordinary_claim_never_takes_a_held_push(db: Database) -> None:
    _, ids = await many_held(db, devices=2, each=3, until=time.time() - 1)  # due already

    jobs = (await queue.claim(db, "w1", 100, lease_s=30.0)).jobs

    assert sorted(j.provider for j in jobs) == ["inbox"] * 3  # the inbox is never held
    held = await queue.claim_held(db, "w1", 100, lease_s=30.0)
    assert len(held) == 6 and {j.provider for j in held} == {"log"}


async def test_held_claims_never_split_a_devices_group_even_when_they_race(
    db: Database,
) -> None:
    """Claims of 1-3 rows, four at a time (on PostgreSQL on four connections at once): every
    device's held pushes still come out of one claim, whole. With held pushes in the ordinary
    queue, overlapping claims split them (two summaries for one device)."""
    app_id, ids = await many_held(db, devices=12, each=5, until=time.time() - 1)
    owner: dict[str, set[int]] = {}
    claims = 0
    while True:
        batches = await asyncio.gather(
            *(queue.claim_held(db, f"w{n}", 1 + n % 3, lease_s=30.0) for n in range(4))
        )
        if not any(batches):
            break
        for batch in batches:
            claims += 1
            for j in batch:
                assert j.target is not None and j.target.device_id is not None
                owner.setdefault(j.target.device_id, set()).add(claims)
    assert len(owner) == 12  # every device's pushes were claimed ...
    assert all(len(claimed_in) == 1 for claimed_in in owner.values())  # ... each by one claim
    found = await statuses(db, app_id, ids)
    states = {
        d["state"] for s in found.values() for d in s["deliveries"] if d["provider"] != "inbox"
    }
    assert states == {"queued"}  # being sent (a held delivery being sent shows as queued)


async def test_a_worker_with_small_claims_sends_one_summary_per_device(db: Database) -> None:
    app_id, ids = await many_held(db, devices=10, each=4, until=time.time() + 0.3)
    device = Recording()

    # Claims of 3 rows, far fewer than the 40 held pushes.
    found = await run_until_settled(
        db, app_id, ids, {"inbox": Recording(), "log": device}, batch_size=3
    )

    assert len(device.sent) == 10  # one summary per device, never two
    assert sorted(t.device_id or "" for _, t in device.sent) == sorted(
        {t.device_id or "" for _, t in device.sent}
    )
    assert all(m.data["summary_of"] == 4 for m, _ in device.sent)
    pushes = [d["state"] for s in found.values() for d in s["deliveries"] if d["provider"] == "log"]
    assert sorted(pushes) == ["delivered"] * 10 + ["merged"] * 30


async def test_an_idle_worker_wakes_when_a_held_push_comes_due_not_at_its_next_poll(
    db: Database,
) -> None:
    app_id, _ = await seed(db)
    nid = await notify(db, app_id, "after quiet hours")
    window_end = time.time() + 1.0
    await hold(db, [nid], window_end)
    device = Recording()

    # Nothing announces the window's end: a worker polling every 60 s would send it a minute
    # late (and fail this wait); it reads when the next delivery is due instead.
    found = await run_until_settled(
        db, app_id, [nid], {"inbox": Recording(), "log": device}, poll_interval_s=60.0
    )

    assert [m.body for m, _ in device.sent] == ["after quiet hours"]
    assert device_delivery(found[nid])["delivered_at"] >= window_end


async def test_a_notification_past_its_expiry_is_recorded_expired_and_not_sent(
    db: Database,
) -> None:
    app_id, _ = await seed(db)
    stale = await notify(db, app_id, "stale", ttl=0.2)
    fresh = await notify(db, app_id, "fresh", ttl=3600.0)
    await hold(db, [stale, fresh], time.time() + 0.4)  # both wait past the stale one's expiry
    inbox, device = Recording(), Recording()

    found = await run_until_settled(db, app_id, [stale, fresh], {"inbox": inbox, "log": device})

    assert [m.body for m, _ in device.sent] == ["fresh"]
    expired = device_delivery(found[stale])
    assert expired["state"] == "expired" and expired["attempts"] == 0
    assert expired["last_error"].startswith("expired at ")
    assert expired["delivered_at"] is None
    assert device_delivery(found[fresh])["state"] == "delivered"


async def test_a_scheduled_send_counts_its_max_age_and_lifetime_from_its_send_at(
    db: Database,
) -> None:
    app_id, _ = await seed(db)
    nid = await notify(db, app_id, "scheduled two hours ago")
    now = time.time()

    def scheduled(conn: Connection) -> None:  # accepted 2 h ago for now, as send_at does
        conn.execute(
            update(Notification)
            .where(Notification.id == nid)
            .values(created_at=now - 7200, send_at=now)
        )
        conn.execute(
            update(Delivery).where(Delivery.notification_id == nid).values(created_at=now - 7200)
        )

    await db.write(scheduled)
    [job] = [j for j in (await queue.claim(db, "w1", 10, lease_s=30.0)).jobs if j.provider == "log"]
    assert remaining_ttl(job.message, 3600.0) > 3500  # not 0: an hour from send_at, not created

    busy = SendResult(Outcome.RETRY, "busy")
    states = await queue.record(db, "w1", [(job, busy)], POLICY)  # max age 3600 s

    assert states == {job.delivery_id: "retrying"}  # not "failed": its hour started at send_at


async def test_apns_jobs_carry_the_users_unread_count_as_their_badge(db: Database) -> None:
    app_id, _ = await seed(db)
    await db.write(
        lambda conn: users.add_device(
            conn,
            "u1",
            users.NewDevice(platform="apns", token="c3" * 32),
            webpush_hosts=HostAllowList.parse("*"),
        )
    )
    read = await notify(db, app_id, "read already")
    await notify(db, app_id, "unread")
    await notify(db, app_id, "unread too")
    await db.write(lambda conn: store.mark_read(conn, "u1", read, time.time()))

    jobs = (await queue.claim(db, "w1", 100, lease_s=30.0)).jobs

    badges = {(job.provider, job.message.body): job.message.badge for job in jobs}
    assert len(badges) == 9  # inbox, log device and APNs device of each
    for (provider, _), badge in badges.items():
        assert badge == (2 if provider == "apns" else None)


# The summary itself, without a database.


def job(
    n: int,
    *,
    app_id: str = "app_a",
    device: str | None = "dev_1",
    provider: str = "fcm",
    hold: str = "quiet",
    **message: Any,
) -> queue.Job:
    values: dict[str, Any] = {
        "notification_id": f"n{n}",
        "app_id": app_id,
        "uid": "u1",
        "title": f"{app_id} says",
        "body": f"body {n}",
        "data": {"notification_id": f"n{n}"},
        "collapse_key": f"k{n}",
        "created_at": 1000.0 + n,
    } | message
    target = Target("inbox") if provider == "inbox" else Target(provider, device, f"t-{device}")
    return queue.Job(f"d{n}", provider, 0, 1000.0 + n, PushMessage(**values), target, hold)


def test_a_summary_across_apps_counts_them_and_takes_the_highest_priority() -> None:
    send = summary(
        [
            job(2, app_id="app_b", priority="high", expires_at=5000.0),
            job(3, priority="low", expires_at=9000.0),
            job(1, priority="normal", expires_at=7000.0),
        ]
    )
    m = send.job.message
    assert (m.title, m.body) == ("3 new notifications", "app_a says: body 3")
    assert send.job.delivery_id == "d3" and m.notification_id == "n3"  # the newest carries it
    assert m.priority == "high" and m.expires_at == 9000.0
    assert [j.delivery_id for j in send.merged] == ["d1", "d2"]
    assert summary([job(1), job(2, expires_at=5000.0)]).job.message.expires_at is None


def test_only_held_device_pushes_are_merged_per_device_and_expired_ones_are_not_sent() -> None:
    jobs = [
        job(1),
        job(2),
        job(3, device="dev_2"),
        job(4, hold=""),  # not held: sent as it is
        job(5, provider="inbox"),  # the inbox is never merged
        job(6, expires_at=1500.0),  # held, but expired before its window ended
        job(7, hold="muted"),  # muted has no device deliveries; never merged if one appears
    ]
    done, sends = plan(jobs, now=2000.0)
    assert [(j.delivery_id, r.outcome) for j, r in done] == [("d6", Outcome.EXPIRED)]
    groups = sorted((s.job.delivery_id, sorted(j.delivery_id for j in s.merged)) for s in sends)
    assert groups == [("d2", ["d1"]), ("d3", []), ("d4", []), ("d5", []), ("d7", [])]


def test_merged_jobs_share_the_summarys_fate_until_it_is_delivered() -> None:
    send = summary([job(1), job(2), job(3)])
    retry = SendResult(Outcome.RETRY, "FCM 503 UNAVAILABLE", retry_after=5.0)
    assert [r for _, r in send.results(retry)] == [retry, retry, retry]
    delivered = send.results(SendResult(Outcome.DELIVERED))
    assert [r.outcome for _, r in delivered] == [Outcome.DELIVERED, Outcome.MERGED, Outcome.MERGED]
    assert all("d3" in r.reason for _, r in delivered[1:])
    assert Send(job(4)).results(retry) == [(job(4), retry)]
