"""The running platform: every long-lived part, built from settings and passed around explicitly."""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nudge.bus.local import EventBus
from nudge.bus.transport import build_bus
from nudge.config import Settings
from nudge.core.acceptor import Acceptor
from nudge.core.notifications import Limits
from nudge.core.retention import Housekeeper
from nudge.delivery.providers import ProviderDeps, build_providers
from nudge.delivery.providers.base import Provider
from nudge.delivery.queue import DeliveryRetry
from nudge.delivery.worker import DeliveryWorker
from nudge.integrations.limits import Counters
from nudge.llm import LLM, LLMError, build_llm
from nudge.metrics import Metrics
from nudge.net.webhooks import WebhookClient
from nudge.proactive.claims import Claims
from nudge.proactive.dispatcher import INGEST_BATCH, Dispatcher
from nudge.proactive.ingest import Ingestor
from nudge.proactive.pipeline import Pipeline
from nudge.store.db import Database
from nudge.store.migrate import upgrade

log = logging.getLogger("nudge")


def resolve_admin_token(settings: Settings) -> str:
    """``NUDGE_ADMIN_TOKEN``, or one generated on first start, kept in the data directory."""
    if settings.admin_token:
        return settings.admin_token
    path = Path(settings.data_dir) / "admin-token"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = "adm_" + secrets.token_hex(24)
    path.write_text(token + "\n")
    path.chmod(0o600)
    print(f"nudge: generated admin token (stored in {path}): {token}", flush=True)
    return token


@dataclass
class Platform:
    settings: Settings
    db: Database
    bus: EventBus
    metrics: Metrics
    acceptor: Acceptor
    admin_token: str
    counters: Counters  # the integration API's request windows
    providers: dict[str, Provider] = field(default_factory=dict)
    unconfigured: dict[str, str] = field(default_factory=dict)
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    workers: list[DeliveryWorker] = field(default_factory=list)
    # Calls to apps (every role: installs check setup_completed_url); the proactive pipeline and
    # its dispatcher run in the worker roles.
    webhooks: WebhookClient | None = None
    llm: LLM | None = None
    claims: Claims | None = None
    dispatcher: Dispatcher | None = None
    ingestor: Ingestor | None = None
    housekeeper: Housekeeper | None = None

    @classmethod
    async def start(cls, settings: Settings, *, migrate: bool = True) -> Platform:
        if migrate:
            await upgrade(settings.database_url)
        db = Database(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
        )
        bus = build_bus(settings)
        db.start()
        limits = Limits(
            settings.direct_limit_per_hour,
            settings.dedupe_window_s,
            message_per_hour=settings.webhook_message_limit_per_hour,
        )
        platform = cls(
            settings=settings,
            db=db,
            bus=bus,
            metrics=Metrics(),
            acceptor=Acceptor(db, limits, lock_rows=db.is_postgres),
            admin_token=resolve_admin_token(settings),
            counters=Counters(db, settings.redis_url),
        )
        platform.acceptor.start()
        platform.webhooks = WebhookClient(settings)
        if settings.role in ("worker", "all"):
            platform.start_workers()
            platform.start_dispatcher()
            # Always: the hourly windows' buckets are pruned even when notifications are kept.
            platform.housekeeper = Housekeeper(db, settings.notification_retention_s)
            platform.tasks.append(
                asyncio.create_task(platform.housekeeper.run(), name="nudge-retention")
            )
        platform.ingestor = Ingestor(
            db, platform.dispatcher, INGEST_BATCH, silence_s=settings.conversation_silence_s
        )
        platform.ingestor.start()
        return platform

    def extraction_llm(self) -> LLM | None:
        """The LLM for memory extraction, built on first use where nothing dispatches (``--role
        api``); None (the sentences fallback) if it cannot be built."""
        if self.llm is None:
            try:
                self.llm = build_llm(self.settings)
            except LLMError as exc:
                log.warning("no LLM for memory extraction", extra={"error": str(exc)})
        return self.llm

    def start_dispatcher(self) -> None:
        """The webhook dispatcher and the proactive pipeline (LLM, rate-limit claims)."""
        assert self.webhooks is not None
        self.llm = build_llm(self.settings)
        self.claims = Claims(self.db, self.settings.redis_url)
        pipeline = Pipeline(
            settings=self.settings,
            acceptor=self.acceptor,
            bus=self.bus,
            llm=self.llm,
            claims=self.claims,
            metrics=self.metrics,
        )
        self.dispatcher = Dispatcher(
            settings=self.settings,
            db=self.db,
            webhooks=self.webhooks,
            pipeline=pipeline,
            metrics=self.metrics,
        )
        self.tasks.append(asyncio.create_task(self.dispatcher.run(), name="nudge-dispatcher"))

    def start_workers(self) -> None:
        deps = ProviderDeps(settings=self.settings, bus=self.bus)
        self.providers, self.unconfigured = build_providers(deps)
        s = self.settings
        worker = DeliveryWorker(
            self.db,
            self.bus,
            self.providers,
            self.unconfigured,
            worker_id=s.worker_id,
            policy=DeliveryRetry(
                s.delivery_base_backoff_s, s.delivery_max_backoff_s, s.delivery_max_age_s
            ),
            metrics=self.metrics,
            batch_size=s.delivery_batch_size,
            concurrency=s.delivery_concurrency,
            lease_s=s.delivery_lease_s,
            poll_interval_s=s.delivery_poll_interval_s,
        )
        self.workers.append(worker)
        self.tasks.append(asyncio.create_task(worker.run(), name="nudge-delivery-worker"))

    async def close(self) -> None:
        log.info("shutting down", extra={"grace_s": self.settings.shutdown_grace_s})
        for worker in self.workers:
            worker.stop()
        if self.housekeeper is not None:
            self.housekeeper.stop()
        if self.ingestor is not None:
            await self.ingestor.aclose()
        if self.dispatcher is not None:
            await self.dispatcher.aclose()  # before the database: its calls still write traces
        await self.bus.wake_workers()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=self.settings.shutdown_grace_s)
        for task in self.tasks:
            task.cancel()
        if self.tasks:  # cancelled workers still record what finished and release their claims
            await asyncio.wait(self.tasks, timeout=10)
        await self.acceptor.aclose()
        for provider in self.providers.values():
            await provider.aclose()
        for part in (self.webhooks, self.llm, self.claims, self.counters):
            if part is not None:
                await part.aclose()
        await self.bus.aclose()
        await self.db.close()
