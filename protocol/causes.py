"""The causes the collector names for a failed payment (DESIGN.md, "Causes")."""

from __future__ import annotations

from enum import StrEnum


class Cause(StrEnum):
    POWER = "power"
    LINK = "link"
    GATEWAY = "gateway"
    ISP = "isp"
    DNS = "dns"
    ACQUIRER_PATH = "acquirer_path"
    ACQUIRER_OUTAGE = "acquirer_outage"
    CLOCK = "clock"
    DEVICE = "device"
    HOST = "host"
    UNKNOWN = "unknown"


#: ISO 8583 field 39 codes that mean the infrastructure failed, not the cardholder.
TECHNICAL_RESPONSE_CODES: frozenset[str] = frozenset({"68", "91", "96", "98"})
