"""Apple Push Notification service: the HTTP/2 provider API with token-based authentication.

``POST {APNS_BASE_URL}/3/device/<token>`` over HTTP/2 only (TLS with ALPN in production; prior
knowledge over cleartext for a local fake). The provider token is an ES256 JWT (``kid``; ``iss``,
``iat``) signed with the ``.p8`` key, reused for 40 minutes (Apple refuses tokens older than an
hour and rate-limits fresher ones than 20 minutes). Answers follow Apple's table (docs/delivery.md).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, ClassVar

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from nudge.delivery.providers.base import (
    Outcome,
    ProviderDeps,
    ProviderNotConfigured,
    PushMessage,
    SendResult,
    Target,
)
from nudge.delivery.providers.http import http_fallback, unreachable
from nudge.delivery.providers.payload import (
    APNS_PRIORITY,
    INTERRUPTION_LEVEL,
    collapse_id,
    compact_json,
    expiry,
    fit,
    string_data,
)

TOKEN_REUSE_S = 40 * 60.0
PAYLOAD_LIMIT = 4096  # bytes of JSON for an alert notification
APNS_ID_NAMESPACE = uuid.UUID("5b0e9f43-3c55-4c1e-9a55-7e1f2b8f6d10")

# Apple's 400 reasons that mean our configuration (not the message or the device) is wrong.
CONFIG_REASONS = frozenset({"BadTopic", "MissingTopic", "TopicDisallowed", "BadPath"})


class ProviderToken:
    """The ES256 provider token, regenerated every ``TOKEN_REUSE_S`` or when Apple says stale."""

    def __init__(self, key: ec.EllipticCurvePrivateKey, key_id: str, team_id: str) -> None:
        self.key = key
        self.key_id = key_id
        self.team_id = team_id
        self._token = ""
        self._issued_at = 0.0

    def current(self) -> str:
        if not self._token or time.time() - self._issued_at >= TOKEN_REUSE_S:
            self._issue()
        return self._token

    def renew(self, refused: str) -> str:
        if self._token == refused:
            self._issue()
        return self._token

    def _issue(self) -> None:
        now = time.time()
        self._token = jwt.encode(
            {"iss": self.team_id, "iat": int(now)},
            self.key,
            algorithm="ES256",
            headers={"kid": self.key_id},
        )
        self._issued_at = now


def _reason(response: httpx.Response) -> str:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return response.text[:200]
    return str(body.get("reason", "")) if isinstance(body, dict) else ""


def classify(response: httpx.Response) -> SendResult:
    """APNs' answer as an outcome, from Apple's table of status codes and reasons."""
    status = response.status_code
    if status == 200:
        return SendResult(Outcome.DELIVERED)
    reason = _reason(response)
    text = f"APNs {status} {reason}".strip()
    if status == 410 or reason == "BadDeviceToken":
        return SendResult(Outcome.TOKEN_INVALID, text)
    if reason == "DeviceTokenNotForTopic":
        # The token is for another app. Keep the device: if every device says this, the
        # configured APNS_TOPIC is wrong, and wiping them would lose them all.
        return SendResult(Outcome.FAILED, text)
    if status in (403, 404, 405) or reason in CONFIG_REASONS:
        return SendResult(
            Outcome.PROVIDER_ALERT,
            f"{text}: check NUDGE_APNS_KEY_FILE, _KEY_ID, _TEAM_ID, _TOPIC and _BASE_URL",
        )
    return http_fallback("APNs", response, reason)


def _payload(m: PushMessage) -> dict[str, Any]:
    data = {k: v for k, v in string_data(m.data).items() if k != "aps"}
    aps: dict[str, Any] = {"alert": {"title": m.title, "body": m.body}, "sound": "default"}
    if m.badge is not None:
        aps["badge"] = m.badge
    if m.priority in INTERRUPTION_LEVEL:
        aps["interruption-level"] = INTERRUPTION_LEVEL[m.priority]
    return {"aps": aps, **data}


def payload_size(m: PushMessage) -> int:
    return len(compact_json(_payload(m)))


class ApnsProvider:
    name: ClassVar[str] = "apns"

    def __init__(
        self,
        base_url: str,
        topic: str,
        token: ProviderToken,
        http: httpx.AsyncClient,
        *,
        max_age_s: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.topic = topic
        self.token = token
        self.http = http
        self.max_age_s = max_age_s

    @classmethod
    def from_deps(cls, deps: ProviderDeps) -> ApnsProvider:
        s = deps.settings
        settings = {
            "NUDGE_APNS_KEY_FILE": s.apns_key_file,
            "NUDGE_APNS_KEY_ID": s.apns_key_id,
            "NUDGE_APNS_TEAM_ID": s.apns_team_id,
            "NUDGE_APNS_TOPIC": s.apns_topic,
        }
        missing = [name for name, value in settings.items() if not value]
        if missing:
            raise ProviderNotConfigured(
                f"set {', '.join(missing)} (the .p8 auth key, its key id, your team id and the "
                "app's bundle id)"
            )
        assert s.apns_key_file and s.apns_key_id and s.apns_team_id and s.apns_topic
        token = ProviderToken(read_key(s.apns_key_file), s.apns_key_id, s.apns_team_id)
        # APNs speaks HTTP/2 only: no HTTP/1.1 fallback (prior knowledge on cleartext URLs).
        http = httpx.AsyncClient(
            http1=False,
            http2=True,
            timeout=httpx.Timeout(15.0, connect=2.0),
            limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
        )
        return cls(s.apns_base_url, s.apns_topic, token, http, max_age_s=s.delivery_max_age_s)

    def request(self, message: PushMessage, target: Target) -> tuple[str, dict[str, str], bytes]:
        m = fit(message, payload_size, PAYLOAD_LIMIT)
        headers = {
            "apns-topic": self.topic,
            "apns-push-type": "alert",
            "apns-priority": APNS_PRIORITY[m.priority],
            "apns-expiration": str(int(expiry(m, self.max_age_s))),
            "apns-collapse-id": collapse_id(m.collapse_key),
            # The same id on every attempt of one delivery, so Apple's logs match ours.
            "apns-id": str(uuid.uuid5(APNS_ID_NAMESPACE, f"{m.notification_id}/{target.token}")),
            "content-type": "application/json",
        }
        return f"{self.base_url}/3/device/{target.token}", headers, compact_json(_payload(m))

    async def send(self, message: PushMessage, target: Target) -> SendResult:
        if not target.token:
            return SendResult(Outcome.FAILED, "the device has no APNs token")
        url, headers, body = self.request(message, target)
        try:
            bearer = self.token.current()
            response = await self._post(url, headers, body, bearer)
            if response.status_code == 403 and _reason(response) == "ExpiredProviderToken":
                response = await self._post(url, headers, body, self.token.renew(bearer))
        except httpx.HTTPError as exc:
            return unreachable("APNs", exc)
        return classify(response)

    async def _post(
        self, url: str, headers: dict[str, str], body: bytes, bearer: str
    ) -> httpx.Response:
        return await self.http.post(
            url, content=body, headers={**headers, "authorization": f"bearer {bearer}"}
        )

    async def aclose(self) -> None:
        await self.http.aclose()


def read_key(path: str) -> ec.EllipticCurvePrivateKey:
    """The ``.p8`` auth key from Apple: a PKCS#8 PEM P-256 key."""
    try:
        with open(path, "rb") as f:
            key = load_pem_private_key(f.read(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ProviderNotConfigured(
            f"NUDGE_APNS_KEY_FILE={path} cannot be read as a .p8 key: {exc}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ProviderNotConfigured(
            f"NUDGE_APNS_KEY_FILE={path} is not an ES256 (P-256) key: use the .p8 file from Apple"
        )
    return key
