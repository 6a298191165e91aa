"""What every device driver provides, what one poll yields, and the errors.

A driver module under ``agent/devices/`` has a pure part (a framer and a
``parse`` that turn bytes into a :class:`Reading` or raise a
:class:`DeviceProtocolError`) and a thin async driver::

    class Driver(Protocol):
        async def poll(self) -> Reading      # one status query, bounded in time
        async def close(self) -> None        # release the port

The driver opens its port lazily on the first poll and again on the first
poll after it was lost, so a device that is unplugged and plugged back is
found within one poll. It raises only the errors below; the supervisor
turns each into a ``device_status``:

    Exception
     └── DeviceError
          ├── DeviceGone           the port is not there or vanished  → disconnected
          ├── DevicePortBusy       another process holds the port     → fault
          ├── DeviceSilent         no answer within the timeout       → fault
          └── DeviceProtocolError  an answer that does not parse      → fault

Each driver kind is registered with a :class:`DriverKind`: the name the
config's ``kind`` uses, the default baud rate, a reader for its own config
keys, and a factory.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from protocol.fields import Scalar

if TYPE_CHECKING:
    from ..configkit import Section

DeviceState = Literal["ok", "warning", "fault", "disconnected"]


class DeviceError(Exception):
    """A poll failed; the message says why in words a technician understands."""


class DeviceGone(DeviceError):
    """The device node does not exist, or the device vanished (unplugged)."""


class DevicePortBusy(DeviceError):
    """Another process has the port open exclusively."""


class DeviceSilent(DeviceError):
    """The device did not answer within the timeout."""


class DeviceProtocolError(DeviceError):
    """The device answered something that is not its protocol."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What one poll found."""

    state: DeviceState
    flags: tuple[str, ...] = ()
    attributes: Mapping[str, Scalar] = field(default_factory=dict)
    reason: str | None = None  # plain words for a non-ok state


@dataclass(frozen=True, slots=True)
class DeviceSpec:
    """One configured device (``[[device]]`` in the agent config)."""

    name: str
    kind: str
    port: str  # a device path (/dev/ttyUSB0, a by-id symlink) or host:port for nut_ups
    baudrate: int = 9600
    interval_s: float = 10.0
    timeout_s: float = 1.0
    heartbeat_s: float = 300.0
    options: Any = None  # the kind's own frozen options, from DriverKind.parse_options


class Driver(Protocol):
    async def poll(self) -> Reading: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class DriverKind:
    name: str
    create: Callable[[DeviceSpec], Driver]
    #: Reads the kind's own keys from the [[device]] table (configkit readers).
    parse_options: Callable[[Section, Path], Any] | None = None
    default_baudrate: int = 9600
    #: "path" for a serial device node, "hostport" for a network peer.
    port_kind: Literal["path", "hostport"] = "path"
