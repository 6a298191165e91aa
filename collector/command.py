"""What a ``posmon-collector`` command module raises to fail with a message and an exit code."""

from __future__ import annotations

EXIT_FAILED = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """Printed on stderr as ``posmon-collector: error: <message>``; exit with ``code``."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.code = code
