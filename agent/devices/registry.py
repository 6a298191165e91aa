"""Driver kinds by the config's ``kind``: a dict, not an if/elif chain.

Each driver module defines ``KIND = DriverKind(...)``; it is imported only
when a config names it, so a host without a printer never imports the
printer driver.
"""

from __future__ import annotations

import importlib
from typing import Final

from .base import DriverKind

MODULES: Final[dict[str, str]] = {
    "escpos_printer": "agent.devices.escpos_printer",
    "megatec_ups": "agent.devices.megatec_ups",
    "nut_ups": "agent.devices.nut_ups",
    "at_modem": "agent.devices.at_modem",
    "ecr_pinpad": "agent.devices.ecr_pinpad",
}

KINDS: Final[tuple[str, ...]] = tuple(MODULES)


def driver_kind(name: str) -> DriverKind:
    """The registered kind ``name``; KeyError if there is none."""
    kind = importlib.import_module(MODULES[name]).KIND
    assert isinstance(kind, DriverKind) and kind.name == name
    return kind
