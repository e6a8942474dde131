"""The webhook HTTP/1.1 client against real local servers that answer scripted bytes: connection
reuse and when it must not happen, every way an answer is framed, broken answers, TLS."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from nudge.net.http1 import HTTP1Client, HTTPError
from tests.conftest import free_port

CLOSE = b""  # in a script: close the connection here

# n (the request's number on the server, from 1), request bytes -> what to send, in order
Script = Callable[[int, bytes], list[bytes]]


def ok(body: bytes = b'{"ok":true}', *extra: str) -> bytes:
    head = "".join(f"{line}\r\n" for line in extra)
    return (
        f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{head}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


class Server:
    """Reads requests (head + content-length body) and sends what the script says."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed = 0  # connections the client closed
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                self.requests.append(request)
                for part in self.script(len(self.requests), request):
                    if part == CLOSE:
                        writer.close()
                        return
                    writer.write(part)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed += 1
            writer.close()


@asynccontextmanager
async def serve(script: Script, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    server = Server(script)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=tls)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()


def client(**overrides: Any) -> HTTP1Client:
    """Every name resolves to 127.0.0.1 (like the SSRF guard would, with private targets on)."""

    async def address_for(host: str, port: int) -> str:
        return "127.0.0.1"

    values: dict[str, Any] = {
        "address_for": address_for,
        "check_peer": lambda ip: None,
        "connect_timeout_s": 2.0,
        "user_agent": "test/1",
        **overrides,
    }
    return HTTP1Client(**values)


async def test_keep_alive_one_connection_for_several_calls() -> None:
    async with serve(lambda n, _: [ok(b'{"n":%d}' % n)]) as server:
        http = client()
        url = f"http://app.example:{server.port}/hook?a=1"
        for n in range(1, 6):
            answer = await http.request(
                "POST",
                url,
                params={"uid": "u 1"},
                headers={"x-sig": "v1,abc"},
                body=b"{}",
                limit=100,
                timeout_s=5,
            )
            assert (answer.status, answer.body, answer.error) == (200, b'{"n":%d}' % n, None)
            assert answer.headers["content-type"] == "application/json"
            assert answer.peer.startswith("127.0.0.1:")
        assert server.connections == 1
        first = server.requests[0].decode()
        assert first.startswith("POST /hook?a=1&uid=u%201 HTTP/1.1\r\n")
        assert f"host: app.example:{server.port}\r\n" in first  # the name, not the address
        assert "x-sig: v1,abc\r\n" in first and "content-length: 2\r\n" in first
        assert first.endswith("\r\n\r\n{}")
        await http.aclose()
        await asyncio.sleep(0.05)
        assert server.closed == 1


async def test_concurrent_calls_use_separate_connections_and_keep_a_bounded_few() -> None:
    async with serve(lambda n, _: [ok()]) as server:
        http = client(max_idle_per_origin=2)
        url = f"http://127.0.0.1:{server.port}/"
        results = await asyncio.gather(
            *(http.request("GET", url, limit=100, timeout_s=5) for _ in range(5))
        )
        assert all(r.status == 200 for r in results)
        assert server.connections == 5
        await asyncio.sleep(0.05)
        assert server.closed == 3  # only two stay idle
        await asyncio.gather(*(http.request("GET", url, limit=100, timeout_s=5) for _ in range(2)))
        assert server.connections == 5
        await http.aclose()


async def test_chunked_and_close_delimited_and_empty_answers() -> None:
    chunked = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    until_close = b"HTTP/1.1 200 OK\r\n\r\nall of it"
    answers = {1: [chunked], 2: [b"HTTP/1.1 204 No Content\r\n\r\n"], 3: [until_close, CLOSE]}
    async with serve(lambda n, _: answers[n]) as server:
        http = client()
        url = f"http://127.0.0.1:{server.port}/"
        first = await http.request("POST", url, body=b"x", limit=100, timeout_s=5)
        assert first.body == b"hello world"
        empty = await http.request("POST", url, limit=100, timeout_s=5)
        assert empty.status == 204 and empty.body == b""
        last = await http.request("POST", url, limit=100, timeout_s=5)
        assert last.body == b"all of it"
        assert server.connections == 1
        await http.aclose()


async def test_not_reused_after_connection_close_or_http_1_0() -> None:
    answers = {
        1: [ok(b"1", "connection: close")],
        2: [b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n2"],
        3: [ok(b"3")],
        4: [ok(b"4")],
    }
    async with serve(lambda n, _: answers[n]) as server:
        http = client()
        url = f"http://127.0.0.1:{server.port}/"
        bodies = [(await http.request("GET", url, limit=10, timeout_s=5)).body for _ in range(4)]
        assert bodies == [b"1", b"2", b"3", b"4"]
        assert server.connections == 3  # a new one after each of the first two
        await http.aclose()


async def test_broken_answers_fail_clearly() -> None:
    answers = {
        1: [b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this", CLOSE],
        2: [CLOSE],
        3: [b"SSH-2.0-OpenSSH_9.6\r\n\r\n"],
        4: [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhel", CLOSE],
        5: [b"HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ncontent-length: 1\r\n\r\nx"],
    }
    expected = [
        "the connection closed before the answer was complete",
        "the connection closed without an answer",
        "the answer is not valid HTTP/1.1",
        "the connection closed before the answer was complete",
        "the answer is gzip-encoded, which was not asked for",
    ]
    async with serve(lambda n, _: answers[n]) as server:
        http = client()
        for words in expected:
            with pytest.raises(HTTPError, match=words):
                await http.request(
                    "GET", f"http://127.0.0.1:{server.port}/", limit=1000, timeout_s=5
                )
        assert server.connections == 5  # a connection that failed is never reused
        await http.aclose()


async def test_oversize_answers_are_cut_off_and_the_connection_dropped() -> None:
    big = b"x" * 5000
    chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + b"".join(
        b"3e8\r\n" + b"y" * 1000 + b"\r\n" for _ in range(5)
    )
    answers = {1: [ok(big)], 2: [chunked + b"0\r\n\r\n"], 3: [ok(b"small")]}
    async with serve(lambda n, _: answers[n]) as server:
        http = client()
        url = f"http://127.0.0.1:{server.port}/"
        for _ in range(2):
            answer = await http.request("POST", url, limit=4096, timeout_s=5)
            assert answer.status == 200 and answer.error == "answer over 4096 bytes; cut off"
            assert len(answer.body) == 4096
        assert (await http.request("POST", url, limit=4096, timeout_s=5)).body == b"small"
        assert server.connections == 3
        await http.aclose()


async def test_redirects_are_returned_not_followed() -> None:
    moved = b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /elsewhere\r\ncontent-length: 0\r\n\r\n"
    async with serve(lambda n, _: [moved]) as server:
        http = client()
        answer = await http.request(
            "POST", f"http://127.0.0.1:{server.port}/", limit=100, timeout_s=5
        )
        assert answer.status == 307 and answer.headers["location"] == "/elsewhere"
        assert len(server.requests) == 1
        await http.aclose()


async def test_a_hang_ends_at_the_timeout_and_the_connection_is_dropped() -> None:
    half = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"
    answers = {1: [half], 2: [half], 3: [ok()]}
    async with serve(lambda n, _: answers[n]) as server:
        http = client()
        url = f"http://127.0.0.1:{server.port}/"
        with pytest.raises(TimeoutError):
            await http.request("GET", url, limit=100, timeout_s=0.2)
        with pytest.raises(TimeoutError):  # the caller's own timeout (a cancellation) too
            async with asyncio.timeout(0.2):
                await http.request("GET", url, limit=100, timeout_s=5)
        assert (await http.request("GET", url, limit=100, timeout_s=5)).status == 200
        assert server.connections == 3
        await http.aclose()


async def test_idle_connections_are_closed_and_stale_ones_skipped() -> None:
    async with serve(lambda n, _: [ok()]) as server:
        http = client(idle_timeout_s=0.1)
        url = f"http://127.0.0.1:{server.port}/"
        await http.request("GET", url, limit=100, timeout_s=5)
        await asyncio.sleep(0.35)
        assert server.closed == 1  # swept
        await http.request("GET", url, limit=100, timeout_s=5)
        assert server.connections == 2
        await http.aclose()

    # The server closes an idle connection: the next call opens a new one.
    answers = {1: [ok(b"1"), CLOSE], 2: [ok(b"2")]}
    async with serve(lambda n, _: answers[n]) as server:
        http = client()
        url = f"http://127.0.0.1:{server.port}/"
        assert (await http.request("GET", url, limit=100, timeout_s=5)).body == b"1"
        await asyncio.sleep(0.05)
        assert (await http.request("GET", url, limit=100, timeout_s=5)).body == b"2"
        assert server.connections == 2
        await http.aclose()


async def test_unasked_bytes_after_an_answer_drop_the_connection() -> None:
    answers = {1: [ok(b"1") + b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"], 2: [ok(b"2")]}
    async with serve(lambda n, _: answers[n]) as server:
        http = client()
        url = f"http://127.0.0.1:{server.port}/"
        assert (await http.request("GET", url, limit=100, timeout_s=5)).body == b"1"
        assert (await http.request("GET", url, limit=100, timeout_s=5)).body == b"2"
        assert server.connections == 2
        await http.aclose()


async def test_requests_that_cannot_be_made() -> None:
    http = client()
    port = free_port()
    with pytest.raises(HTTPError, match=f"cannot connect to 127.0.0.1:{port}: "):
        await http.request("GET", f"http://127.0.0.1:{port}/", limit=100, timeout_s=5)
    cases = {
        ("GET", "ftp://example.com/x"): "only http:// and https:// URLs can be called",
        ("GET", "http:///path"): "no host in the URL",
        ("GET", "http://example.com:99999/"): "invalid URL",
        ("HEAD", "http://example.com/"): "method 'HEAD' is not supported",
    }
    for (method, url), words in cases.items():
        with pytest.raises(HTTPError, match=words):
            await http.request(method, url, limit=100, timeout_s=5)
    with pytest.raises(HTTPError, match="line break"):
        await http.request(
            "GET", "http://example.com/", headers={"x": "a\r\nevil: 1"}, limit=9, timeout_s=5
        )


async def test_the_connected_peer_is_checked() -> None:
    class Refused(Exception):
        pass

    def refuse(ip: str) -> None:
        raise Refused(ip)

    async with serve(lambda n, _: [ok()]) as server:
        http = client(check_peer=refuse)
        with pytest.raises(Refused, match="127.0.0.1"):
            await http.request("GET", f"http://127.0.0.1:{server.port}/", limit=100, timeout_s=5)
        await asyncio.sleep(0.05)
        assert server.requests == [] and server.closed == 1
        await http.aclose()


def test_on_uvloop_as_nudge_serve_runs() -> None:
    """uvloop's transports are not asyncio's classes: reuse, a hang and a refusal there too."""

    async def scenario() -> None:
        answers = {1: [ok(b"1")], 2: [ok(b"2")], 3: [b"HTTP/1.1 200 OK\r\n"]}
        async with serve(lambda n, _: answers[n]) as server:
            http = client()
            url = f"http://127.0.0.1:{server.port}/"
            for expected in (b"1", b"2"):
                answer = await http.request("POST", url, body=b"{}", limit=100, timeout_s=5)
                assert answer.body == expected
            with pytest.raises(TimeoutError):
                await http.request("POST", url, limit=100, timeout_s=0.2)
            assert server.connections == 1
            await http.aclose()
        with pytest.raises(HTTPError, match="cannot connect to"):
            await client().request("GET", f"http://127.0.0.1:{free_port()}/", limit=1, timeout_s=5)

    uvloop.run(scenario())


def self_signed(directory: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_tls_verifies_the_url_name_on_the_checked_address(tmp_path: Path) -> None:
    """The certificate names app.example only: the call succeeds because SNI and the check use
    the URL's name, while the connection goes to the address the guard gave (127.0.0.1)."""
    cert, key = self_signed(tmp_path, "app.example")
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    async with serve(lambda n, _: [ok()], tls=server_tls) as server:
        trusting = client(ssl_context=ssl.create_default_context(cafile=str(cert)))
        for _ in range(2):
            answer = await trusting.request(
                "POST",
                f"https://app.example:{server.port}/hook",
                body=b"{}",
                limit=100,
                timeout_s=5,
            )
            assert answer.status == 200 and answer.body == b'{"ok":true}'
        assert server.connections == 1
        assert f"host: app.example:{server.port}\r\n" in server.requests[0].decode()
        await trusting.aclose()

        # Another name on the same address, or the system's CAs: the certificate is refused.
        with pytest.raises(HTTPError, match="certificate verify failed"):
            await trusting.request(
                "GET", f"https://other.example:{server.port}/", limit=100, timeout_s=5
            )
        default = client()
        with pytest.raises(HTTPError, match="certificate verify failed"):
            await default.request(
                "GET", f"https://app.example:{server.port}/", limit=100, timeout_s=5
            )
