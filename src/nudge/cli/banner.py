"""What ``nudge serve`` says once it is listening: where it is, where the admin token is, which
push providers are on. Plain lines for a person at a terminal, one JSON log line otherwise."""

from __future__ import annotations

import logging
import sys
import threading
import time
from pathlib import Path
from typing import Any

from nudge.config import Settings

log = logging.getLogger("nudge")


def base_url(host: str, port: int) -> str:
    """A URL a browser on this machine can open (a wildcard address is not one)."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    return f"http://[{shown}]:{port}" if ":" in shown else f"http://{shown}:{port}"


def admin_token_source(settings: Settings) -> str:
    if settings.admin_token:
        return "NUDGE_ADMIN_TOKEN"
    return str((Path(settings.data_dir) / "admin-token").resolve())


def start_facts(url: str, settings: Settings, platform: Any) -> dict[str, Any]:
    database = settings.database_url.split("@")[-1]
    return {
        "url": url,
        "role": settings.role,
        "database": database,
        "console": f"{url}/console",
        "docs": f"{url}/docs",
        "admin_token": admin_token_source(settings),
        "providers": sorted(platform.providers) if platform else [],
        "providers_off": dict(platform.unconfigured) if platform else {},
        "llm": settings.llm_provider,
    }


def start_text(facts: dict[str, Any]) -> str:
    off = facts["providers_off"]
    lines = [
        f"nudge: ready on {facts['url']} (role {facts['role']}, database {facts['database']})",
        f"  console      {facts['console']}?token=<admin token>",
        f"  API docs     {facts['docs']}",
        f"  admin token  {facts['admin_token']}",
        f"  providers    {', '.join(facts['providers']) or 'none in this role'}"
        + (f"; off: {', '.join(off)} (see /healthz)" if off else ""),
        f"  LLM          {facts['llm']}",
        "  stop with Ctrl+C",
    ]
    return "\n".join(lines)


def announce_when_started(server: Any, app: Any, url: str, settings: Settings, text: bool) -> None:
    """Wait in a thread for uvicorn to listen, then say so once (on stderr)."""

    def wait() -> None:
        while not server.started:
            if server.should_exit:
                return
            time.sleep(0.05)
        facts = start_facts(url, settings, getattr(app.state, "platform", None))
        if text:
            print(start_text(facts), file=sys.stderr, flush=True)
        else:
            log.info("ready", extra=facts)

    threading.Thread(target=wait, name="nudge-announce", daemon=True).start()
