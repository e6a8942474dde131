"""The admin commands against a running server (``--url``/``--token``), and the check that keeps
them from creating an empty database next to the wrong working directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from nudge.config import Settings
from nudge.sdk.client import error_detail


class CliError(Exception):
    """A problem the user can fix; the CLI prints it and exits non-zero."""


def missing_database(settings: Settings) -> str | None:
    """Why the admin commands must not open ``settings.database_url``: a SQLite file that is not
    there would be created empty, and every lookup would answer "not found"."""
    from sqlalchemy.engine import make_url

    url = make_url(settings.database_url)
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    path = Path(url.database)
    if path.exists():
        return None
    return (
        f"no database at {path.resolve()}. Run this where `nudge serve` runs (its data folder is "
        f"NUDGE_DATA_DIR, default ./nudge-data), or set NUDGE_DATA_DIR or NUDGE_DATABASE_URL to "
        f"the platform's, or pass --url http://HOST:PORT to use a running server; "
        f"`nudge db upgrade` creates a new database here"
    )


def admin_token(settings: Settings, token: str | None, option: str = "--url") -> str:
    """``--token`` (or NUDGE_ADMIN_TOKEN), else the token ``nudge serve`` generated and kept."""
    if token:
        return token
    kept = Path(settings.data_dir) / "admin-token"
    if kept.exists():
        return kept.read_text().strip()
    raise CliError(
        f"{option} needs the admin token: pass --token or set NUDGE_ADMIN_TOKEN (a generated "
        f"one is kept in {kept.resolve()} on the server's machine)"
    )


def admin_call(
    url: str, token: str, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    """One admin request; a refusal becomes a :class:`CliError` with the server's detail."""
    if not url.startswith(("http://", "https://")):
        raise CliError(f"--url must start with http:// or https://, not {url!r}")
    try:
        response = httpx.request(
            method,
            url.rstrip("/") + path,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {url}: {exc}") from exc
    if response.status_code >= 400:
        raise CliError(f"{method} {path}: {response.status_code} {error_detail(response)}")
    return response.json() if response.content else None


def send_over_http(
    url: str, token: str, app_id: str, uid: str, message: str, **options: Any
) -> dict[str, Any]:
    """Send as the app through the public API with a key made for this one send, then revoked
    (the server has no admin send route, so the app's hourly limit applies here). ``options``:
    the send options (priority, ttl, send_at) as the SDK's ``send_notification`` takes them."""
    from nudge.sdk import NudgeClient
    from nudge.sdk.errors import NudgeError as SdkError

    key = admin_call(url, token, "POST", f"/v1/apps/{app_id}/keys")
    try:
        with NudgeClient(url, app_id, key["app_secret"]) as client:
            result = client.send_notification(uid, message, **options)
    except SdkError as exc:
        raise CliError(str(exc)) from exc
    finally:
        admin_call(url, token, "DELETE", f"/v1/apps/{app_id}/keys/{key['key_id']}")
    return {"status": "ok", "notification_id": result.notification_id, "devices": result.devices}
