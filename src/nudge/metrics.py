"""Prometheus metrics, in a registry owned by one platform instance (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.accepted = Counter(
            "nudge_notifications_accepted_total",
            "Notifications durably accepted",
            ["kind"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "nudge_notifications_rejected_total",
            "Notification requests refused",
            ["status"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "nudge_deliveries_total",
            "Delivery attempts by provider and outcome",
            ["provider", "outcome"],
            registry=self.registry,
        )
        self.webhook_calls = Counter(
            "nudge_webhook_calls_total",
            "Calls to app webhooks by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.llm_seconds = Histogram(
            "nudge_llm_seconds", "LLM generation time", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
