"""UPS flags and the state they mean, shared by ``megatec_ups`` and ``nut_ups``.

Both drivers report the same flags, so the collector and the technician see
one vocabulary whichever way the UPS is read:

| flag | meaning | state |
|---|---|---|
| ``on_battery`` | mains failed; the UPS runs on its battery | warning |
| ``battery_low`` | the battery is nearly empty; shutdown is near | fault |
| ``bypass_boost`` | bypass, boost or trim (buck) is active | warning |
| ``ups_failed`` | the UPS reports an internal failure (or an alarm) | fault |
| ``test_in_progress`` | a battery test or calibration is running | warning |
| ``shutdown_active`` | the UPS is shutting down (or forced shutdown) | fault |
| ``overload`` | the load is above the UPS's rating (NUT only) | fault |
| ``replace_battery`` | the UPS asks for a new battery (NUT only) | warning |
"""

from __future__ import annotations

from typing import Final

from .base import DeviceState

FAULT_FLAGS: Final = frozenset({"battery_low", "ups_failed", "shutdown_active", "overload"})
WARNING_FLAGS: Final = frozenset(
    {"on_battery", "bypass_boost", "test_in_progress", "replace_battery"}
)
FLAGS: Final = FAULT_FLAGS | WARNING_FLAGS

#: Plain words for each flag, for reasons and ``diagnose``.
WORDS: Final[dict[str, str]] = {
    "on_battery": "on battery — mains power failed",
    "battery_low": "battery low — the UPS will shut down soon",
    "bypass_boost": "bypass/boost/trim active — mains voltage out of range",
    "ups_failed": "the UPS reports a failure",
    "test_in_progress": "battery test in progress",
    "shutdown_active": "the UPS is shutting down",
    "overload": "overloaded — too much equipment on the UPS",
    "replace_battery": "replace the battery",
}


def ups_state(flags: tuple[str, ...]) -> DeviceState:
    if any(f in FAULT_FLAGS for f in flags):
        return "fault"
    if any(f in WARNING_FLAGS for f in flags):
        return "warning"
    return "ok"


def ups_reason(flags: tuple[str, ...]) -> str | None:
    """The worst flags in words, or None when all is well."""
    ordered = [f for f in flags if f in FAULT_FLAGS] + [f for f in flags if f in WARNING_FLAGS]
    return "; ".join(WORDS[f] for f in ordered) or None
