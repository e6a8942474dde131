"""``nudge``: run the platform and administer it. Admin commands print JSON."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from pydantic import BaseModel

from nudge.cli.remote import CliError, admin_call, admin_token, missing_database, send_over_http
from nudge.config import Settings, load_settings
from nudge.errors import NudgeError

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from nudge.bus.local import EventBus
    from nudge.store.db import Database

T = TypeVar("T")

cli = typer.Typer(
    help="Nudge: Omi-compatible notifications for conversational-AI apps.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="Database commands.", no_args_is_help=True)
apps_cli = typer.Typer(help="Apps and their keys.", no_args_is_help=True)
users_cli = typer.Typer(help="Users, facts and installs.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(apps_cli, name="apps")
cli.add_typer(users_cli, name="users")
new_cli = typer.Typer(help="Start something new.", no_args_is_help=True)
cli.add_typer(new_cli, name="new")
preferences_cli = typer.Typer(
    help="A user's preferences (mute, quiet hours, digest, daily cap).", no_args_is_help=True
)
cli.add_typer(preferences_cli, name="preferences")


def fail(message: str, code: int = 2) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def emit(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


URL_OPTION = typer.Option(
    None, "--url", help="A running server (http://HOST:PORT): use its admin API over HTTP."
)
TOKEN_OPTION = typer.Option(
    None,
    "--token",
    envvar="NUDGE_ADMIN_TOKEN",
    help="--url: the admin token (default: NUDGE_DATA_DIR/admin-token when it is there).",
)


def admin(
    url: str | None,
    token: str | None,
    request: tuple[str, str, dict[str, Any] | None],
    here: Callable[[Database], Awaitable[Any]],
) -> Any:
    """With ``--url``, ``request`` (method, path, body) against a running server's admin API,
    with the token found as ``nudge serve`` keeps it; else ``here`` on this machine's database."""
    if not url:
        return run_with_db(load_settings(), here)
    try:
        return admin_call(url, admin_token(load_settings(), token), *request)
    except CliError as exc:
        fail(str(exc))


def require_database(settings: Settings) -> None:
    problem = missing_database(settings)
    if problem:
        fail(problem)


def run_with_db(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """Migrate, open the database, run ``work(db)`` (e.g. ``db.write(...)``), print clear errors."""
    from nudge.store.db import Database
    from nudge.store.migrate import upgrade

    require_database(settings)

    async def main() -> T:
        await upgrade(settings.database_url)
        db = Database(settings.database_url)
        try:
            return await work(db)
        finally:
            await db.close()

    try:
        return asyncio.run(main())
    except NudgeError as exc:
        fail(exc.detail)


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    role: str | None = typer.Option(
        None,
        help="api: the HTTP API only; worker: deliveries and webhooks, serving only /healthz, "
        "/readyz and /metrics; all: both (default: NUDGE_ROLE, else all).",
    ),
    log_format: str | None = typer.Option(
        None,
        help="text: readable lines and a start summary; json: one object per line (default: "
        "NUDGE_LOG_FORMAT, else text on a terminal and json otherwise).",
    ),
) -> None:
    """Run the platform: the HTTP API and/or the delivery worker."""
    import uvicorn

    from nudge.api.app import create_app
    from nudge.api.protocol import server_options
    from nudge.cli.banner import announce_when_started, base_url
    from nudge.logs import setup_logging

    if role not in (None, "api", "worker", "all"):
        fail("--role must be one of api, worker, all")
    if log_format not in (None, "json", "text"):
        fail("--log-format must be json or text")
    settings = load_settings(**({"role": role} if role else {}))
    if log_format is None and "log_format" not in settings.model_fields_set:
        log_format = "text" if sys.stderr.isatty() else "json"
    fmt = log_format or settings.log_format
    setup_logging(settings.log_level, fmt)
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=max(1, round(settings.shutdown_grace_s)),
        **server_options(settings),
    )
    server = uvicorn.Server(config)
    announce_when_started(server, app, base_url(host, port), settings, text=fmt == "text")
    server.run()
    if not server.started:  # as uvicorn.run: the port was taken, or the start-up failed
        raise typer.Exit(3)


@db_cli.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head")) -> None:
    """Apply the database migrations."""
    from nudge.store.migrate import upgrade_sync

    settings = load_settings()
    upgrade_sync(settings.database_url, revision)
    emit({"status": "ok", "database": settings.database_url.split("@")[-1], "revision": revision})


@db_cli.command("prune")
def db_prune(
    older_than_days: float | None = typer.Option(
        None,
        "--older-than-days",
        help="Delete notifications older than this (default: NUDGE_NOTIFICATION_RETENTION_S).",
    ),
) -> None:
    """Delete old notifications and their deliveries now (workers also do it every 5 minutes)."""
    import time

    from nudge.core.retention import prune_notifications

    settings = load_settings()
    require_database(settings)
    if older_than_days is not None and older_than_days < 0:
        fail("--older-than-days: must be 0 or more")
    if older_than_days is None and settings.notification_retention_s <= 0:
        fail("retention is off (NUDGE_NOTIFICATION_RETENTION_S=0): pass --older-than-days")
    age_s = (
        settings.notification_retention_s if older_than_days is None else older_than_days * 86400
    )
    removed = run_with_db(settings, lambda db: prune_notifications(db, time.time() - age_s))
    emit({"status": "ok", "removed": removed, "older_than_days": age_s / 86400})


def ignored_keys(raw: Any, model: BaseModel, where: str = "") -> list[str]:
    """Keys of a manifest that the model drops (Omi's manifests carry many we do not use)."""
    if not isinstance(raw, dict):
        return []
    fields = type(model).model_fields
    known = set(fields) | {f.alias for f in fields.values() if f.alias}
    found = [f"{where}{key}" for key in raw if key not in known]
    for key, value in raw.items():
        inner = getattr(model, key, None) if key in fields else None
        if isinstance(inner, BaseModel):
            found += ignored_keys(value, inner, f"{where}{key}.")
    return found


def manifest_warnings(raw: Any, parsed: BaseModel, settings: Settings) -> list[str]:
    """What in an accepted manifest will not do what its author likely meant."""
    from urllib.parse import urlsplit

    from nudge.net.guard import address_refusal, literal_address

    warnings = []
    ignored = ignored_keys(raw, parsed)
    if ignored:
        warnings.append(f"ignored manifest keys (not used by Nudge): {', '.join(ignored)}")
    integration = getattr(parsed, "external_integration", None)
    for field in ("webhook_url", "setup_completed_url"):
        target = getattr(integration, field, None) if integration else None
        host = urlsplit(target).hostname if target else None
        if host is None or settings.allow_private_webhooks:
            continue
        ip = literal_address(host)
        refusal = address_refusal(ip, False) if ip else None
        if host == "localhost" or host.endswith(".localhost") or refusal:
            warnings.append(
                f"external_integration.{field} {target} is not a public address: every call "
                f"to it will be refused unless the server runs with NUDGE_ALLOW_PRIVATE_WEBHOOKS=1"
            )
    return warnings


@apps_cli.command("create")
def apps_create(
    manifest: Path = typer.Option(..., "--manifest", "-m", help="Manifest JSON file."),
    direct_limit_per_hour: int | None = typer.Option(None, help="Direct sends per user per hour."),
    env: bool = typer.Option(
        False,
        "--env",
        help="Print shell exports (OMI_APP_ID, OMI_APP_SECRET, NUDGE_WEBHOOK_SECRET) for eval.",
    ),
    url: str | None = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Register an app from a manifest file; prints its id and secrets (shown once)."""
    from pydantic import ValidationError

    from nudge.api.errors import describe_validation
    from nudge.core.apps import create_app
    from nudge.core.manifest import Manifest

    try:
        raw = json.loads(manifest.read_text())
        parsed = Manifest.model_validate(raw)
    except OSError as exc:
        fail(f"cannot read {manifest}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        fail(f"{manifest} is not JSON: {exc}")
    except ValidationError as exc:
        fail(f"bad manifest: {describe_validation(list(exc.errors()))}")
    settings = load_settings()
    for warning in manifest_warnings(raw, parsed, settings):
        typer.secho(f"warning: {warning}", fg=typer.colors.YELLOW, err=True)
    body = {"manifest": raw, "direct_limit_per_hour": direct_limit_per_hour}
    create = partial(create_app, manifest=parsed, direct_limit_per_hour=direct_limit_per_hour)
    created = admin(url, token, ("POST", "/v1/apps", body), lambda db: db.write(create))
    if env:
        import shlex

        names = {"app_id": "OMI_APP_ID", "app_secret": "OMI_APP_SECRET"}
        names["webhook_secret"] = "NUDGE_WEBHOOK_SECRET"
        for field, name in names.items():
            typer.echo(f"export {name}={shlex.quote(created[field])}")
    else:
        emit(created)


@apps_cli.command("list")
def apps_list(url: str | None = URL_OPTION, token: str | None = TOKEN_OPTION) -> None:
    """List apps."""
    from nudge.core.apps import list_apps

    def listed(conn: Connection) -> list[dict[str, Any]]:
        return [a.public() for a in list_apps(conn)]

    emit(admin(url, token, ("GET", "/v1/apps", None), lambda db: db.query(listed)))


@users_cli.command("create")
def users_create(
    name: str = typer.Option(..., help="Display name."),
    uid: str | None = typer.Option(None, help="Your id for the user (generated if absent)."),
    fact: list[str] = typer.Option([], "--fact", help="A fact about the user (repeatable)."),
    url: str | None = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Create a user; prints the uid and the user token (shown once)."""
    from pydantic import ValidationError

    from nudge.api.errors import describe_validation
    from nudge.core.users import NewUser, create_user

    try:
        new = NewUser(uid=uid, name=name, facts=fact)
    except ValidationError as exc:
        fail(describe_validation(list(exc.errors())))
    request = ("POST", "/v1/users", new.model_dump(mode="json", exclude_none=True))
    emit(admin(url, token, request, lambda db: db.write(partial(create_user, new=new))))


@users_cli.command("install")
def users_install(
    uid: str = typer.Argument(..., help="The user."),
    app_id: str = typer.Argument(..., help="The app."),
    scope: list[str] = typer.Option([], "--scope", help="A scope to grant (repeatable)."),
    url: str | None = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Install an app for a user, granting scopes."""
    from nudge.core.manifest import SCOPES
    from nudge.core.users import install_app

    bad = [s for s in scope if s not in SCOPES]
    if bad:
        fail(f"unknown scopes {bad}; choose from {list(SCOPES)}")
    request = ("POST", f"/v1/users/{uid}/apps/{app_id}", {"scopes": scope})
    install = partial(install_app, uid=uid, app_id=app_id, scopes=scope)
    emit(admin(url, token, request, lambda db: db.write(install)))


@users_cli.command("facts")
def users_facts(
    uid: str = typer.Argument(..., help="The user."),
    limit: int = typer.Option(100, min=1, max=1000, help="How many, newest first."),
) -> None:
    """A user's facts (Omi's memories), newest first; those apps imported name their app."""
    from nudge.core.users import get_user
    from nudge.integrations.memories import memories_of

    def work(conn: Connection) -> list[dict[str, Any]]:
        get_user(conn, uid)
        return [
            m.model_dump(mode="json", exclude_none=True)
            for m in memories_of(conn, uid, limit=limit)
        ]

    emit(run_with_db(load_settings(), lambda db: db.query(work)))


@users_cli.command("conversations")
def users_conversations(
    uid: str = typer.Argument(..., help="The user."),
    limit: int = typer.Option(20, min=1, max=1000, help="How many, newest first."),
    segments: int = typer.Option(0, min=-1, max=1000, help="Segments shown per conversation."),
) -> None:
    """A user's conversations, newest first, as Omi's integration API shows them (live and
    imported ones too)."""
    from nudge.core.users import get_user
    from nudge.integrations.conversations import conversations_of

    def work(conn: Connection) -> list[dict[str, Any]]:
        get_user(conn, uid)
        found = conversations_of(conn, uid, limit=limit, max_segments=segments)
        return [c.model_dump(mode="json", exclude_none=True) for c in found]

    emit(run_with_db(load_settings(), lambda db: db.query(work)))


def inbox_call(
    url: str | None,
    token: str | None,
    request: tuple[str, str, dict[str, Any] | None],
    here: Callable[[Database, EventBus], Awaitable[Any]],
) -> Any:
    """:func:`admin` for an inbox change: on this machine's database with the event bus, so the
    users' live streams on running servers hear of it (those on SQLite: only with --url)."""
    from nudge.bus.transport import build_bus

    settings = load_settings()

    async def work(db: Database) -> Any:
        bus = build_bus(settings)
        try:
            return await here(db, bus)
        finally:
            await bus.aclose()

    return admin(url, token, request, work)


@users_cli.command("inbox")
def users_inbox(
    uid: str = typer.Argument(..., help="The user."),
    limit: int = typer.Option(50, min=1, max=200, help="How many, newest first."),
    archived: bool = typer.Option(False, "--archived", help="Show archived ones too."),
    url: str | None = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """A user's inbox, newest first, with each notification's read, seen and archived state."""
    from nudge.core.inbox import list_inbox
    from nudge.core.users import get_user

    def work(conn: Connection) -> dict[str, Any]:
        get_user(conn, uid)
        return list_inbox(conn, uid, limit=limit, cursor=None, archived=archived)

    query = f"?limit={limit}&archived={str(archived).lower()}"
    request = ("GET", f"/v1/users/{uid}/notifications{query}", None)
    emit(admin(url, token, request, lambda db: db.query(work)))


@users_cli.command("unread")
def users_unread(
    uid: str = typer.Argument(..., help="The user."),
    url: str | None = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """How many of a user's notifications are neither read nor archived."""
    from nudge.core.inbox import unread_count
    from nudge.core.users import get_user

    def work(conn: Connection) -> dict[str, int]:
        get_user(conn, uid)
        return unread_count(conn, uid)

    request = ("GET", f"/v1/users/{uid}/notifications/unread-count", None)
    emit(admin(url, token, request, lambda db: db.query(work)))


@users_cli.command("mark")
def users_mark(
    uid: str = typer.Argument(..., help="The user."),
    notification_id: str = typer.Argument(..., help="One of the user's notifications."),
    read: bool | None = typer.Option(None, "--read/--unread", help="Set or clear read."),
    seen: bool | None = typer.Option(None, "--seen/--unseen", help="Set or clear seen."),
    archived: bool | None = typer.Option(
        None, "--archived/--unarchived", help="Set or clear archived."
    ),
    url: str | None = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Set or clear a notification's read, seen and archived flags; prints it after."""
    from pydantic import ValidationError

    from nudge.api.errors import describe_validation
    from nudge.core.inbox import StateChange, set_state

    try:
        change = StateChange(read=read, seen=seen, archived=archived)
    except ValidationError as exc:
        fail(describe_validation(list(exc.errors())))
    body = change.changes()
    request = ("PATCH", f"/v1/users/{uid}/notifications/{notification_id}", dict(body))
    emit(
        inbox_call(
            url, token, request, lambda db, bus: set_state(db, bus, uid, notification_id, body)
        )
    )


@users_cli.command("read-all")
def users_read_all(
    uid: str = typer.Argument(..., help="The user."),
    up_to: str | None = typer.Option(None, help="Only notifications up to this id."),
    url: str | None = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Mark all of a user's unread notifications read; prints how many changed."""
    from nudge.core.inbox import read_all
    from nudge.core.users import get_user

    async def here(db: Database, bus: EventBus) -> dict[str, int]:
        await db.query(partial(get_user, uid=uid))
        return await read_all(db, bus, uid, up_to)

    request = ("POST", f"/v1/users/{uid}/notifications/read-all", {"up_to": up_to})
    emit(inbox_call(url, token, request, here))


@cli.command("send")
def send(
    app_id: str = typer.Argument(..., help="The sending app."),
    uid: str = typer.Argument(..., help="The user."),
    message: str = typer.Argument(..., help="The exact text."),
    priority: str | None = typer.Option(None, help="low, normal (the default) or high."),
    ttl: int | None = typer.Option(None, help="Seconds from when it is due until it expires."),
    send_at: str | None = typer.Option(
        None, help="When to send it: ISO 8601 with its offset (e.g. 2026-01-31T09:00:00Z)."
    ),
    url: str | None = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Queue a direct notification as an app (admin; no app secret needed, no hourly limit; with
    --url it goes through the public API with a one-time key, so the hourly limit applies)."""
    import time

    from nudge.core.direct import send_options
    from nudge.core.notifications import NotificationRequest, accept_notification, validate_message

    settings = load_settings()
    try:
        text = validate_message(message, settings.message_max_chars)
        options = send_options(priority, ttl, send_at, time.time())
    except NudgeError as exc:
        fail(exc.detail)
    if url:
        sending = {"priority": priority, "ttl": ttl, "send_at": send_at}
        try:
            emit(send_over_http(url, admin_token(settings, token), app_id, uid, text, **sending))
        except CliError as exc:
            fail(str(exc))
        return
    accept = partial(
        accept_notification,
        request=NotificationRequest(
            app_id=app_id,
            uid=uid,
            message=text,
            kind="admin",
            priority=options.priority,
            ttl=options.ttl,
            send_at=options.send_at,
        ),
        default_limit_per_hour=settings.direct_limit_per_hour,
        dedupe_window_s=settings.dedupe_window_s,
    )
    emit(run_with_db(settings, lambda db: db.write(accept)).body())


@preferences_cli.command("get")
def preferences_get(
    uid: str = typer.Argument(..., help="The user."),
    url: str | None = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """The user's preferences and each installed app's, defaults filled in."""
    from nudge.core.preferences import get_preferences

    request = ("GET", f"/v1/users/{uid}/preferences", None)
    emit(admin(url, token, request, lambda db: db.query(partial(get_preferences, uid=uid))))


@preferences_cli.command("set")
def preferences_set(
    uid: str = typer.Argument(..., help="The user."),
    file: str = typer.Argument(
        ..., help="The whole document as JSON (docs/api.md, Preferences); - reads stdin."
    ),
    url: str | None = URL_OPTION,
    token: str | None = TOKEN_OPTION,
) -> None:
    """Replace the user's preferences (keys left out go back to their defaults); prints them."""
    from pydantic import ValidationError

    from nudge.api.errors import describe_validation
    from nudge.core.preferences import PreferencesIn, put_preferences

    try:
        raw = sys.stdin.read() if file == "-" else Path(file).read_text()
        document = PreferencesIn.model_validate(json.loads(raw))
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    except json.JSONDecodeError as exc:
        fail(f"{file} is not JSON: {exc}")
    except ValidationError as exc:
        fail(describe_validation(list(exc.errors())))
    request = ("PUT", f"/v1/users/{uid}/preferences", document.model_dump(mode="json"))
    put = partial(put_preferences, uid=uid, document=document)
    emit(admin(url, token, request, lambda db: db.write(put)))


@new_cli.command("app")
def new_app(
    name: str = typer.Argument(..., help="The app's name, also the folder made for it."),
) -> None:
    """Make a folder with a working app: webhook, manifest, a conversation and tests."""
    import shlex

    from nudge.cli.scaffold import ScaffoldError, scaffold

    try:
        folder, secret = scaffold(Path(name))
    except ScaffoldError as exc:
        fail(str(exc))
    typer.echo(
        f"made {folder}/ (app.py, app.json, talk.txt, test_app.py, README.md). Try it:\n\n"
        f"  cd {shlex.quote(str(folder))}\n"
        f"  {sys.executable} -m pytest -q              # the webhook as Nudge calls it\n"
        f"  export NUDGE_WEBHOOK_SECRET={secret}   # a development secret\n"
        f"  {sys.executable} app.py --port 8001 &\n"
        f"  nudge simulate --webhook http://127.0.0.1:8001/webhook --transcript talk.txt\n\n"
        f"On a platform, `nudge apps create --manifest app.json --env` gives the app its real "
        f"secret."
    )


@cli.command()
def demo(
    data_dir: Path = typer.Option(
        Path("./nudge-data"), help="Where the demo keeps its SQLite file."
    ),
    port: int = typer.Option(8000, help="Platform port (another free one if it is taken)."),
    keep: bool = typer.Option(False, "--keep", help="Stay up and print the console URL."),
    examples: Path | None = typer.Option(
        None, help="The repository's examples/ folder (found next to the source by default)."
    ),
) -> None:
    """Run the platform on the embedded defaults with the mentor example, end to end."""
    from nudge.cli.demo import DemoOptions
    from nudge.cli.demo import main as run

    raise typer.Exit(run(DemoOptions(data_dir=data_dir, port=port, keep=keep, examples=examples)))


@cli.command()
def simulate(
    transcript: Path = typer.Option(
        ..., "--transcript", "-t", help="'Speaker: text' lines, or JSON segments."
    ),
    webhook: str | None = typer.Option(
        None, help="Call this webhook as the platform would (no platform needed)."
    ),
    platform: str | None = typer.Option(None, help="Or play through a running platform (URL)."),
    secret: str | None = typer.Option(
        None, envvar="NUDGE_WEBHOOK_SECRET", help="--webhook: the app's whsec_ signing secret."
    ),
    token: str | None = typer.Option(
        None, envvar="NUDGE_ADMIN_TOKEN", help="--platform: the admin token."
    ),
    uid: str = typer.Option("user123", help="The user having the conversation."),
    app: list[str] = typer.Option(
        [], "--app", help="--platform: follow this app (repeatable; default: all installed)."
    ),
    session_id: str | None = typer.Option(None, help="Session id (default: a new one)."),
    me: str | None = typer.Option(None, help="The speaker who is the user (default: the first)."),
    batch: int = typer.Option(1, help="Segments per call."),
    interval: float = typer.Option(0.0, help="Seconds between calls (0: as fast as possible)."),
    user_name: str = typer.Option("Ana", help="--webhook: the {{user_name}} to fill in."),
    fact: list[str] = typer.Option([], "--fact", help="--webhook: a fact (repeatable)."),
    chat: list[str] = typer.Option(
        [], "--chat", help="--webhook: a {{user_chat}} line such as 'App: Hi' (repeatable)."
    ),
    grant: list[str] = typer.Option(
        [], "--grant", help="--webhook: a scope the user granted (repeatable; default: all)."
    ),
    past: list[str] = typer.Option(
        [],
        "--past",
        help="--webhook: a past conversation {{user_context}} would bring back (repeatable).",
    ),
    finish: bool = typer.Option(True, help="--platform: finish the session at the end."),
    wait: float = typer.Option(60.0, help="--platform: seconds to wait for the platform's calls."),
) -> None:
    """Play a conversation to an app's webhook (or through a platform) and show every step."""
    from rich.console import Console

    from nudge.cli import simulate as sim

    if (webhook is None) == (platform is None):
        fail("give exactly one of --webhook URL (the app directly) or --platform URL")
    out = Console(highlight=False)
    try:
        if platform is not None and not token:
            token = admin_token(load_settings(), None, "--platform")
        loaded = sim.load_transcript(transcript, me=me)
        play = sim.Play(loaded, session_id or sim.new_session_id(), batch, interval)
        if webhook is not None:
            granted = tuple(grant) or sim.SCOPES
            user = sim.SampleUser(uid, user_name, tuple(fact), tuple(chat), granted, tuple(past))
            ok = asyncio.run(sim.run_webhook(play, out, url=webhook, secret=secret, user=user))
            raise typer.Exit(0 if ok else 1)
        assert platform is not None
        asyncio.run(
            sim.run_platform(
                play, out, url=platform, token=token, uid=uid, apps=app, finish=finish, wait_s=wait
            )
        )
    except (sim.SimulateError, CliError, NudgeError) as exc:
        fail(exc.detail if isinstance(exc, NudgeError) else str(exc), code=1)


def main() -> None:
    try:
        cli()
    except CliError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
