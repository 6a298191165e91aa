"""What every probe module provides, and what one attempt yields.

A probe module has a pure part (packet codecs, certificate checks, the
arithmetic) and a thin async part, ``async def probe_once(...) ->
ProbeResult``, which

- never raises for a failure of the target: refused, reset, timed out, bad
  answer — all are a ``ProbeResult`` with ``ok=False`` and an error code;
- enforces its own timeout (a hanging target never delays anything else);
- raises :class:`ProbeUnavailable` only when the probe cannot run on this
  host at all (no permission for ICMP, no such interface), with the reason.

Error codes are short snake_case strings, stable once released, documented
in the README: ``timeout``, ``refused``, ``reset``, ``unreachable``,
``nxdomain``, ``servfail``, ``tls_expired``, ``tls_not_yet_valid``,
``tls_unknown_issuer``, ``tls_hostname_mismatch``, ``http_5xx`` …
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from protocol.fields import Scalar


class ProbeUnavailable(Exception):
    """This probe cannot run on this host; the message says why."""


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """One attempt against one target."""

    ok: bool
    rtt_ms: float | None = None
    error: str | None = None
    #: Probe-specific figures: cert_days_left, clock_offset_ms, resolved, status …
    extras: Mapping[str, Scalar] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ok and self.error is not None:
            raise ValueError("an ok result carries no error code")
        if not self.ok and not self.error:
            raise ValueError("a failed result needs an error code")
