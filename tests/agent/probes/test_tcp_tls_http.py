"""TCP, TLS and HTTP probes against real servers on 127.0.0.1 (port 0).

No test asserts a timing: only that an RTT is present and positive.
Certificates come from a throw-away CA made in the test.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.probes import http, tcp, tls

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

# --- certificates ---------------------------------------------------------------------


@dataclass
class Pki:
    cafile: Path
    leaf: dict[str, tuple[Path, Path]]  # name -> (certfile, keyfile)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("posmon test CA"))
        .issuer_name(_name("posmon test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - 400 * DAY)
        .not_valid_after(NOW + 400 * DAY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cafile = _write(d / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM))

    def leaf(
        label: str,
        host: str,
        before: dt.timedelta,
        after: dt.timedelta,
        *,
        self_signed: bool = False,
    ) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        issuer_key = key if self_signed else ca_key
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(host))
            .issuer_name(_name(host) if self_signed else ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW + before)
            .not_valid_after(NOW + after)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                critical=False,
            )
        )
        if not self_signed:
            builder = builder.add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        cert = builder.sign(issuer_key, hashes.SHA256())
        return (
            _write(d / f"{label}.crt", cert.public_bytes(serialization.Encoding.PEM)),
            _write(d / f"{label}.key", _key_pem(key)),
        )

    return Pki(
        cafile=cafile,
        leaf={
            "valid": leaf("valid", "localhost", -10 * DAY, 30 * DAY),
            "expired": leaf("expired", "localhost", -60 * DAY, -10 * DAY),
            "not_yet": leaf("not_yet", "localhost", 5 * DAY, 40 * DAY),
            "wrong_host": leaf("wrong_host", "other.example", -10 * DAY, 20 * DAY),
            "self_signed": leaf("self_signed", "localhost", -10 * DAY, 50 * DAY, self_signed=True),
        },
    )


def server_context(pki: Pki, which: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    certfile, keyfile = pki.leaf[which]
    ctx.load_cert_chain(certfile, keyfile)
    return ctx


# --- servers --------------------------------------------------------------------------


@asynccontextmanager
async def serve(handler: Handler, ctx: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """An asyncio server on 127.0.0.1; yields its port, closes every connection at the end."""
    writers: list[asyncio.StreamWriter] = []

    async def wrapped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        try:
            await handler(reader, writer)
        except (OSError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(wrapped, "127.0.0.1", 0, ssl=ctx)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for w in writers:
            w.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)


async def read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def answer(raw: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw)
        await writer.drain()

    return handler


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts, reads, never answers; ends when the client goes away."""
    await reader.read()


async def resetting(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Reads the request, then resets the connection (SO_LINGER 0)."""
    await read_request(reader)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port: int = s.getsockname()[1]
    s.close()
    return port


# --- tcp ------------------------------------------------------------------------------


async def test_tcp_open_port_ok_with_rtt() -> None:
    async with serve(silent) as port:
        r = await tcp.probe_once("127.0.0.1", port, timeout_s=2)
    assert r.ok and r.error is None
    assert r.rtt_ms is not None and r.rtt_ms > 0
    assert r.extras["address"] == "127.0.0.1"


async def test_tcp_closed_port_refused() -> None:
    r = await tcp.probe_once("127.0.0.1", closed_port(), timeout_s=2)
    assert not r.ok and r.error == "refused" and r.rtt_ms is None


async def test_tcp_name_that_does_not_resolve() -> None:
    r = await tcp.probe_once("no-such-host.invalid", 443, timeout_s=5)
    assert not r.ok and r.error == "dns"


def test_classify_os_error() -> None:
    import errno

    assert tcp.classify_os_error(TimeoutError()) == "timeout"
    assert tcp.classify_os_error(ConnectionRefusedError()) == "refused"
    assert tcp.classify_os_error(ConnectionResetError()) == "reset"
    assert tcp.classify_os_error(OSError(errno.ENETUNREACH, "x")) == "unreachable"
    assert tcp.classify_os_error(OSError(errno.EHOSTUNREACH, "x")) == "unreachable"
    assert tcp.classify_os_error(socket.gaierror(-2, "x")) == "dns"


# --- tls ------------------------------------------------------------------------------


async def test_tls_valid(pki: Pki) -> None:
    async with serve(silent, server_context(pki, "valid")) as port:
        r = await tls.probe_once(
            "127.0.0.1", port, server_name="localhost", timeout_s=5, cafile=str(pki.cafile)
        )
    assert r.ok, r
    assert r.rtt_ms is not None and r.rtt_ms > 0
    assert r.extras["cert_days_left"] == pytest.approx(30, abs=1)
    assert str(r.extras["tls_version"]).startswith("TLSv1")


@pytest.mark.parametrize(
    ("which", "code", "days"),
    [
        ("expired", "tls_expired", -10),
        ("not_yet", "tls_not_yet_valid", 40),
        ("wrong_host", "tls_hostname_mismatch", 20),
        ("self_signed", "tls_unknown_issuer", 50),
    ],
)
async def test_tls_verify_failures(pki: Pki, which: str, code: str, days: float) -> None:
    async with serve(silent, server_context(pki, which)) as port:
        r = await tls.probe_once(
            "127.0.0.1", port, server_name="localhost", timeout_s=5, cafile=str(pki.cafile)
        )
    assert not r.ok and r.error == code, r
    assert r.rtt_ms is None
    left = r.extras["cert_days_left"]
    assert isinstance(left, float)
    assert left == pytest.approx(days, abs=1)
    assert (left < 0) == (days < 0)
    assert "tls_version" in r.extras


async def test_tls_closed_port_uses_tcp_code(pki: Pki) -> None:
    r = await tls.probe_once("127.0.0.1", closed_port(), timeout_s=2, cafile=str(pki.cafile))
    assert not r.ok and r.error == "refused"


async def test_tls_peer_that_is_not_tls() -> None:
    async def banner(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n" * 8)
        await writer.drain()
        await reader.read()

    async with serve(banner) as port:
        r = await tls.probe_once("127.0.0.1", port, timeout_s=2)
    assert not r.ok and r.error == "tls_handshake_failed", r


async def test_tls_silent_peer_times_out() -> None:
    async with serve(silent) as port:
        r = await tls.probe_once("127.0.0.1", port, timeout_s=0.5)
    assert not r.ok and r.error == "timeout"


def test_cert_validity_reads_der(pki: Pki) -> None:
    for label, after in (("valid", 30), ("expired", -10)):
        cert = x509.load_pem_x509_certificate(pki.leaf[label][0].read_bytes())
        der = cert.public_bytes(serialization.Encoding.DER)
        before, not_after = tls.cert_validity(der)
        assert not_after == cert.not_valid_after_utc
        assert before == cert.not_valid_before_utc
        assert tls.days_left(der, NOW) == pytest.approx(after, abs=1 / 86400)


def _verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    err = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    err.verify_code = code
    err.verify_message = message
    return err


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        (10, "certificate has expired", "tls_expired"),
        (9, "certificate is not yet valid", "tls_not_yet_valid"),
        (20, "unable to get local issuer certificate", "tls_unknown_issuer"),
        (18, "self-signed certificate", "tls_unknown_issuer"),
        (19, "self-signed certificate in certificate chain", "tls_unknown_issuer"),
        (62, "Hostname mismatch, certificate is not valid for 'x'.", "tls_hostname_mismatch"),
        (
            64,
            "IP address mismatch, certificate is not valid for '1.2.3.4'.",
            "tls_hostname_mismatch",
        ),
        (23, "certificate revoked", "tls_verify_failed"),
        (7, "certificate signature failure", "tls_verify_failed"),
    ],
)
def test_classify_verify_error(code: int, message: str, expected: str) -> None:
    assert tls.classify_verify_error(_verify_error(code, message)) == expected


# --- http -----------------------------------------------------------------------------

OK_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
UNAVAILABLE_503 = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"


async def test_http_200() -> None:
    async with serve(answer(OK_200)) as port:
        r = await http.probe_once(f"http://127.0.0.1:{port}/health?x=1", timeout_s=2)
    assert r.ok and r.error is None, r
    assert r.extras["status"] == 200
    assert r.rtt_ms is not None and r.rtt_ms > 0
    for key in ("dns_ms", "connect_ms", "first_byte_ms"):
        value = r.extras[key]
        assert isinstance(value, float) and value >= 0
    assert "tls_ms" not in r.extras


async def test_http_404_is_ok() -> None:
    async with serve(answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")) as port:
        r = await http.probe_once(f"http://127.0.0.1:{port}/", timeout_s=2)
    assert r.ok and r.extras["status"] == 404


async def test_http_503_is_5xx() -> None:
    async with serve(answer(UNAVAILABLE_503)) as port:
        r = await http.probe_once(f"http://127.0.0.1:{port}/", timeout_s=2)
    assert not r.ok and r.error == "http_5xx" and r.extras["status"] == 503


async def test_http_garbage_is_bad_response() -> None:
    async with serve(answer(b"SSH-2.0-OpenSSH_9.6\r\n")) as port:
        r = await http.probe_once(f"http://127.0.0.1:{port}/", timeout_s=2)
    assert not r.ok and r.error == "http_bad_response"
    assert "status" not in r.extras


async def test_http_closed_without_answer_is_bad_response() -> None:
    async with serve(answer(b"")) as port:
        r = await http.probe_once(f"http://127.0.0.1:{port}/", timeout_s=2)
    assert not r.ok and r.error == "http_bad_response"


async def test_http_silent_listener_times_out() -> None:
    async with serve(silent) as port:
        r = await http.probe_once(f"http://127.0.0.1:{port}/", timeout_s=0.5)
    assert not r.ok and r.error == "timeout"
    assert "connect_ms" in r.extras and "first_byte_ms" not in r.extras


async def test_http_reset() -> None:
    async with serve(resetting) as port:
        r = await http.probe_once(f"http://127.0.0.1:{port}/", timeout_s=2)
    assert not r.ok and r.error == "reset", r


async def test_http_refused() -> None:
    r = await http.probe_once(f"http://127.0.0.1:{closed_port()}/", timeout_s=2)
    assert not r.ok and r.error == "refused"


async def test_https_200(pki: Pki) -> None:
    async with serve(answer(OK_200), server_context(pki, "valid")) as port:
        r = await http.probe_once(f"https://localhost:{port}/", timeout_s=5, cafile=str(pki.cafile))
    assert r.ok, r
    assert r.extras["status"] == 200
    tls_ms = r.extras["tls_ms"]
    assert isinstance(tls_ms, float) and tls_ms >= 0


async def test_https_expired_uses_tls_code(pki: Pki) -> None:
    async with serve(answer(OK_200), server_context(pki, "expired")) as port:
        r = await http.probe_once(f"https://localhost:{port}/", timeout_s=5, cafile=str(pki.cafile))
    assert not r.ok and r.error == "tls_expired"
