"""Incidents: payment incidents (a cause in a scope) and health incidents, on event time.

This first part is the incident's JSON (the API's and the alerts' shape); the
code that opens and closes incidents follows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

#: The ``incidents`` columns :func:`incident_json` reads, in this order:
#: ``SELECT {INCIDENT_COLUMNS} FROM incidents ...``.
INCIDENT_COLUMNS: Final = (
    "id, kind, cause, scope, store_id, acquirer, terminal_id, device, title, action,"
    " started_at, ended_at, last_seen_at, opened_at, closed_at, terminals, failed_count,"
    " in_doubt_count"
)


def incident_json(row: Sequence[Any]) -> dict[str, Any]:
    """An incident as the API and the alerts show it, from a row of :data:`INCIDENT_COLUMNS`."""
    (
        incident_id,
        kind,
        cause,
        scope,
        store_id,
        acquirer,
        terminal_id,
        device,
        title,
        action,
        started_at,
        ended_at,
        last_seen_at,
        opened_at,
        closed_at,
        terminals,
        failed_count,
        in_doubt_count,
    ) = row
    return {
        "id": int(incident_id),
        "kind": kind,
        "cause": cause,
        "scope": scope,
        "store_id": store_id,
        "acquirer": acquirer,
        "terminal_id": terminal_id,
        "device": device,
        "title": title,
        "action": action,
        "state": "open" if ended_at is None else "closed",
        "started_at": started_at,
        "ended_at": ended_at,
        "last_seen_at": last_seen_at,
        "opened_at": opened_at,
        "closed_at": closed_at,
        "terminals": list(json.loads(terminals)) if terminals else [],
        "failed_count": int(failed_count),
        "in_doubt_count": int(in_doubt_count),
    }
