"""Settings, read from the environment with the ``NUDGE_`` prefix (contract.md §6).

Settings are an explicit object passed to whatever needs them; nothing reads the environment
after start-up.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NUDGE_", extra="ignore")

    # Storage
    # One folder for the SQLite file and the generated admin token, relative to the working
    # directory unless absolute; every command (serve and the admin ones) uses the same rule.
    data_dir: Path = Path("./nudge-data")
    database_url: str = ""  # default: sqlite+aiosqlite:///<data_dir>/nudge.db
    redis_url: str | None = None
    # PostgreSQL connections per process (pool + overflow); mind max_connections across processes.
    db_pool_size: int = 10
    db_max_overflow: int = 10

    # Auth
    admin_token: str | None = None
    # Refused credentials (401/403) per client address: this many within the window -> 429
    auth_failure_limit: int = Field(default=20, ge=1)
    auth_failure_window_s: float = Field(default=60.0, gt=0)

    # Request limits (docs/security.md): sizes in bytes, times from the connection or request
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_query_bytes: int = Field(default=32_768, ge=1024)
    max_header_bytes: int = Field(default=65_536, ge=4096)  # request line and headers
    header_timeout_s: float = Field(default=10.0, gt=0)
    body_timeout_s: float = Field(default=30.0, gt=0)
    max_connections: int = Field(default=1000, ge=1)  # per process; more are answered 503

    # LLM
    llm_provider: Literal["embedded", "openai", "fake"] = "embedded"
    llm_base_url: str | None = None
    llm_api_key: str | None = None
    llm_model: str = "gpt-4o-mini"
    llm_model_path: str | None = None
    llm_timeout_s: float = 30.0
    llm_max_retries: int = 2
    llm_max_tokens: int = 120
    llm_temperature: float = 0.3
    llm_context_tokens: int = 1024  # embedded: context window; longer prompts are shortened
    llm_threads: int | None = None  # embedded: CPU threads (default: half the cores)
    llm_fake_latency_s: float = 0.0  # fake: fixed generation time (benchmarks)
    # The generation step (nudge.llm.writer): the answer's form (auto: json for openai, plain
    # sentences or SKIP for embedded), one call or gate -> write -> critic, tries when the
    # message fails the checks
    llm_answer: Literal["auto", "json", "text"] = "auto"
    llm_stages: Literal["single", "gate-write-critic"] = "single"
    llm_attempts: int = Field(default=3, ge=1, le=5)

    # Push providers
    fcm_base_url: str = "https://fcm.googleapis.com"
    fcm_credentials_file: str | None = None
    apns_base_url: str = "https://api.push.apple.com"
    apns_key_file: str | None = None
    apns_key_id: str | None = None
    apns_team_id: str | None = None
    apns_topic: str | None = None
    vapid_private_key: str | None = None
    vapid_subject: str | None = None
    # Web Push endpoint hosts allowed (each also allows its subdomains; "*.x": subdomains only;
    # "*": any host). Checked when a device is registered and at every send.
    webpush_allowed_hosts: str = (
        "fcm.googleapis.com,android.googleapis.com,push.services.mozilla.com,"
        "web.push.apple.com,*.notify.windows.com"
    )

    # Webhooks and proactive pipeline
    allow_private_webhooks: bool = False
    proactive_interval_s: float = 30.0
    # A live conversation ends by itself after this long without a segment (0: only on finish).
    conversation_silence_s: float = 120.0
    # {"message"} answers of realtime and memory webhooks per user per app per hour (0: no cap).
    # Not the direct API's cap, as in Omi; a guard against a runaway app.
    webhook_message_limit_per_hour: int = 600
    webhook_flush_interval_s: float = 1.0
    webhook_disable_after_s: float = 3600.0
    webhook_connect_timeout_s: float = 2.0
    webhook_timeout_s: float = 15.0  # total, per call (connect, send, answer)
    webhook_breaker_failures: int = 5  # consecutive failures that open an app's circuit
    webhook_breaker_cooldown_s: float = 30.0  # open circuit: calls skipped, then one trial
    webhook_max_answer_bytes: int = 1_000_000
    webhook_concurrency_per_app: int = 16  # calls in flight per app; more wait their turn
    webhook_max_waiting_per_app: int = 2000  # beyond this, calls to that app are dropped
    dispatcher_poll_interval_s: float = 0.25  # how often other processes' segments are seen
    trace_retention_s: float = 7 * 24 * 3600.0

    # Connections under the FCM and Web Push providers (APNs always uses httpx, for HTTP/2)
    push_http_transport: Literal["aiohttp", "httpx"] = "aiohttp"

    # Retention: notifications (with their deliveries) older than this are deleted; 0 keeps them
    notification_retention_s: float = 90 * 24 * 3600.0

    # Omi's integration API: imports per app per user per hour (Omi's own limits)
    integration_conversations_per_hour: int = 10
    integration_memories_per_hour: int = 60

    # Direct notifications
    direct_limit_per_hour: int = 10
    message_max_chars: int = 2000
    dedupe_window_s: float = 60.0

    # Delivery
    delivery_max_age_s: float = 24 * 3600.0
    delivery_base_backoff_s: float = 1.0
    delivery_max_backoff_s: float = 600.0
    delivery_lease_s: float = 60.0
    delivery_batch_size: int = 200
    delivery_concurrency: int = 256  # provider calls in flight per worker
    delivery_poll_interval_s: float = 0.5

    # Logging
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    # Process role (``nudge serve --role``)
    role: Literal["api", "worker", "all"] = "all"
    # On SIGTERM: how long open HTTP requests, then in-flight deliveries, may take to finish
    # (each phase); what is still sending after that is abandoned and its claim given back.
    shutdown_grace_s: float = 10.0

    worker_id: str = Field(default_factory=lambda: secrets.token_hex(4))

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir.as_posix()}/nudge.db"
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment, with explicit overrides (used by the CLI and tests)."""
    return Settings(**overrides)  # type: ignore[arg-type]
