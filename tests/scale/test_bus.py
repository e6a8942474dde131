"""The event bus between processes, on the real Redis and PostgreSQL: two bus instances stand for
two processes (each has its own connections, exactly as two processes would)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
import redis.asyncio as redis

from nudge.bus import transport as bus_module
from nudge.bus.transport import PostgresEventBus, RedisEventBus, TransportBus, asyncpg_dsn
from tests.conftest import free_port

Factory = Callable[[], TransportBus]


@pytest.fixture(params=["redis", "postgres"])
async def make_bus(
    request: pytest.FixtureRequest, postgres_url: str, redis_url: str
) -> AsyncIterator[Factory]:
    made: list[TransportBus] = []
    prefix = f"nudge-test-{free_port()}:"  # one deployment's channels, apart from other tests'

    def make() -> TransportBus:
        b: TransportBus = (
            RedisEventBus(redis_url, prefix=prefix)
            if request.param == "redis"
            else PostgresEventBus(asyncpg_dsn(postgres_url))
        )
        made.append(b)
        return b

    yield make
    for b in made:
        await b.aclose()


async def next_event(queue: asyncio.Queue[dict[str, object]]) -> dict[str, object]:
    return await asyncio.wait_for(queue.get(), 5)


async def test_events_reach_the_other_process_for_that_user_only(make_bus: Factory) -> None:
    a = make_bus()
    b = make_bus()
    async with b.subscribe("ana") as ana, b.subscribe("bob") as bob, a.subscribe("ana") as ana_a:
        await a.publish("ana", {"id": "n1", "body": "hello"})
        assert await next_event(ana) == {"id": "n1", "body": "hello"}
        assert await next_event(ana_a) == {"id": "n1", "body": "hello"}  # the sender's own too
        await a.publish("bob", {"id": "n2"})
        assert await next_event(bob) == {"id": "n2"}
        assert ana.empty() and ana_a.empty()


async def test_a_large_event_arrives_whole(make_bus: Factory) -> None:
    """Over NOTIFY's 8,000 bytes (multi-byte text): sent in parts, put back together."""
    a, b = make_bus(), make_bus()
    body = "é🙂漢" * 2000  # 18,000 bytes of UTF-8
    async with b.subscribe("ana") as ana:
        await asyncio.gather(
            a.publish("ana", {"id": "big", "body": body}), a.publish("ana", {"id": "small"})
        )
        got = [await next_event(ana), await next_event(ana)]
    assert sorted(got, key=lambda e: str(e["id"])) == [{"id": "big", "body": body}, {"id": "small"}]


async def test_an_event_with_a_lone_surrogate_crosses_with_its_batch(make_bus: Factory) -> None:
    """A row stored before the edge checks (data {"k": "\\ud800"}): UTF-8 cannot encode it, so it
    crosses with U+FFFD in its place, and the events sent in the same batch cross too."""
    a, b = make_bus(), make_bus()
    async with b.subscribe("ana") as ana:
        await asyncio.gather(
            a.publish("ana", {"id": "n1", "data": {"k": "x\ud800y"}}),
            a.publish("ana", {"id": "n2", "body": "fine"}),
        )
        got = [await next_event(ana), await next_event(ana)]
    assert sorted(got, key=lambda e: str(e["id"])) == [
        {"id": "n1", "data": {"k": "x\ufffdy"}},
        {"id": "n2", "body": "fine"},
    ]


async def test_wake_up_crosses_processes(make_bus: Factory) -> None:
    a, b = make_bus(), make_bus()
    await b.wait_for_work(0.01)  # starts listening for wake-ups
    waiting = asyncio.create_task(b.wait_for_work(60))
    await asyncio.sleep(0.1)
    await a.wake_workers()
    await asyncio.wait_for(waiting, 10)  # woken, long before its 60 s


async def test_a_burst_of_wake_ups_leaves_the_process_as_two(
    make_bus: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first at once, the rest of the window as one at its end."""
    a, b = make_bus(), make_bus()
    sent: list[bool] = []
    send = a._send

    async def counting(events: list[tuple[str, dict[str, object]]], wake: bool) -> None:
        sent.append(wake)
        await send(events, wake)

    monkeypatch.setattr(a, "_send", counting)
    await b.wait_for_work(0.01)
    for _ in range(50):
        await a.wake_workers()
        await asyncio.sleep(0)
    await asyncio.wait_for(b.wait_for_work(60), 10)
    await asyncio.sleep(bus_module.WAKE_GAP_S * 3)
    assert sent == [True, True]


async def test_many_events_are_batched_and_all_arrive(make_bus: Factory) -> None:
    a, b = make_bus(), make_bus()
    async with b.subscribe("ana") as ana:
        await asyncio.gather(*(a.publish("ana", {"id": i}) for i in range(300)))
        got = [(await next_event(ana))["id"] for _ in range(300)]
    assert sorted(got) == list(range(300))  # type: ignore[type-var]


async def test_redis_subscribes_only_while_a_client_listens(redis_url: str) -> None:
    b = RedisEventBus(redis_url, prefix=f"nudge-test-{free_port()}:")
    client = redis.from_url(redis_url)
    channel = b.inbox_prefix + "ana"
    try:
        async with b.subscribe("ana"), b.subscribe("ana"):
            assert (await client.pubsub_numsub(channel))[0][1] == 1  # one per process

        async def gone() -> bool:
            return (await client.pubsub_numsub(channel))[0][1] == 0

        for _ in range(50):
            if await gone():
                break
            await asyncio.sleep(0.05)
        assert await gone()
    finally:
        await client.aclose()
        await b.aclose()


async def test_transport_down_keeps_events_in_this_process(
    caplog: pytest.LogCaptureFixture,
) -> None:
    b = RedisEventBus(f"redis://127.0.0.1:{free_port()}/0")  # nothing listens there
    try:
        with caplog.at_level(logging.WARNING, logger="nudge.bus"):
            async with b.subscribe("ana") as ana:
                await b.publish("ana", {"id": "n1"})
                await b.publish("ana", {"id": "n2"})  # within the retry pause: not tried again
                assert [await next_event(ana), await next_event(ana)] == [
                    {"id": "n1"},
                    {"id": "n2"},
                ]
            await b.wake_workers()
            await b.wait_for_work(0.01)
        warnings = [r for r in caplog.records if r.name == "nudge.bus"]
        assert len(warnings) == 1 and "event transport failing" in warnings[0].getMessage()
    finally:
        await b.aclose()


async def test_postgres_listener_comes_back_after_losing_its_connection(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bus_module, "PG_KEEPALIVE_S", 0.1)
    a = PostgresEventBus(asyncpg_dsn(postgres_url))
    b = PostgresEventBus(asyncpg_dsn(postgres_url))
    admin = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        async with b.subscribe("ana") as ana:
            await a.publish("ana", {"id": "before"})
            assert await next_event(ana) == {"id": "before"}
            listener = b._conn.get_server_pid()
            await admin.execute("SELECT pg_terminate_backend($1)", listener)

            async def relistening() -> bool:
                conn = b._conn
                return (
                    conn is not None and not conn.is_closed() and conn.get_server_pid() != listener
                )

            for _ in range(100):
                if await relistening():
                    break
                await asyncio.sleep(0.05)
            assert await relistening()
            await a.publish("ana", {"id": "after"})
            assert await next_event(ana) == {"id": "after"}
    finally:
        await admin.close()
        await a.aclose()
        await b.aclose()
