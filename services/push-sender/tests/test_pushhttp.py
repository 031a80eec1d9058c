"""The push HTTP client against scripted servers: keep-alive reuse, the answer shapes push
services use (Content-Length, chunked, close-delimited, Connection: close), a kept-alive
connection the server dropped, timeouts, TLS with hostname verification, and the
connect-time address guard."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from notify_common.webpush import EndpointPolicy
from notify_push_sender.pushhttp import BlockedAddress, PushClient

DEV = EndpointPolicy.from_settings(allowed_hosts="", dev_hosts="127.0.0.1")

Reply = Callable[[bytes, int], bytes | None]  # (request, index on the connection) -> bytes


async def serve(reply: Reply, *, ssl_context: ssl.SSLContext | None = None):
    """A server answering each request on a connection with `reply(request, i)`; None
    closes the connection without answering. Returns (server, port, requests seen)."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        i = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                body = await reader.readexactly(length)
                seen.append(head + body)
                answer = reply(head + body, i)
                i += 1
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
                lower = answer.lower()
                delimited = b"content-length" in lower or b"chunked" in lower
                if b"connection: close" in lower or not delimited:
                    break  # the answer ends with the connection
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    port = server.sockets[0].getsockname()[1]
    return server, port, seen


def run(coro: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(coro())


def client(**kw) -> PushClient:
    return PushClient(policy=kw.pop("policy", DEV), per_origin=4, timeout_s=2.0, **kw)


CREATED = b"HTTP/1.1 201 Created\r\nLocation: /m/1\r\nContent-Length: 0\r\n\r\n"


def test_kept_alive_connections_are_reused_and_the_request_is_what_push_services_expect():
    async def go() -> None:
        server, port, seen = await serve(lambda _r, _i: CREATED)
        c = client()
        for _ in range(5):
            answer = await c.post(
                f"http://127.0.0.1:{port}/push/abc?x=1", b"\x01\x02", {"TTL": "60"}
            )
            assert answer.status == 201
        assert c.opened == 1
        first = seen[0]
        assert first.startswith(b"POST /push/abc?x=1 HTTP/1.1\r\n")
        assert f"Host: 127.0.0.1:{port}\r\n".encode() in first
        assert b"TTL: 60\r\n" in first and b"Content-Length: 2\r\n" in first
        assert first.endswith(b"\r\n\r\n\x01\x02")
        c.close()
        server.close()

    run(go)


@pytest.mark.parametrize(
    ("answer", "reused"),
    [
        (b"HTTP/1.1 410 Gone\r\nContent-Length: 11\r\n\r\nsubscriptio", True),
        (
            b"HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"4\r\nslow\r\n3;ext=1\r\n...\r\n0\r\n\r\n",
            True,
        ),
        (b"HTTP/1.1 500 Oops\r\nConnection: close\r\nContent-Length: 2\r\n\r\nno", False),
        (b"HTTP/1.0 201 Created\r\n\r\n", False),  # delimited by the close
        (b"HTTP/1.1 201 Created\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100000, False),
    ],
)
def test_answer_shapes(answer, reused):
    async def go() -> None:
        server, port, _seen = await serve(lambda _r, _i: answer)
        c = client()
        got = await c.post(f"http://127.0.0.1:{port}/p", b"", {})
        assert got.status == int(answer.split(b" ")[1])
        if got.status == 429:
            assert got.retry_after == "7"
        again = await c.post(f"http://127.0.0.1:{port}/p", b"", {})
        assert again.status == got.status
        assert c.opened == (1 if reused else 2)
        c.close()
        server.close()

    run(go)


def test_a_kept_alive_connection_the_server_dropped_is_retried_once_on_a_new_one():
    async def go() -> None:
        # The server answers once per connection, then drops it without a word.
        server, port, seen = await serve(lambda _r, i: CREATED if i == 0 else None)
        c = client()
        assert (await c.post(f"http://127.0.0.1:{port}/p", b"", {})).status == 201
        await asyncio.sleep(0.05)
        assert (await c.post(f"http://127.0.0.1:{port}/p", b"", {})).status == 201
        assert c.opened == 2 and len(seen) == 3  # one lost on the stale connection
        c.close()
        server.close()

    run(go)


def test_a_fresh_connection_that_drops_is_an_error_not_a_retry():
    async def go() -> None:
        server, port, seen = await serve(lambda _r, _i: None)
        c = client()
        with pytest.raises(OSError):
            await c.post(f"http://127.0.0.1:{port}/p", b"", {})
        assert len(seen) == 1
        server.close()

    run(go)


def test_no_answer_in_time_is_a_timeout():
    async def go() -> None:
        async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            await asyncio.sleep(5)

        server = await asyncio.start_server(hang, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        c = PushClient(policy=DEV, per_origin=1, timeout_s=0.3)
        with pytest.raises(TimeoutError):
            await c.post(f"http://127.0.0.1:{port}/p", b"", {})
        server.close()

    run(go)


def test_addresses_the_policy_refuses_are_never_connected_to():
    async def go() -> None:
        server, port, seen = await serve(lambda _r, _i: CREATED)
        strict = EndpointPolicy()  # no dev hosts: loopback is refused
        c = client(policy=strict)
        with pytest.raises(BlockedAddress):
            await c.post(f"http://127.0.0.1:{port}/p", b"", {})
        with pytest.raises(BlockedAddress):
            await c.post(f"http://localhost:{port}/p", b"", {})
        assert seen == [] and c.opened == 0
        server.close()

    run(go)


def _certificate(tmp_path: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for push.test (self-signed) and a client context trusting it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "push.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("push.test"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    trusting = ssl.create_default_context(cafile=str(cert_path))
    return server, trusting


def test_tls_with_hostname_verification(tmp_path, monkeypatch):
    import socket

    real = socket.getaddrinfo
    # push.test and other.test both resolve to the local server; only push.test is named
    # in its certificate.
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda host, *a, **k: real("127.0.0.1" if host.endswith(".test") else host, *a, **k),
    )
    server_ctx, trusting = _certificate(tmp_path)

    async def go() -> None:
        server, port, seen = await serve(lambda _r, _i: CREATED, ssl_context=server_ctx)
        policy = EndpointPolicy.from_settings(
            allowed_hosts="", dev_hosts="127.0.0.1,push.test,other.test"
        )
        c = client(policy=policy, ssl_context=trusting)
        answer = await c.post(f"https://push.test:{port}/p", b"sealed", {})
        assert answer.status == 201 and seen[0].endswith(b"sealed")
        with pytest.raises(ssl.SSLCertVerificationError):
            await c.post(f"https://other.test:{port}/p", b"", {})
        untrusting = client(policy=policy)  # the system trust store does not know it
        with pytest.raises(ssl.SSLCertVerificationError):
            await untrusting.post(f"https://push.test:{port}/p", b"", {})
        c.close()
        server.close()

    run(go)
