"""Device simulators on pty pairs: ``posmon-agent simulate printer|ups|modem|pinpad``.

Each answers exactly per its protocol and takes fault commands at run time
(see :mod:`agent.sim.pty`). Tests, ``make demo`` and technician training use
them.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Final

from .pty import PtySimulator

#: simulate's argument → "module:class" (imported only when asked for).
SIMULATORS: Final[dict[str, str]] = {
    "printer": "agent.sim.printer:PrinterSimulator",
    "ups": "agent.sim.ups:UpsSimulator",
    "modem": "agent.sim.modem:ModemSimulator",
    "pinpad": "agent.sim.pinpad:PinpadSimulator",
}


def create(kind: str, link: Path) -> PtySimulator:
    module, _, name = SIMULATORS[kind].partition(":")
    cls = getattr(importlib.import_module(module), name)
    sim = cls(link)
    assert isinstance(sim, PtySimulator)
    return sim
