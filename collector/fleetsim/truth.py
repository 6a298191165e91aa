"""Ground truth: for every failed payment, the cause the collector should name.

One JSON object per line (``--truth FILE``)::

    {"terminal_id": "S004-T2", "store_id": "S004", "txn_id": "…-S004-T2-00017",
     "ts": "2026-03-01T12:41:07.311Z", "started_at": "…", "acquirer": "acquirer-a",
     "outcome": "timeout", "response_code": null, "in_doubt": true,
     "expected_cause": "isp", "fault": "isp_down-0"}

``expected_cause`` is the fault's cause; a payment that failed with no fault
is ``unknown`` and its ``fault`` is null. An acquirer outage is
``acquirer_outage`` when its failed payments span at least
``fleet_min_stores`` stores (the collector's default, 3), and
``acquirer_path`` otherwise — with fewer stores failing, that is all the
fleet can tell. Outage faults of one acquirer that overlap in time count as
one outage.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from protocol.causes import Cause
from protocol.fields import format_datetime

from .plan import Fault
from .records import PaymentRecord


@dataclass(frozen=True, slots=True)
class TruthRow:
    terminal_id: str
    store_id: str
    txn_id: str
    ts: str
    started_at: str
    acquirer: str
    outcome: str
    response_code: str | None
    in_doubt: bool
    expected_cause: Cause
    fault: str | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.terminal_id, self.txn_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "terminal_id": self.terminal_id,
            "store_id": self.store_id,
            "txn_id": self.txn_id,
            "ts": self.ts,
            "started_at": self.started_at,
            "acquirer": self.acquirer,
            "outcome": self.outcome,
            "response_code": self.response_code,
            "in_doubt": self.in_doubt,
            "expected_cause": str(self.expected_cause),
            "fault": self.fault,
        }


def _outage_groups(faults: Iterable[Fault]) -> dict[str, str]:
    """Fault name -> its outage: acquirer outages of one acquirer that overlap in time are one
    (a scenario may split an outage into faults, e.g. to hold one store's uploads)."""
    outages = sorted(
        {f.name: f for f in faults if f.kind == "acquirer_outage"}.values(),
        key=lambda f: (str(f.acquirer), f.start, f.name),
    )
    group: dict[str, str] = {}
    head: Fault | None = None
    end = None
    for fault in outages:
        if head is None or fault.acquirer != head.acquirer or end is None or fault.start >= end:
            head, end = fault, fault.end
        else:
            end = max(end, fault.end)
        group[fault.name] = head.name
    return group


def truth_rows(records: Iterable[PaymentRecord], *, fleet_min_stores: int) -> list[TruthRow]:
    """The truth of the failed payments among ``records``, oldest first."""
    failed = sorted((r for r in records if r.failed), key=lambda r: (r.ts, r.txn_id))
    group = _outage_groups(r.fault for r in failed if r.fault is not None)
    outage_stores: dict[str, set[str]] = {}
    for record in failed:
        if record.fault is not None and record.fault.kind == "acquirer_outage":
            outage_stores.setdefault(group[record.fault.name], set()).add(record.store_id)
    rows = []
    for record in failed:
        fault = record.fault
        if fault is None:
            cause = Cause.UNKNOWN
        elif fault.kind == "acquirer_outage":
            wide = len(outage_stores[group[fault.name]]) >= fleet_min_stores
            cause = Cause.ACQUIRER_OUTAGE if wide else Cause.ACQUIRER_PATH
        else:
            cause = fault.cause
        rows.append(
            TruthRow(
                terminal_id=record.terminal_id,
                store_id=record.store_id,
                txn_id=record.txn_id,
                ts=format_datetime(record.ts),
                started_at=format_datetime(record.started_at),
                acquirer=record.acquirer,
                outcome=record.outcome,
                response_code=record.response_code,
                in_doubt=record.in_doubt,
                expected_cause=cause,
                fault=None if fault is None else fault.name,
            )
        )
    return rows


def write_truth(path: Path, rows: Sequence[TruthRow]) -> None:
    """Write ``rows`` as JSON lines (replacing the file)."""
    with path.open("wb") as out:
        for row in rows:
            out.write(orjson.dumps(row.to_json()) + b"\n")


def read_truth(path: Path) -> Iterator[TruthRow]:
    """Read a truth file back (for scoring a run later)."""
    with path.open("rb") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                data = orjson.loads(line)
                data["expected_cause"] = Cause(data["expected_cause"])
                yield TruthRow(**data)
            except (ValueError, TypeError, KeyError) as err:
                raise ValueError(f"{path}:{number}: not a truth line: {err}") from None
