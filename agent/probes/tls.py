"""TLS handshake probe with certificate checks.

``probe_once`` connects over TCP, then times the TLS handshake alone
(``rtt_ms``), verifying the peer against ``cafile`` (or the system store)
and ``server_name`` (default: ``host``). Extras:

- ``cert_days_left``: days (float) from now until the peer certificate's
  notAfter, negative once expired. When verification fails the probe makes
  a second, non-verifying handshake within the same deadline only to read
  the certificate, so an expired certificate still reports how long ago it
  expired.
- ``tls_version``: the negotiated protocol, e.g. ``TLSv1.3``.

Error codes: those of :func:`classify_verify_error`, ``tls_handshake_failed``
for any other TLS failure, and the tcp codes for TCP-level failures.

The certificate's validity is read with a minimal DER walk (no dependency
beyond the standard library).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from datetime import UTC, datetime

from protocol.fields import Scalar

from . import tcp
from .base import ProbeResult

# OpenSSL X509_V_ERR_* codes.
_EXPIRED = {10}  # CERT_HAS_EXPIRED
_NOT_YET_VALID = {9}  # CERT_NOT_YET_VALID
_UNKNOWN_ISSUER = {
    2,  # UNABLE_TO_GET_ISSUER_CERT
    18,  # DEPTH_ZERO_SELF_SIGNED_CERT
    19,  # SELF_SIGNED_CERT_IN_CHAIN
    20,  # UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21,  # UNABLE_TO_VERIFY_LEAF_SIGNATURE
}
_HOSTNAME = {62, 63, 64}  # HOSTNAME_MISMATCH, EMAIL_MISMATCH, IP_ADDRESS_MISMATCH


def classify_verify_error(err: ssl.SSLCertVerificationError) -> str:
    """The error code for a failed certificate verification."""
    code = getattr(err, "verify_code", None)
    message = (getattr(err, "verify_message", None) or str(err)).lower()
    if code in _EXPIRED or "has expired" in message:
        return "tls_expired"
    if code in _NOT_YET_VALID or "not yet valid" in message:
        return "tls_not_yet_valid"
    if (
        code in _UNKNOWN_ISSUER
        or "self-signed" in message
        or "self signed" in message
        or "issuer certificate" in message
    ):
        return "tls_unknown_issuer"
    if code in _HOSTNAME or "mismatch" in message:
        return "tls_hostname_mismatch"
    return "tls_verify_failed"


# --- minimal DER reading --------------------------------------------------------------


def _der_item(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of content, end of content) of the DER item at ``pos``."""
    tag = data[pos]
    length = data[pos + 1]
    pos += 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[pos : pos + n], "big")
        pos += n
    end = pos + length
    if end > len(data):
        raise ValueError("truncated DER")
    return tag, pos, end


def _der_time(tag: int, raw: bytes) -> datetime:
    text = raw.decode("ascii")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("not a time")
    if not text.endswith("Z"):
        raise ValueError("time not in UTC")
    return datetime.strptime(text[:14], "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def cert_validity(der: bytes) -> tuple[datetime, datetime]:
    """(notBefore, notAfter) of a DER-encoded X.509 certificate."""
    _, cert, _ = _der_item(der, 0)  # Certificate
    _, pos, _ = _der_item(der, cert)  # tbsCertificate
    tag, _, end = _der_item(der, pos)
    if tag == 0xA0:  # [0] version
        pos = end
        tag, _, end = _der_item(der, pos)
    for _ in range(3):  # serialNumber, signature, issuer
        _, _, end = _der_item(der, pos)
        pos = end
    _, pos, _ = _der_item(der, pos)  # validity
    tag, start, end = _der_item(der, pos)
    not_before = _der_time(tag, der[start:end])
    tag, start, end = _der_item(der, end)
    not_after = _der_time(tag, der[start:end])
    return not_before, not_after


def days_left(der: bytes, now: datetime | None = None) -> float:
    """Days from ``now`` until the certificate's notAfter (negative when expired)."""
    _, not_after = cert_validity(der)
    now = now or datetime.now(UTC)
    return (not_after - now).total_seconds() / 86400.0


# --- the probe ------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _context(cafile: str | None, *, verify: bool) -> ssl.SSLContext:
    """One context per CA file, made once: loading the system's CA store costs
    tens of milliseconds of CPU, far more than a handshake (a changed CA file
    is read again when the agent restarts)."""
    if not verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=cafile)


async def handshake(
    infos: list[tcp.AddrInfo], server_name: str, ctx: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, float]:
    """Connect, then TLS; returns the streams and the handshake time in ms."""
    sock = await tcp.connect(infos)
    try:
        t0 = tcp.now_ms()
        reader, writer = await asyncio.open_connection(
            sock=sock, ssl=ctx, server_hostname=server_name
        )
    except BaseException:
        sock.close()
        raise
    return reader, writer, tcp.now_ms() - t0


def describe(writer: asyncio.StreamWriter, extras: dict[str, Scalar]) -> None:
    """Put ``tls_version`` and ``cert_days_left`` of an open TLS stream into extras."""
    obj = writer.get_extra_info("ssl_object")
    if not isinstance(obj, ssl.SSLObject):
        return
    version = obj.version()
    if version:
        extras["tls_version"] = version
    der = obj.getpeercert(binary_form=True)
    if der:
        with contextlib.suppress(ValueError, IndexError):
            extras["cert_days_left"] = days_left(der)


async def _peek_certificate(
    infos: list[tcp.AddrInfo], server_name: str, extras: dict[str, Scalar]
) -> None:
    """A non-verifying handshake only to read the certificate; never raises."""
    with contextlib.suppress(OSError, ssl.SSLError):
        _, writer, _ = await handshake(infos, server_name, _context(None, verify=False))
        try:
            describe(writer, extras)
        finally:
            await tcp.close_writer(writer)


async def probe_once(
    host: str,
    port: int,
    *,
    server_name: str | None = None,
    timeout_s: float,
    cafile: str | None = None,
) -> ProbeResult:
    """Time one TLS handshake with ``host:port`` and check its certificate."""
    name = server_name or host
    extras: dict[str, Scalar] = {}
    deadline = asyncio.get_running_loop().time() + timeout_s
    verify_error: str | None = None
    writer: asyncio.StreamWriter | None = None
    rtt = 0.0
    try:
        async with asyncio.timeout_at(deadline):
            infos = await tcp.resolve(host, port)
            try:
                _, writer, rtt = await handshake(infos, name, _context(cafile, verify=True))
            except ssl.SSLCertVerificationError as exc:
                verify_error = classify_verify_error(exc)
    except ssl.SSLError:
        return ProbeResult(ok=False, error="tls_handshake_failed", extras=extras)
    except (OSError, tcp.DnsError) as exc:
        return ProbeResult(ok=False, error=tcp.classify_os_error(exc), extras=extras)
    if writer is None:
        assert verify_error is not None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await _peek_certificate(infos, name, extras)
        return ProbeResult(ok=False, error=verify_error, extras=extras)
    try:
        describe(writer, extras)
    finally:
        await tcp.close_writer(writer)
    return ProbeResult(ok=True, rtt_ms=rtt, extras=extras)
