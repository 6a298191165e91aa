"""Host samples: the POS host's CPU, memory, disk, load and uptime.

The pure part (:func:`sample_from`) takes psutil's own functions as
arguments so it can be tested with real psutil values; the caller runs it in
a thread because psutil calls block.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

from protocol import HostSample


def sample_from(psutil: ModuleType, disk_path: Path, now: datetime | None = None) -> HostSample:
    """One host sample. ``cpu_percent`` is the busy share since the previous call."""
    now = now or datetime.now(UTC)
    cpu = psutil.cpu_percent(interval=None)
    mem = psutil.virtual_memory()
    try:
        disk = psutil.disk_usage(str(disk_path))
        disk_pct, disk_free = float(disk.percent), int(disk.free)
    except OSError:
        disk_pct, disk_free = 0.0, 0
    load1, load5, load15 = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    boot = float(psutil.boot_time())
    return HostSample(
        seq=0,
        ts=now,
        cpu_pct=float(cpu),
        mem_pct=float(mem.percent),
        mem_available_bytes=int(mem.available),
        disk_pct=disk_pct,
        disk_free_bytes=disk_free,
        load1=float(load1),
        load5=float(load5),
        load15=float(load15),
        uptime_s=max(0.0, now.timestamp() - boot),
        boot_time=datetime.fromtimestamp(boot, UTC),
    )
