"""The ``[[logfile]]`` list of the agent's config (filled in by the log-tailing work)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..configkit import Section


@dataclass(frozen=True, slots=True)
class LogFileSpec:
    path: Path


def parse_logfiles(root: Section, base: Path) -> tuple[LogFileSpec, ...]:
    items = root.get("logfile")
    if items is None:
        return ()
    raise root.error("logfile", "log tailing is not implemented yet")
