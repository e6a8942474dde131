"""A fake APNs: the HTTP/2 provider API (``POST /3/device/<token>``) with token authentication.

It answers HTTP/2 requests only, verifies the ES256 provider token (``kid``, ``iss``, ``iat`` no
older than an hour) with the public half of the key it generated, checks Apple's headers (priority,
expiration, collapse id), the ``aps`` keys it reads (badge, interruption level) and the
4096-byte payload limit, and answers ``{"reason": ...}`` with Apple's status codes.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fakes.asgi import Reply, Request, Script, asgi_app

PUSH_TYPES = {
    "alert",
    "background",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "location",
    "pushtotalk",
}
INTERRUPTION_LEVELS = {"passive", "active", "time-sensitive", "critical"}
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)


def apns_error(status: int, reason: str, *, retry_after: str | None = None) -> Reply:
    body: dict[str, Any] = {"reason": reason}
    if status == 410:
        body["timestamp"] = int(time.time() * 1000)
    return Reply(status, body, {"Retry-After": retry_after} if retry_after else {})


@dataclass
class Call:
    at: float
    token: str
    headers: dict[str, str]
    payload: dict[str, Any]
    size: int
    bearer: str


@dataclass
class FakeApns:
    team_id: str = "TEAM123456"
    key_id: str = "KEY7654321"
    topic: str = "com.example.nudge"
    base_url: str = ""
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    calls: list[Call] = field(default_factory=list)
    refused: list[tuple[str, str]] = field(default_factory=list)  # (http version, reason)
    script: Script = field(default_factory=Script)
    expire_bearers: set[str] = field(default_factory=set)  # tokens to call stale

    def __post_init__(self) -> None:
        self.app = asgi_app(self.handle)

    def key_pem(self, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
        """The key as Apple hands it out: a PKCS#8 ``.p8`` PEM file."""
        return (key or self.key).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    async def handle(self, request: Request) -> Reply:
        reply = self.check(request)
        if reply is not None:
            self.refused.append((request.http_version, str((reply.body or {}).get("reason"))))
            return reply
        token = request.path.removeprefix("/3/device/")
        self.calls.append(
            Call(
                time.time(),
                token,
                request.headers,
                json.loads(request.body),
                len(request.body),
                request.headers["authorization"].removeprefix("bearer "),
            )
        )
        scripted = self.script.next(token)
        if scripted is not None:
            return scripted
        return Reply(
            200,
            b"",
            {
                "apns-id": request.headers.get("apns-id") or str(uuid.uuid4()),
                "apns-unique-id": str(uuid.uuid4()),
            },
        )

    def check(self, request: Request) -> Reply | None:
        """Apple's checks, in the order APNs makes them, with its status codes and reasons."""
        if request.http_version != "2":
            # Real APNs has no HTTP/1.1 at all; say so loudly if a client tries.
            return Reply(505, {"reason": "HTTP/2 required"})
        if request.method != "POST":
            return apns_error(405, "MethodNotAllowed")
        if not request.path.startswith("/3/device/"):
            return apns_error(404, "BadPath")
        if len(request.header_names) != len(set(request.header_names)):
            return apns_error(400, "DuplicateHeaders")
        auth = request.headers.get("authorization", "")
        if not auth.startswith("bearer "):
            return apns_error(403, "MissingProviderToken")
        bearer = auth.removeprefix("bearer ")
        try:
            header = jwt.get_unverified_header(bearer)
            claims = jwt.decode(
                bearer,
                self.key.public_key(),
                algorithms=["ES256"],
                options={"require": ["iss", "iat"], "verify_iat": False},
            )
        except jwt.PyJWTError:
            return apns_error(403, "InvalidProviderToken")
        if header.get("kid") != self.key_id or claims["iss"] != self.team_id:
            return apns_error(403, "InvalidProviderToken")
        if time.time() - claims["iat"] > 3600 or bearer in self.expire_bearers:
            return apns_error(403, "ExpiredProviderToken")
        h = request.headers
        token = request.path.removeprefix("/3/device/")
        if not token:
            return apns_error(400, "MissingDeviceToken")
        if not re.fullmatch(r"[0-9a-fA-F]{64,200}", token):
            return apns_error(400, "BadDeviceToken")
        if "apns-topic" not in h:
            return apns_error(400, "MissingTopic")
        if h["apns-topic"] != self.topic:
            return apns_error(400, "DeviceTokenNotForTopic")
        if h.get("apns-push-type", "alert") not in PUSH_TYPES:
            return apns_error(400, "InvalidPushType")
        if h.get("apns-priority", "10") not in ("1", "5", "10"):
            return apns_error(400, "BadPriority")
        if not h.get("apns-expiration", "0").isdigit():
            return apns_error(400, "BadExpirationDate")
        if len(h.get("apns-collapse-id", "").encode()) > 64:
            return apns_error(400, "BadCollapseId")
        if "apns-id" in h and not UUID_RE.match(h["apns-id"]):
            return apns_error(400, "BadMessageId")
        if not request.body:
            return apns_error(400, "PayloadEmpty")
        if len(request.body) > 4096:
            return apns_error(413, "PayloadTooLarge")
        try:
            payload = json.loads(request.body)
        except ValueError:
            return apns_error(400, "BadPayload")
        if not isinstance(payload, dict) or not isinstance(payload.get("aps"), dict):
            return apns_error(400, "BadPayload")
        aps = payload["aps"]
        badge = aps.get("badge", 0)
        if not isinstance(badge, int) or isinstance(badge, bool) or badge < 0:
            return apns_error(400, "BadPayload")
        if aps.get("interruption-level", "active") not in INTERRUPTION_LEVELS:
            return apns_error(400, "BadPayload")
        return None
