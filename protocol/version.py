"""Protocol versions: ``"MAJOR.MINOR"`` strings.

A peer accepts any minor version of a major it speaks (unknown optional
fields are ignored; unknown event kinds from a newer minor are kept raw) and
refuses any other major with a message naming the versions it speaks.
"""

from __future__ import annotations

import re

from .errors import ProtocolError

MAJOR = 1
MINOR = 0
VERSION = f"{MAJOR}.{MINOR}"
SPOKEN_MAJORS: tuple[int, ...] = (1,)

_VERSION_RE = re.compile(r"([0-9]{1,4})\.([0-9]{1,4})")


def spoken() -> str:
    """Human-readable list of the versions this side speaks, e.g. ``1.x``."""
    return ", ".join(f"{m}.x" for m in SPOKEN_MAJORS)


def parse_version(value: object, *, field: str = "v") -> tuple[int, int]:
    """Parse and check a version; refuse a major version we do not speak."""
    if not isinstance(value, str):
        raise ProtocolError(f"protocol version must be a string like {VERSION!r}", field=field)
    match = _VERSION_RE.fullmatch(value)
    if match is None:
        raise ProtocolError(
            f"protocol version {value[:20]!r} is not of the form MAJOR.MINOR", field=field
        )
    major, minor = int(match.group(1)), int(match.group(2))
    if major not in SPOKEN_MAJORS:
        raise ProtocolError(
            f"protocol version {value} is not spoken here; this side speaks {spoken()}",
            field=field,
        )
    return major, minor
