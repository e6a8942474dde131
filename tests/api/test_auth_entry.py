"""Every route, both plain-ASGI fast paths and the WebSocket read their credential through
``nudge.auth``: a route added without it fails here (or is listed below with why it takes none)."""

from __future__ import annotations

from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, APIWebSocketRoute
from starlette.routing import BaseRoute

from nudge import auth
from nudge.api.direct_route import DirectNotificationRoute
from nudge.api.guard import RequestGuard
from nudge.api.proactive import FastSegments
from nudge.config import Settings
from nudge.errors import NudgeError
from tests.conftest import make_settings

NO_CREDENTIAL = {
    "/openapi.json": "the API's description is public",
    "/docs": "the API's documentation page",
    "/redoc": "the API's documentation page",
    "/docs-assets": "the documentation pages' files",
    "/healthz": "a liveness probe",
    "/readyz": "a readiness probe",
    "/metrics": "Prometheus scrapes it (docs/security.md: keep it on the private network)",
    "/console": "the console's page: it asks for a token and calls the API with it",
    "/console/static/{name}": "the console's files",
}
# Plain-ASGI routes, answered ahead of the router (FastSegments is also a typed route).
FAST_PATHS = {DirectNotificationRoute: "/v2/integrations/{app_id}/notification", FastSegments: ""}
SEGMENT = {"text": "hi", "speaker": "SPEAKER_00", "is_user": True, "start": 0, "end": 1}
# Routes that read their body before their credential need a body that validates.
BODIES: dict[str, Any] = {
    "/api/notifications/send": {"user_id": "x", "message": "hi"},
    "/v1/integrations/notification": {"aid": "x", "uid": "x", "message": "hi"},
    "/v2/integrations/{app_id}/user/conversations": {"text": "hi"},
    "/v1/users/{uid}/sessions/{session_id}/segments": {"segments": [SEGMENT]},
}


def routes(items: list[BaseRoute]) -> Iterator[BaseRoute]:
    for route in items:
        included = getattr(route, "original_router", None)  # FastAPI >= 0.160 keeps routers
        yield from routes(included.routes) if included is not None else (route,)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, auth_failure_limit=1000)  # every probe is a refused credential


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[str | None]:
    """The Authorization headers that reached nudge.auth."""
    headers: list[str | None] = []
    parse_bearer = auth.parse_bearer

    def spy(authorization: str | None, *args: Any) -> str:
        headers.append(authorization)
        return parse_bearer(authorization, *args)

    monkeypatch.setattr(auth, "parse_bearer", spy)
    return headers


def _url(path: str) -> str:
    return path.replace("{", "").replace("}", "")  # every path parameter: its own name


async def test_every_http_route_asks_nudge_auth(
    client: httpx.AsyncClient, seen: list[str | None]
) -> None:
    app: FastAPI = client._transport.app  # type: ignore[attr-defined]
    assert {m.cls for m in app.user_middleware} == {RequestGuard, *FAST_PATHS}
    calls = [("POST", FAST_PATHS[DirectNotificationRoute], {"uid": "x", "message": "hi"})]
    for route in routes(app.routes):
        path = getattr(route, "path", "")
        if path in NO_CREDENTIAL or isinstance(route, APIWebSocketRoute):
            continue
        assert isinstance(route, APIRoute), f"{path}: a new kind of route; check its credential"
        query = {p.name: "x" for p in route.dependant.query_params if p.field_info.is_required()}
        calls += [(method, path, query) for method in set(route.methods or ()) - {"HEAD"}]
    skipped = []
    for n, (method, path, query) in enumerate(calls):
        token = f"Bearer probe-{n}"
        body = BODIES.get(path, {}) if method in ("POST", "PUT", "PATCH") else None
        r = await client.request(
            method, _url(path), params=query, json=body, headers={"Authorization": token}
        )
        if token not in seen:
            skipped.append(f"{method} {path} ({r.status_code})")
        assert r.status_code < 500, f"{method} {path}: {r.text}"
    assert skipped == [], "routes that never asked nudge.auth; list any public one in NO_CREDENTIAL"


async def test_the_plain_segments_post_and_the_socket_ask_nudge_auth(
    client: httpx.AsyncClient, seen: list[str | None]
) -> None:
    # The fast path reads the credential, refuses the plain case, and the typed route answers.
    r = await client.post(
        "/v1/users/x/sessions/s/segments",
        json=BODIES["/v1/users/{uid}/sessions/{session_id}/segments"],
        headers={"Authorization": "Bearer probe-fast"},
    )
    assert r.status_code == 401 and seen.count("Bearer probe-fast") == 2

    app: FastAPI = client._transport.app  # type: ignore[attr-defined]
    sockets = [r for r in routes(app.routes) if isinstance(r, APIWebSocketRoute)]
    assert [s.path for s in sockets] == ["/v1/users/{uid}/listen"]
    incoming = [{"type": "websocket.connect"}]
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop() if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "asgi": {"version": "3.0"},
        "scheme": "ws",
        "path": "/v1/users/x/listen",
        "raw_path": b"/v1/users/x/listen",
        "root_path": "",
        "query_string": b"session_id=s&token=probe-socket",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("nudge.test", 80),
        "subprotocols": [],
    }
    await app(scope, receive, send)
    assert "Bearer probe-socket" in seen
    assert sent[-1] == {"type": "websocket.close", "code": 1008, "reason": sent[-1]["reason"]}


def test_a_route_that_skips_nudge_auth_is_caught(seen: list[str | None]) -> None:
    """The spy sees what goes through the module and nothing else."""
    with pytest.raises(NudgeError):
        auth.read("Bearer x", auth.ADMIN, admin_token="y")
    assert seen == ["Bearer x"]
