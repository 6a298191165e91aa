"""Wi-Fi probe: signal level and link quality from Linux ``/proc/net/wireless``.

The file has two header lines and then one line per wireless interface::

    Inter-| sta-|   Quality        |   Discarded packets               | Missed | WE
     face | tus | link level noise |  nwid  crypt   frag  retry   misc | beacon | 22
     wlan0: 0000   54.  -56.  -256        0      0      0      0      0        0

The columns are: status (hex), link quality, signal level, noise level, five
"discarded packets" counters and missed beacons.  Quality, level and noise
are integers, each followed by ``.`` when the driver updated it since the
last read.  Level and noise are dBm when negative; the kernel prints a value
the driver did not measure as 0 or -256, and a driver without dBm support
prints a relative, non-negative level.  So a level counts as a signal in dBm
only when -256 < level < 0, and the same for noise.

:func:`parse_wireless` is pure: a malformed line raises
:class:`WirelessFormatError` and nothing else.

:class:`WifiProbe` with ``interface=None`` watches the first listed interface
that reports a signal (else the first listed).  Outcomes:

- no ``/proc/net/wireless``, no interface in it, or the named interface not
  in it: :class:`ProbeUnavailable` whose message starts with ``"not
  present"`` — absent hardware is not an error;
- ``weak_signal``: the signal is below ``weak_dbm``;
- ``no_signal``: the interface is listed but reports no signal level (a
  cfg80211 interface that is not associated is listed with zeros);
- otherwise ok.

Extras: ``interface``, ``link_quality``, ``signal_dbm`` and ``noise_dbm``
(each only when reported in dBm).  ``rtt_ms`` is always None.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from pathlib import Path

from protocol.fields import Scalar

from .base import ProbeResult, ProbeUnavailable

_FIELDS = 10  # status, quality, level, noise, 5 discarded counters, missed beacons
_NOT_MEASURED = -256


class WirelessFormatError(ValueError):
    """A line of /proc/net/wireless is malformed."""


@dataclass(frozen=True, slots=True)
class WirelessStats:
    """One interface's line of /proc/net/wireless."""

    interface: str
    status: int
    link_quality: int
    level: int
    noise: int
    #: which of quality, level, noise carried the "updated" dot
    quality_updated: bool
    level_updated: bool
    noise_updated: bool
    discarded_nwid: int
    discarded_crypt: int
    discarded_frag: int
    discarded_retry: int
    discarded_misc: int
    missed_beacon: int

    @property
    def signal_dbm(self) -> int | None:
        """The signal level in dBm, or None when not measured or not in dBm."""
        return self.level if _NOT_MEASURED < self.level < 0 else None

    @property
    def noise_dbm(self) -> int | None:
        """The noise level in dBm, or None when not measured or not in dBm."""
        return self.noise if _NOT_MEASURED < self.noise < 0 else None


def _number(word: str, what: str) -> tuple[int, bool]:
    updated = word.endswith(".")
    digits = word[:-1] if updated else word
    body = digits[1:] if digits.startswith("-") else digits
    if not body or not body.isascii() or not body.isdigit():
        raise WirelessFormatError(f"{what} {word!r} is not an integer")
    return int(digits), updated


def _parse_line(line: str, number: int) -> WirelessStats:
    name, colon, rest = line.rpartition(":")
    interface = name.strip()
    if not colon or not interface or any(c.isspace() for c in interface):
        raise WirelessFormatError(f"line {number} does not start with an interface name")
    words = rest.split()
    if len(words) < _FIELDS:
        raise WirelessFormatError(f"line {number} has {len(words)} fields, not {_FIELDS}")
    status_word = words[0]
    if not status_word.isascii() or not all(c in "0123456789abcdefABCDEF" for c in status_word):
        raise WirelessFormatError(f"line {number}: status {status_word!r} is not hexadecimal")
    quality, quality_updated = _number(words[1], "link quality")
    level, level_updated = _number(words[2], "level")
    noise, noise_updated = _number(words[3], "noise")
    counters = [_number(word, "counter")[0] for word in words[4:_FIELDS]]
    return WirelessStats(
        interface=interface,
        status=int(status_word, 16),
        link_quality=quality,
        level=level,
        noise=noise,
        quality_updated=quality_updated,
        level_updated=level_updated,
        noise_updated=noise_updated,
        discarded_nwid=counters[0],
        discarded_crypt=counters[1],
        discarded_frag=counters[2],
        discarded_retry=counters[3],
        discarded_misc=counters[4],
        missed_beacon=counters[5],
    )


def parse_wireless(text: str) -> dict[str, WirelessStats]:
    """Every interface of a /proc/net/wireless text, in file order, by name."""
    stats: dict[str, WirelessStats] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or "|" in line:
            continue  # blank, or one of the two header lines
        entry = _parse_line(line, number)
        stats[entry.interface] = entry
    return stats


def pick_interface(stats: dict[str, WirelessStats]) -> WirelessStats | None:
    """The first interface that reports a signal, else the first one, else None."""
    with_signal = [entry for entry in stats.values() if entry.signal_dbm is not None]
    if with_signal:
        return with_signal[0]
    return next(iter(stats.values()), None)


class WifiProbe:
    """Signal of one wireless interface (or of the first one listed)."""

    def __init__(
        self,
        interface: str | None = None,
        *,
        path: str = "/proc/net/wireless",
        weak_dbm: float = -75.0,
    ) -> None:
        if interface is not None and (not interface or any(c.isspace() for c in interface)):
            raise ValueError(f"{interface!r} is not a valid interface name")
        if not math.isfinite(weak_dbm):
            raise ValueError(f"weak_dbm must be a finite number, got {weak_dbm}")
        self.interface = interface
        self.path = path
        self.weak_dbm = weak_dbm

    def _read(self) -> dict[str, WirelessStats]:
        try:
            text = Path(self.path).read_text(encoding="ascii", errors="replace")
        except FileNotFoundError as exc:
            raise ProbeUnavailable(
                f"not present: {self.path} does not exist (no wireless interface)"
            ) from exc
        except OSError as exc:
            raise ProbeUnavailable(f"cannot read {self.path}: {exc}") from exc
        try:
            return parse_wireless(text)
        except WirelessFormatError as exc:
            raise ProbeUnavailable(f"cannot parse {self.path}: {exc}") from exc

    async def probe_once(self) -> ProbeResult:
        """One reading of the signal; raises ProbeUnavailable when there is no Wi-Fi."""
        stats = await asyncio.to_thread(self._read)
        if self.interface is None:
            entry = pick_interface(stats)
            if entry is None:
                raise ProbeUnavailable(f"not present: no wireless interface in {self.path}")
        else:
            found = stats.get(self.interface)
            if found is None:
                raise ProbeUnavailable(f"not present: {self.interface} is not in {self.path}")
            entry = found
        extras: dict[str, Scalar] = {
            "interface": entry.interface,
            "link_quality": entry.link_quality,
        }
        signal = entry.signal_dbm
        if entry.noise_dbm is not None:
            extras["noise_dbm"] = entry.noise_dbm
        if signal is None:
            return ProbeResult(ok=False, error="no_signal", extras=extras)
        extras["signal_dbm"] = signal
        if signal < self.weak_dbm:
            return ProbeResult(ok=False, error="weak_signal", extras=extras)
        return ProbeResult(ok=True, extras=extras)
