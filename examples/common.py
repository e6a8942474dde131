"""What both example apps need: settings from the environment and a ``--host/--port`` runner."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from nudge.logs import setup_logging
from nudge.sdk import AsyncNudgeClient


@dataclass(frozen=True)
class AppSettings:
    """``NUDGE_WEBHOOK_SECRET`` (required): the app's ``whsec_`` secret, shown when the app is
    created. ``NUDGE_BASE_URL``, ``NUDGE_APP_ID``, ``NUDGE_APP_SECRET`` (optional, all three):
    where and as whom to send direct notifications with the SDK client."""

    webhook_secret: str
    base_url: str | None = None
    app_id: str | None = None
    app_secret: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AppSettings:
        env = os.environ if environ is None else environ
        secret = env.get("NUDGE_WEBHOOK_SECRET", "").strip()
        if not secret:
            raise SystemExit(
                "error: set NUDGE_WEBHOOK_SECRET to the app's webhook_secret (whsec_...), shown "
                "by POST /v1/apps or `nudge apps create`"
            )
        api = [
            env.get(name, "").strip() or None
            for name in ("NUDGE_BASE_URL", "NUDGE_APP_ID", "NUDGE_APP_SECRET")
        ]
        if any(api) and not all(api):
            raise SystemExit(
                "error: set all of NUDGE_BASE_URL, NUDGE_APP_ID and NUDGE_APP_SECRET, or none"
            )
        return cls(secret, *api)

    def client(self) -> AsyncNudgeClient | None:
        """An SDK client when the app's API credentials are configured."""
        if not (self.base_url and self.app_id and self.app_secret):
            return None
        return AsyncNudgeClient(self.base_url, self.app_id, self.app_secret)


def serve(
    create_app: Callable[[], FastAPI], default_port: int, argv: list[str] | None = None
) -> None:
    parser = argparse.ArgumentParser(description=(create_app.__module__ or "").rsplit(".", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level, "text")
    try:
        app = create_app()
    except ValueError as exc:
        sys.exit(f"error: {exc}")
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level.lower())
