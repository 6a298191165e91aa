"""Attribution for the correlator's loop: read the evidence, apply the rules.

Both functions take the storage writer's connection and only read.
"""

from __future__ import annotations

import sqlite3

from collector.settings import AttributionSettings

from .evidence import fleet_peers, observations
from .model import TxnRow, Verdict
from .rules import decide_fleet, decide_local


def local_verdict(conn: sqlite3.Connection, txn: TxnRow, settings: AttributionSettings) -> Verdict:
    """The cause of ``txn`` from its own terminal's and store's evidence (``txns.local_cause``)."""
    return decide_local(txn, observations(conn, txn, settings), settings)


def final_verdict(
    conn: sqlite3.Connection, txn: TxnRow, local: Verdict, settings: AttributionSettings
) -> Verdict:
    """``local``, turned into acquirer_outage when the fleet rule says so (``txns.cause``)."""
    return decide_fleet(txn, local, fleet_peers(conn, txn, settings), settings)
