"""``posmon``: the people's CLI — fleet, terminals, payments and incidents from the collector.

    posmon [--url URL] [--token TOKEN] [--json] COMMAND ...

Commands: fleet, terminals, terminal ID, txns, incidents, incident ID,
timeline ID (see :mod:`collector.people.commands`). ``POSMON_URL`` and
``POSMON_TOKEN`` stand in for ``--url`` and ``--token``.

Exit status: 0 done; 1 the collector could not be reached, refused the token,
had no such thing or failed; 2 bad usage (no URL or token, a bad option, or
a parameter the API refused).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Mapping, Sequence

from collector.people.client import CliError
from collector.people.commands import PROG, run


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    if isinstance(sys.stdout, io.TextIOWrapper):  # a C locale must not fail on "…" or "—"
        sys.stdout.reconfigure(errors="replace")
    try:
        return run(list(argv) if argv is not None else None, environ)
    except CliError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.code
    except BrokenPipeError:  # posmon txns | head
        with contextlib.suppress(OSError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
