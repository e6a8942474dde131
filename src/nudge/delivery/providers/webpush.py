"""Web Push to browsers: RFC 8030 delivery, RFC 8291 ``aes128gcm`` encryption, RFC 8292 VAPID.

The payload is encrypted to the subscription's keys with pywebpush's encoder (http_ece) and sent
over the provider's own connections (``NUDGE_PUSH_HTTP_TRANSPORT``, see ``providers.http``). The
VAPID JWT is signed by py_vapid, one per push-service origin, and reused for 12 of its 24 hours.

The endpoint is whatever the browser (or whoever registered the device) said, so it is guarded:
its host must be on ``NUDGE_WEBPUSH_ALLOWED_HOSTS`` (the big push services by default) and the
connection goes only to addresses the outbound-address guard checked (:mod:`nudge.net.guard`).
A refused endpoint fails its delivery at once, with the reason, and keeps the device: the refusal
is about our configuration or the network, not the subscription (an operator may widen the list).
An endpoint the HTTP client cannot use at all (a malformed URL) removes the device, like a
non-http(s) endpoint or unusable keys.
"""

from __future__ import annotations

import binascii
import os
import re
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx
from py_vapid import Vapid02, VapidException
from pywebpush import WebPusher, WebPushException

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
    unreachable,
)
from nudge.delivery.providers.payload import (
    URGENCY,
    compact_json,
    fit,
    remaining_ttl,
    string_data,
    topic,
)
from nudge.net.guard import (
    AddressRefused,
    GuardedResolver,
    HostAllowList,
    NotResolved,
    literal_address,
)

# A push service must take 4096 bytes of body; aes128gcm adds an 86-byte header, a 16-byte tag
# and a 1-byte padding delimiter, which leaves 3993 bytes of plaintext (RFC 8291 section 4).
PLAINTEXT_LIMIT = 3993
VAPID_LIFETIME_S = 24 * 3600.0  # RFC 8292: no more than 24 hours
VAPID_REUSE_S = 12 * 3600.0
CONNECTIONS = 64  # to all push services together (a few origins: FCM, Mozilla, Apple)
_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
HOST_NAME = re.compile(rf"(?:{_LABEL}\.)*{_LABEL}\.?")  # as urlsplit gives it: lower case


class VapidSigner:
    """``Authorization: vapid t=<JWT>,k=<public key>`` per push-service origin, cached."""

    def __init__(self, vapid: Vapid02, subject: str) -> None:
        self.vapid = vapid
        self.subject = subject
        self._cache: dict[str, tuple[str, float]] = {}

    def header(self, origin: str) -> str:
        now = time.time()
        cached = self._cache.get(origin)
        if cached is not None and now < cached[1]:
            return cached[0]
        claims = {"sub": self.subject, "aud": origin, "exp": int(now + VAPID_LIFETIME_S)}
        value = str(self.vapid.sign(claims)["Authorization"])
        if len(self._cache) > 256:  # a handful of push services in practice; stay bounded
            self._cache.clear()
        self._cache[origin] = (value, now + VAPID_REUSE_S)
        return value


def classify(response: httpx.Response) -> SendResult:
    """The push service's answer as an outcome (RFC 8030 and the big push services' usage)."""
    status = response.status_code
    if response.is_success:
        return SendResult(Outcome.DELIVERED)
    text = f"Web Push {status}: {response.text[:200]}".strip()
    if status in (404, 410):
        return SendResult(Outcome.TOKEN_INVALID, text)
    if status in (401, 403):
        return SendResult(
            Outcome.PROVIDER_ALERT,
            f"{text}: the push service refused our VAPID signature; check NUDGE_VAPID_PRIVATE_KEY "
            "(it must be the key whose public half the browser subscribed with) and VAPID_SUBJECT",
        )
    return http_fallback("Web Push", response, response.text[:200])


def _payload(m: PushMessage) -> dict[str, Any]:
    return {"title": m.title, "body": m.body, "data": string_data(m.data)}


def payload_size(m: PushMessage) -> int:
    return len(compact_json(_payload(m)))


def refused(exc: AddressRefused) -> SendResult:
    """A guard refusal fails the delivery at once; the device stays (see the module docstring)."""
    return SendResult(Outcome.FAILED, f"Web Push endpoint refused: {exc}")


class WebPushProvider:
    name: ClassVar[str] = "webpush"

    def __init__(
        self,
        signer: VapidSigner,
        http: Connections,
        *,
        max_age_s: float,
        guard: GuardedResolver,
        allowed_hosts: HostAllowList,
    ) -> None:
        self.signer = signer
        self.http = http
        self.max_age_s = max_age_s
        self.guard = guard  # also the one inside ``http``
        self.allowed_hosts = allowed_hosts

    @classmethod
    def from_deps(
        cls, deps: ProviderDeps, *, guard: GuardedResolver | None = None
    ) -> WebPushProvider:
        """From settings; ``guard`` replaces the outbound-address guard (tests resolve names
        their own way through it)."""
        s = deps.settings
        if not s.vapid_private_key or not s.vapid_subject:
            raise ProviderNotConfigured(
                "set NUDGE_VAPID_PRIVATE_KEY (a P-256 key: PEM file, PEM text or base64url) and "
                "NUDGE_VAPID_SUBJECT (mailto:you@example.com or an https: URL)"
            )
        signer = VapidSigner(read_vapid_key(s.vapid_private_key), s.vapid_subject)
        try:
            signer.header("https://push.example.com")
        except VapidException:
            raise ProviderNotConfigured(
                f"NUDGE_VAPID_SUBJECT={s.vapid_subject!r}: use a mailto: address or an https: URL"
            ) from None
        guard = guard or GuardedResolver(s.allow_private_webhooks)
        return cls(
            signer,
            open_connections(s, CONNECTIONS, guard=guard),
            max_age_s=s.delivery_max_age_s,
            guard=guard,
            allowed_hosts=HostAllowList.parse(s.webpush_allowed_hosts),
        )

    def request(
        self, message: PushMessage, subscription: dict[str, Any]
    ) -> tuple[str, dict[str, str], bytes]:
        """The endpoint, headers and encrypted body. Raises ValueError for an unusable endpoint
        or keys, :class:`AddressRefused` for an endpoint host that is not allowed or an address
        literal that the guard refuses (whichever transport would carry it)."""
        endpoint = str(subscription.get("endpoint", ""))
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the endpoint {endpoint!r} is not an http(s) URL")
        if parts.port == 0:  # reading the port raises ValueError when it is out of range
            raise ValueError(f"the endpoint {endpoint!r} has port 0")
        if not HOST_NAME.fullmatch(parts.hostname) and literal_address(parts.hostname) is None:
            raise ValueError(f"the endpoint host {parts.hostname[:100]!r} is not a valid host name")
        refusal = self.allowed_hosts.refusal(parts.hostname)
        if refusal is not None:
            raise AddressRefused(f"{refusal}: see NUDGE_WEBPUSH_ALLOWED_HOSTS")
        self.guard.check_literal(parts.hostname)
        m = fit(message, payload_size, PLAINTEXT_LIMIT)
        try:
            body = WebPusher(subscription).encode(compact_json(_payload(m)), "aes128gcm")["body"]
        except (WebPushException, ValueError, TypeError, binascii.Error) as exc:
            raise ValueError(f"the subscription's keys are unusable: {exc}") from None
        origin = f"{parts.scheme}://{parts.netloc}"
        try:
            authorization = self.signer.header(origin)
        except VapidException as exc:  # py_vapid takes no IPv6 literal as an audience
            raise ValueError(f"no VAPID signature can name the origin {origin}: {exc}") from None
        headers = {
            "TTL": str(remaining_ttl(m, self.max_age_s)),
            "Urgency": URGENCY[m.priority],
            "Topic": topic(m.collapse_key),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": authorization,
        }
        return endpoint, headers, bytes(body)

    async def send(self, message: PushMessage, target: Target) -> SendResult:
        try:
            endpoint, headers, body = self.request(message, target.subscription or {})
        except AddressRefused as exc:
            return refused(exc)
        except ValueError as exc:  # this subscription can never be delivered to
            return SendResult(Outcome.TOKEN_INVALID, str(exc))
        try:
            response = await self.http.post(endpoint, content=body, headers=headers)
        except NotResolved as exc:  # DNS may answer later
            return unreachable("Web Push service", exc)
        except AddressRefused as exc:
            return refused(exc)
        except httpx.InvalidURL as exc:
            return SendResult(Outcome.TOKEN_INVALID, f"the endpoint is not a usable URL: {exc}")
        except httpx.HTTPError as exc:
            return unreachable("Web Push service", exc)
        return classify(response)

    async def aclose(self) -> None:
        await self.http.aclose()


def read_vapid_key(value: str) -> Vapid02:
    """The VAPID private key from a PEM file path, PEM text, or base64url (raw or DER)."""
    try:
        if os.path.isfile(value):
            return Vapid02.from_file(value)
        if value.lstrip().startswith("-----BEGIN"):
            return Vapid02.from_pem(value.encode())
        return Vapid02.from_string(value)
    except Exception as exc:  # py_vapid raises assorted types for a bad key
        raise ProviderNotConfigured(
            f"NUDGE_VAPID_PRIVATE_KEY is not a usable P-256 private key ({type(exc).__name__}); "
            "generate one with `vapid --gen` or openssl ecparam -name prime256v1 -genkey"
        ) from None
