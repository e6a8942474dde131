"""A fake Web Push service (RFC 8030) that is also the browser: it holds each subscription's
private key and decrypts what it receives (RFC 8291, written out here independently of http_ece,
so a wrong encryption fails), and checks the VAPID signature (RFC 8292) against the key the
subscription was made with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import secrets
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tests.fakes.asgi import Reply, Request, Script, asgi_app

URGENCIES = {"very-low", "low", "normal", "high"}
TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_bytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def _hkdf(salt: bytes, ikm: bytes, info: bytes, length: int) -> bytes:
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()[:length]


def decrypt_aes128gcm(body: bytes, ua_key: ec.EllipticCurvePrivateKey, auth_secret: bytes) -> bytes:
    """RFC 8291 section 3 + RFC 8188: the user agent's side. Raises ValueError on any mismatch."""
    if len(body) < 21:
        raise ValueError("body shorter than the aes128gcm header")
    salt, rs, idlen = body[:16], struct.unpack("!I", body[16:20])[0], body[20]
    as_public = body[21 : 21 + idlen]
    records = body[21 + idlen :]
    if idlen != 65 or rs < 18:
        raise ValueError("keyid must be the sender's 65-byte public key")
    peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), as_public)
    ecdh_secret = ua_key.exchange(ec.ECDH(), peer)
    key_info = b"WebPush: info\x00" + public_bytes(ua_key) + as_public
    ikm = _hkdf(auth_secret, ecdh_secret, key_info, 32)
    cek = _hkdf(salt, ikm, b"Content-Encoding: aes128gcm\x00", 16)
    nonce = _hkdf(salt, ikm, b"Content-Encoding: nonce\x00", 12)
    plaintext = b""
    chunks = [records[i : i + rs] for i in range(0, len(records), rs)]
    for seq, chunk in enumerate(chunks):
        iv = (int.from_bytes(nonce, "big") ^ seq).to_bytes(12, "big")
        try:
            padded = AESGCM(cek).decrypt(iv, chunk, None)
        except Exception as exc:
            raise ValueError(f"record {seq} does not decrypt: {type(exc).__name__}") from None
        stripped = padded.rstrip(b"\x00")
        last = seq == len(chunks) - 1
        if not stripped or stripped[-1] != (2 if last else 1):
            raise ValueError("bad padding delimiter")
        plaintext += stripped[:-1]
    return plaintext


@dataclass
class Subscription:
    id: str
    key: ec.EllipticCurvePrivateKey
    auth: bytes
    server_key: bytes  # the applicationServerKey (VAPID public key) it was made with
    endpoint: str

    def info(self) -> dict[str, Any]:
        """What ``PushSubscription.toJSON()`` gives the page."""
        return {
            "endpoint": self.endpoint,
            "keys": {"p256dh": b64url(public_bytes(self.key)), "auth": b64url(self.auth)},
        }


@dataclass
class Call:
    at: float
    subscription_id: str
    headers: dict[str, str]
    payload: dict[str, Any]
    body_size: int
    vapid_claims: dict[str, Any]


@dataclass
class FakePushService:
    base_url: str = ""
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    refusals: list[tuple[int, str]] = field(default_factory=list)
    script: Script = field(default_factory=Script)

    def __post_init__(self) -> None:
        self.app = asgi_app(self.handle)

    def subscribe(self, application_server_key: bytes) -> Subscription:
        """A browser's ``pushManager.subscribe({applicationServerKey})``."""
        sid = secrets.token_urlsafe(12)
        sub = Subscription(
            sid,
            ec.generate_private_key(ec.SECP256R1()),
            secrets.token_bytes(16),
            application_server_key,
            f"{self.base_url}/push/{sid}",
        )
        self.subscriptions[sid] = sub
        return sub

    def unsubscribe(self, sid: str) -> None:
        del self.subscriptions[sid]

    async def handle(self, request: Request) -> Reply:
        reply = self.check(request)
        if reply.status >= 300:
            self.refusals.append((reply.status, str(reply.body)))
        return reply

    def check(self, request: Request) -> Reply:
        if request.method != "POST" or not request.path.startswith("/push/"):
            return Reply(404, "not found")
        sid = request.path.removeprefix("/push/")
        sub = self.subscriptions.get(sid)
        if sub is None:
            return Reply(410, "push subscription has unsubscribed or expired")
        h = request.headers
        claims = self.vapid(h.get("authorization", ""), sub)
        if isinstance(claims, Reply):
            return claims
        if not h.get("ttl", "").isdigit():
            return Reply(400, "TTL header missing or not a number of seconds")
        if h.get("urgency", "normal") not in URGENCIES:
            return Reply(400, "invalid Urgency")
        if "topic" in h and not TOPIC_RE.match(h["topic"]):
            return Reply(400, "invalid Topic: at most 32 characters of base64url")
        if h.get("content-encoding") != "aes128gcm":
            return Reply(415, "Content-Encoding must be aes128gcm")
        if len(request.body) > 4096:
            return Reply(413, "payload too large")
        try:
            payload = json.loads(decrypt_aes128gcm(request.body, sub.key, sub.auth))
        except ValueError as exc:
            return Reply(400, f"decryption failed: {exc}")
        self.calls.append(Call(time.time(), sid, h, payload, len(request.body), claims))
        scripted = self.script.next(sid)
        if scripted is not None:
            return scripted
        return Reply(201, b"", {"Location": f"{self.base_url}/message/{secrets.token_hex(8)}"})

    def vapid(self, authorization: str, sub: Subscription) -> dict[str, Any] | Reply:
        """RFC 8292: ``vapid t=<JWT>, k=<public key>``; k must be the subscription's server key."""
        if not authorization.lower().startswith("vapid "):
            return Reply(401, "missing VAPID authorization")
        params = dict(
            part.strip().split("=", 1) for part in authorization[6:].split(",") if "=" in part
        )
        try:
            k = unb64url(params["k"])
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), k)
            claims = jwt.decode(
                params["t"], public, algorithms=["ES256"], options={"verify_aud": False}
            )
        except (KeyError, ValueError, jwt.PyJWTError) as exc:
            return Reply(401, f"invalid VAPID token: {exc}")
        if k != sub.server_key:
            return Reply(403, "VAPID key does not match the subscription's applicationServerKey")
        origin = sub.endpoint.split("/push/")[0]
        if claims.get("aud") != origin:
            return Reply(403, f"VAPID aud must be {origin}")
        if not 0 < claims.get("exp", 0) - time.time() <= 24 * 3600:
            return Reply(403, "VAPID exp must be within 24 hours")
        if not str(claims.get("sub", "")).startswith(("mailto:", "https:")):
            return Reply(403, "VAPID sub must be a mailto: or https: URI")
        return dict(claims)
