"""Errors of the wire protocol.

    ProtocolError(ValueError)   anything a peer sent that we cannot accept;
                                carries the HTTP status to answer with and,
                                where one is to blame, the path of the field
                                (``events[3].seq``).

Every decoder in this package raises ProtocolError and nothing else, whatever
bytes arrive.
"""

from __future__ import annotations

from typing import Any


class ProtocolError(ValueError):
    """A peer sent something this side of the protocol refuses."""

    def __init__(self, message: str, *, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.status = status

    def to_json(self) -> dict[str, Any]:
        """The JSON error body a server answers with."""
        body: dict[str, Any] = {"error": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body

    def __repr__(self) -> str:
        return f"ProtocolError({self.message!r}, field={self.field!r}, status={self.status})"
