"""Firebase Cloud Messaging, HTTP v1 API (``POST /v1/projects/{project}/messages:send``).

Authentication is an OAuth2 access token for the service account in ``FCM_CREDENTIALS_FILE``:
google-auth signs the JWT assertion (RFC 7523), which is exchanged at the file's own
``token_uri``. The token is cached and refreshed ahead of its expiry; a 401 for our token refreshes
it once and sends again. Answers are read with FCM's error table (docs/delivery.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urlencode

import google.auth.crypt
import google.auth.jwt
import httpx

from nudge.delivery.providers.base import (
    Outcome,
    ProviderDeps,
    ProviderNotConfigured,
    PushMessage,
    SendResult,
    Target,
)
from nudge.delivery.providers.http import (
    Connections,
    http_fallback,
    open_connections,
    retry_after,
    unreachable,
)
from nudge.delivery.providers.payload import (
    APNS_PRIORITY,
    FCM_PRIORITY,
    INTERRUPTION_LEVEL,
    URGENCY,
    collapse_id,
    compact_json,
    fit,
    remaining_ttl,
    string_data,
    topic,
)

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
PAYLOAD_LIMIT = 4096  # bytes of notification + data (FCM "message too big" above this)
REFRESH_MARGIN_S = 300.0  # fetch a new access token this long before the old one expires
FAILURE_MEMORY_S = 5.0  # after a failed token request, answer with its result for this long
# Connections kept open to FCM: enough sends in flight to cover a distant service's latency.
CONNECTIONS = 64
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"


class TokenUnavailable(Exception):
    """No access token could be had; ``result`` says whether to retry or raise an alert."""

    def __init__(self, result: SendResult) -> None:
        super().__init__(result.reason)
        self.result = result


class ServiceAccountTokens:
    """OAuth2 access tokens for one Google service account, cached until shortly before expiry."""

    def __init__(self, info: dict[str, Any], http: Connections) -> None:
        self.signer = google.auth.crypt.RSASigner.from_service_account_info(info)
        self.email: str = info["client_email"]
        self.token_uri: str = info["token_uri"]
        self.http = http
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        # The last failed token request and until when to repeat its answer: with the token
        # endpoint down or the key revoked, a batch of sends must not become a batch of requests.
        self._failed: tuple[float, SendResult] | None = None

    async def get(self) -> str:
        if self._token is None or time.time() >= self._refresh_at:
            async with self._lock:
                if self._token is None or time.time() >= self._refresh_at:
                    await self._refresh()
        assert self._token is not None
        return self._token

    async def renew(self, refused: str) -> str:
        """A fresh token after the service refused ``refused`` (one refresh for many refusals)."""
        async with self._lock:
            if self._token == refused:
                await self._refresh()
        assert self._token is not None
        return self._token

    async def _refresh(self) -> None:
        if self._failed is not None and time.time() < self._failed[0]:
            raise TokenUnavailable(self._failed[1])
        try:
            await self._request_token()
        except TokenUnavailable as exc:
            self._failed = (time.time() + FAILURE_MEMORY_S, exc.result)
            raise
        self._failed = None

    async def _request_token(self) -> None:
        now = int(time.time())
        claims = {
            "iss": self.email,
            "scope": FCM_SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        }
        assertion = google.auth.jwt.encode(self.signer, claims).decode()
        try:
            response = await self.http.post(
                self.token_uri,
                content=urlencode({"grant_type": JWT_BEARER, "assertion": assertion}).encode(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        except httpx.HTTPError as exc:
            raise TokenUnavailable(unreachable("FCM token endpoint", exc)) from None
        body = _json(response)
        token = body.get("access_token")
        if not response.is_success or not isinstance(token, str):
            detail = f"{body.get('error', '')} {body.get('error_description', '')}".strip()
            reason = (
                f"the token endpoint {self.token_uri} answered {response.status_code}"
                f" ({detail or response.text[:200]})"
            )
            if response.status_code == 429 or response.status_code >= 500:
                raise TokenUnavailable(SendResult(Outcome.RETRY, reason, retry_after(response)))
            raise TokenUnavailable(
                SendResult(
                    Outcome.PROVIDER_ALERT,
                    f"{reason}: check the service account in NUDGE_FCM_CREDENTIALS_FILE",
                )
            )
        lifetime = float(body.get("expires_in", 3600))
        self._token = token
        self._refresh_at = time.time() + max(lifetime - REFRESH_MARGIN_S, lifetime / 2)


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


@dataclass(frozen=True)
class FcmError:
    """The parts of a Google API error answer that decide what to do."""

    status: str  # the canonical status: INVALID_ARGUMENT, NOT_FOUND, ...
    code: str  # the FcmError errorCode (UNREGISTERED, ...), or the status when absent
    message: str
    fields: tuple[str, ...]  # fields named by a google.rpc.BadRequest

    @classmethod
    def of(cls, response: httpx.Response) -> FcmError:
        error = _json(response).get("error")
        error = error if isinstance(error, dict) else {}
        status = str(error.get("status", ""))
        code, fields = status, []
        for detail in error.get("details") or []:
            if not isinstance(detail, dict):
                continue
            if detail.get("@type") == FCM_ERROR_TYPE and detail.get("errorCode"):
                code = str(detail["errorCode"])
            if detail.get("@type") == BAD_REQUEST_TYPE:
                fields += [str(v.get("field", "")) for v in detail.get("fieldViolations") or []]
        message = str(error.get("message", "")) or response.text[:200]
        return cls(status, code, message, tuple(fields))

    @property
    def bad_token(self) -> bool:
        return "message.token" in self.fields or "registration token" in self.message.lower()


def classify(response: httpx.Response) -> SendResult:
    """FCM's answer as an outcome, from FCM's own error table."""
    if response.is_success:
        return SendResult(Outcome.DELIVERED)
    err = FcmError.of(response)
    reason = f"FCM {response.status_code} {err.code}: {err.message}".strip()
    if err.code == "UNREGISTERED":
        return SendResult(Outcome.TOKEN_INVALID, reason)
    if err.code == "INVALID_ARGUMENT":
        return SendResult(Outcome.TOKEN_INVALID if err.bad_token else Outcome.FAILED, reason)
    if err.code == "SENDER_ID_MISMATCH":
        # The token belongs to another Firebase project. Keep the device: if every device says
        # this, the configured project is the wrong one, and wiping them would lose them all.
        return SendResult(Outcome.FAILED, reason)
    if err.code in ("QUOTA_EXCEEDED", "UNAVAILABLE", "INTERNAL", "RESOURCE_EXHAUSTED"):
        return SendResult(Outcome.RETRY, reason, retry_after(response))
    if err.code in ("THIRD_PARTY_AUTH_ERROR", "UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND"):
        # Our credentials, project or the APNs/Web Push keys held by Firebase are wrong (a bare
        # NOT_FOUND without UNREGISTERED means the project itself was not found).
        return SendResult(
            Outcome.PROVIDER_ALERT,
            f"{reason}; check NUDGE_FCM_CREDENTIALS_FILE and the Firebase project settings",
        )
    return http_fallback("FCM", response, f"{err.code}: {err.message}")


# Keys FCM keeps for itself in a data map ("from", "gcm", anything starting with "google").
def _allowed_key(key: str) -> bool:
    return key not in ("from", "gcm", "message_type") and not key.startswith("google")


def _content(m: PushMessage) -> dict[str, Any]:
    data = {k: v for k, v in string_data(m.data).items() if _allowed_key(k)}
    return {"notification": {"title": m.title, "body": m.body}, "data": data}


def payload_size(m: PushMessage) -> int:
    return len(compact_json(_content(m)))


def _apns(m: PushMessage) -> dict[str, Any]:
    """The block FCM forwards to APNs: the collapse id and priority, and only where the sender
    asked for them (so that a default message is sent as before) its expiry and interruption
    level."""
    headers = {
        "apns-collapse-id": collapse_id(m.collapse_key),
        "apns-priority": APNS_PRIORITY[m.priority],
    }
    if m.expires_at is not None:
        headers["apns-expiration"] = str(int(m.expires_at))
    block: dict[str, Any] = {"headers": headers}
    if m.priority in INTERRUPTION_LEVEL:
        block["payload"] = {"aps": {"interruption-level": INTERRUPTION_LEVEL[m.priority]}}
    return block


class FcmProvider:
    name: ClassVar[str] = "fcm"

    def __init__(
        self,
        base_url: str,
        project_id: str,
        tokens: ServiceAccountTokens,
        http: Connections,
        *,
        max_age_s: float,
    ) -> None:
        self.url = f"{base_url.rstrip('/')}/v1/projects/{project_id}/messages:send"
        self.tokens = tokens
        self.http = http
        self.max_age_s = max_age_s

    @classmethod
    def from_deps(cls, deps: ProviderDeps) -> FcmProvider:
        s = deps.settings
        info = read_service_account(s.fcm_credentials_file)
        http = open_connections(s, CONNECTIONS)
        tokens = ServiceAccountTokens(info, http)
        return cls(s.fcm_base_url, info["project_id"], tokens, http, max_age_s=s.delivery_max_age_s)

    def body(self, message: PushMessage, token: str) -> bytes:
        body = self._render(message, token)
        if len(body) <= PAYLOAD_LIMIT:  # the payload is a part of the body, so it fits too
            return body
        return self._render(fit(message, payload_size, PAYLOAD_LIMIT), token)

    def _render(self, m: PushMessage, token: str) -> bytes:
        ttl = remaining_ttl(m, self.max_age_s)
        return compact_json(
            {
                "message": {
                    "token": token,
                    **_content(m),
                    "android": {
                        "collapse_key": m.collapse_key,
                        "priority": FCM_PRIORITY[m.priority],
                        "ttl": f"{ttl}s",
                    },
                    "apns": _apns(m),
                    "webpush": {
                        "headers": {
                            "Topic": topic(m.collapse_key),
                            "Urgency": URGENCY[m.priority],
                            "TTL": str(ttl),
                        }
                    },
                }
            }
        )

    async def send(self, message: PushMessage, target: Target) -> SendResult:
        if not target.token:
            return SendResult(Outcome.FAILED, "the device has no FCM token")
        body = self.body(message, target.token)
        try:
            access = await self.tokens.get()
            response = await self._post(body, access)
            if response.status_code == 401 and FcmError.of(response).code == "UNAUTHENTICATED":
                response = await self._post(body, await self.tokens.renew(access))
        except TokenUnavailable as exc:
            return exc.result
        except httpx.HTTPError as exc:
            return unreachable("FCM", exc)
        return classify(response)

    async def _post(self, body: bytes, access: str) -> httpx.Response:
        return await self.http.post(
            self.url,
            content=body,
            headers={"Authorization": f"Bearer {access}", "Content-Type": "application/json"},
        )

    async def aclose(self) -> None:
        await self.http.aclose()


def read_service_account(path: str | None) -> dict[str, Any]:
    """The service-account JSON, checked for what FCM needs (ProviderNotConfigured otherwise)."""
    if not path:
        raise ProviderNotConfigured(
            "set NUDGE_FCM_CREDENTIALS_FILE to the Firebase service-account JSON file"
        )
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError) as exc:
        raise ProviderNotConfigured(
            f"NUDGE_FCM_CREDENTIALS_FILE={path} cannot be read as JSON: {exc}"
        ) from None
    missing = [
        k
        for k in ("project_id", "client_email", "private_key", "token_uri")
        if not isinstance(info, dict) or not info.get(k)
    ]
    if missing:
        raise ProviderNotConfigured(
            f"NUDGE_FCM_CREDENTIALS_FILE={path} lacks {', '.join(missing)}: "
            "download a service-account key from the Firebase console"
        )
    try:
        google.auth.crypt.RSASigner.from_service_account_info(info)
    except ValueError as exc:
        raise ProviderNotConfigured(
            f"NUDGE_FCM_CREDENTIALS_FILE={path}: its private_key is unusable ({exc})"
        ) from None
    return dict(info)
