"""A fake Firebase: a Google OAuth2 token endpoint and the FCM HTTP v1 send API.

The token endpoint checks the service account's RS256-signed JWT assertion (RFC 7523) against
the public half of the key it generated for ``service_account()``; the send API checks the
bearer token it issued, the project, and the message (string data, TTL format, priority, the
priority/expiration/urgency headers it forwards to APNs and Web Push, the 4096-byte payload
limit), and answers in FCM's error format (``error.details[].errorCode``).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.fakes.asgi import Reply, Request, Script, asgi_app
from tests.fakes.webpush import URGENCIES

FCM_SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
TOKEN_PATH = "/oauth2/v4/custom-token"  # deliberately not Google's: proves token_uri is honoured
FCM_ERROR = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST = "type.googleapis.com/google.rpc.BadRequest"

# FCM's error table: errorCode -> (HTTP status, canonical status, message).
ERRORS = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "INVALID_ARGUMENT": (
        400,
        "INVALID_ARGUMENT",
        "The registration token is not a valid FCM registration token",
    ),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded for this device."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
}


def fcm_error(code: str, *, retry_after: str | None = None) -> Reply:
    """An answer exactly as FCM shapes it for ``code`` (a row of its ErrorCode table)."""
    status, canonical, message = ERRORS[code]
    body = {
        "error": {
            "code": status,
            "message": message,
            "status": canonical,
            "details": [{"@type": FCM_ERROR, "errorCode": code}],
        }
    }
    return Reply(status, body, {"Retry-After": retry_after} if retry_after else {})


def bad_request(field_name: str, description: str) -> Reply:
    """INVALID_ARGUMENT for a bad field of the message (not the token)."""
    return Reply(
        400,
        {
            "error": {
                "code": 400,
                "message": description,
                "status": "INVALID_ARGUMENT",
                "details": [
                    {
                        "@type": BAD_REQUEST,
                        "fieldViolations": [{"field": field_name, "description": description}],
                    }
                ],
            }
        },
    )


def _google_error(status: int, canonical: str, message: str) -> Reply:
    return Reply(status, {"error": {"code": status, "message": message, "status": canonical}})


@dataclass
class Call:
    at: float
    token: str
    message: dict[str, Any]
    access_token: str
    size: int  # bytes of notification + data, as FCM counts against its limit


@dataclass
class FakeFcm:
    project_id: str = "nudge-test"
    client_email: str = "nudge@nudge-test.iam.gserviceaccount.com"
    token_lifetime_s: int = 3600
    record: bool = True  # keep each Call (the benchmark keeps receipt times only)
    key: rsa.RSAPrivateKey = field(
        default_factory=lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048)
    )
    key_id: str = field(default_factory=lambda: secrets.token_hex(20))
    base_url: str = ""
    calls: list[Call] = field(default_factory=list)
    receipts: list[tuple[str, float]] = field(default_factory=list)  # (notification_id, at)
    token_requests: list[dict[str, Any]] = field(default_factory=list)  # verified claims
    issued: dict[str, float] = field(default_factory=dict)  # access token -> expiry
    script: Script = field(default_factory=Script)
    refuse_tokens: bool = False  # the token endpoint turns every assertion down
    unauthenticated: int = 0  # sends refused for a missing, unknown or expired access token
    token_attempts: int = 0  # requests to the token endpoint, granted or not

    def __post_init__(self) -> None:
        self.app = asgi_app(self.handle)

    @property
    def token_uri(self) -> str:
        return self.base_url + TOKEN_PATH

    def service_account(self, key: rsa.RSAPrivateKey | None = None) -> dict[str, Any]:
        """A service-account JSON like Firebase's, pointing its token_uri at this fake."""
        pem = (key or self.key).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": self.key_id,
            "private_key": pem.decode(),
            "client_email": self.client_email,
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.token_uri,
        }

    def revoke_all(self) -> None:
        """Invalidate every issued token (as if they expired server-side)."""
        self.issued.clear()

    async def handle(self, request: Request) -> Reply:
        if request.path == TOKEN_PATH and request.method == "POST":
            return self.token(request)
        if request.path == f"/v1/projects/{self.project_id}/messages:send":
            return self.send(request)
        if request.path.startswith("/v1/projects/") and request.path.endswith("/messages:send"):
            return _google_error(
                403,
                "PERMISSION_DENIED",
                "Permission 'cloudmessaging.messages.create' denied on resource "
                "(or it may not exist).",
            )
        if request.path == "/_fake/receipts":  # for the benchmark, which runs us in a process
            return Reply(200, {"receipts": self.receipts})
        return _google_error(404, "NOT_FOUND", f"no route {request.path}")

    def token(self, request: Request) -> Reply:
        from urllib.parse import parse_qs

        self.token_attempts += 1
        form = {k: v[0] for k, v in parse_qs(request.body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return Reply(
                400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}
            )
        assertion = form.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(
                assertion,
                self.key.public_key(),
                algorithms=["RS256"],
                audience=self.token_uri,
                options={"require": ["iss", "aud", "iat", "exp"]},
            )
        except jwt.PyJWTError as exc:
            return Reply(
                400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"}
            )
        problems = []
        if header.get("kid") != self.key_id:
            problems.append("unknown key id")
        if claims["iss"] != self.client_email:
            problems.append("wrong issuer")
        if FCM_SCOPE not in str(claims.get("scope", "")).split():
            problems.append("scope lacks firebase.messaging")
        if claims["exp"] - claims["iat"] > 3600:
            problems.append("assertion lives longer than one hour")
        if problems or self.refuse_tokens:
            reason = "; ".join(problems) or "account disabled"
            return Reply(400, {"error": "invalid_grant", "error_description": reason})
        self.token_requests.append(claims)
        access = "ya29.fake-" + secrets.token_urlsafe(24)
        self.issued[access] = time.time() + self.token_lifetime_s
        return Reply(
            200,
            {"access_token": access, "expires_in": self.token_lifetime_s, "token_type": "Bearer"},
        )

    def send(self, request: Request) -> Reply:
        at = time.time()
        auth = request.headers.get("authorization", "")
        access = auth.removeprefix("Bearer ")
        if not auth.startswith("Bearer ") or self.issued.get(access, 0) < at:
            self.unauthenticated += 1
            return _google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential.",
            )
        try:
            message = request.json()["message"]
        except (ValueError, KeyError, TypeError):
            return bad_request("message", "Invalid JSON payload received.")
        problem = validate(message)
        if problem is not None:
            return problem
        token = message["token"]
        size = len(
            json.dumps(
                {"notification": message.get("notification", {}), "data": message.get("data", {})},
                ensure_ascii=False,
                separators=(",", ":"),
            ).encode()
        )
        if size > 4096:
            return bad_request("message", "Message is too big")
        scripted = self.script.next(token)
        if self.record:
            self.calls.append(Call(at, token, message, access, size))
        self.receipts.append((message.get("data", {}).get("notification_id", ""), at))
        if scripted is not None:
            return scripted
        return Reply(200, {"name": f"projects/{self.project_id}/messages/{secrets.token_hex(8)}"})


def validate(message: dict[str, Any]) -> Reply | None:
    """The checks FCM makes on a message's shape, with its answers."""
    token = message.get("token")
    if not isinstance(token, str) or not token:
        return bad_request("message", "Recipient of the message is not set.")
    for i, (key, value) in enumerate((message.get("data") or {}).items()):
        if not isinstance(value, str):
            return bad_request(
                f"message.data[{i}].value",
                f"Invalid value at 'message.data[{i}].value' (TYPE_STRING)",
            )
        if key in ("from", "gcm") or key.startswith("google"):
            return bad_request("message.data", f"Invalid data key: {key}")
    notification = message.get("notification") or {}
    if not all(isinstance(notification.get(k, ""), str) for k in ("title", "body")):
        return bad_request("message.notification", "title and body must be strings")
    android = message.get("android") or {}
    ttl = str(android.get("ttl", "0s"))
    if not ttl.endswith("s") or not ttl[:-1].replace(".", "", 1).isdigit():
        return bad_request("message.android.ttl", f"Invalid value at 'message.android.ttl' ({ttl})")
    if float(ttl[:-1]) > 2_419_200:
        return bad_request("message.android.ttl", "TTL is over four weeks")
    if str(android.get("priority", "normal")).lower() not in ("normal", "high"):
        return bad_request("message.android.priority", "Invalid priority")
    apns_headers = (message.get("apns") or {}).get("headers") or {}
    if apns_headers.get("apns-priority", "10") not in ("1", "5", "10"):
        return bad_request("message.apns.headers", "Invalid apns-priority")
    if not str(apns_headers.get("apns-expiration", "0")).isdigit():
        return bad_request("message.apns.headers", "Invalid apns-expiration")
    webpush_headers = (message.get("webpush") or {}).get("headers") or {}
    if webpush_headers.get("Urgency", "normal") not in URGENCIES:
        return bad_request("message.webpush.headers", "Invalid Urgency")
    return None
