"""``posmon``: the people's CLI — PLACEHOLDER until the collector's query API exists.

The real commands (``fleet``, ``terminal``, ``txns``, ``incidents``, reading
``POSMON_URL`` and ``POSMON_TOKEN``, ``--json`` everywhere) need the
collector's read API, which is not built yet. Until then this only explains
that, and exits 2 for any command. It never prints made-up data.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

PLANNED = ("fleet", "terminal", "txns", "incidents")
NOT_YET = (
    "PLACEHOLDER: the fleet, terminal, txns and incidents commands arrive with the "
    "collector's query API; none of them is available in this version."
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posmon",
        description=(
            NOT_YET + " When they arrive, this will be posmon's CLI for central IT and "
            "technicians: fleet health, one terminal's state and history, failed payments "
            "by cause, incidents."
        ),
        epilog=(
            "Planned: posmon fleet | terminal ID | txns | incidents, reading POSMON_URL and "
            "POSMON_TOKEN, with --json everywhere. Meanwhile, posmon-collector serves "
            "reports and posmon-agent diagnose checks a terminal on site."
        ),
    )
    parser.add_argument(
        "command",
        nargs="?",
        metavar="COMMAND",
        help=f"one of {', '.join(PLANNED)} (not available yet)",
    )
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
    else:
        print(f"posmon: {args.command!r} is not available yet. {NOT_YET}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
