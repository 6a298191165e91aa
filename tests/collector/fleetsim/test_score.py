"""score(): the truth against the API's transaction items, per cause, with the confusion."""

from __future__ import annotations

from typing import Any

from collector.fleetsim.score import format_score, score
from collector.fleetsim.truth import TruthRow
from protocol.causes import Cause


def _row(n: int, cause: Cause, terminal: str = "S001-T1") -> TruthRow:
    return TruthRow(
        terminal_id=terminal, store_id=terminal.split("-")[0], txn_id=f"r1-{terminal}-{n:05d}",
        ts="2026-03-01T09:00:00.000000Z", started_at="2026-03-01T08:59:00.000000Z",
        acquirer="acquirer-a", outcome="timeout", response_code=None, in_doubt=True,
        expected_cause=cause, fault=None if cause is Cause.UNKNOWN else "f",
    )  # fmt: skip


def _item(row: TruthRow, cause: str | None) -> dict[str, Any]:
    return {"terminal_id": row.terminal_id, "txn_id": row.txn_id, "cause": cause}


def test_score_counts_right_answers_and_the_confusion() -> None:
    isp = [_row(n, Cause.ISP) for n in range(4)]
    unknown = [_row(10 + n, Cause.UNKNOWN, "S002-T1") for n in range(2)]
    items = [
        _item(isp[0], "isp"),
        _item(isp[1], "isp"),
        _item(isp[2], "acquirer_outage"),  # wrong
        # isp[3] not listed by the API at all: missing
        _item(unknown[0], "unknown"),
        _item(unknown[1], None),  # listed, not attributed yet
        {"terminal_id": "S009-T1", "txn_id": "r1-S009-T1-00001", "cause": "isp"},  # not in truth
        {"terminal_id": "S009-T1", "txn_id": "other-run-00001", "cause": "isp"},  # another run
    ]
    result = score(isp + unknown, items, run_id="r1")
    assert (result.of("isp").expected, result.of("isp").right) == (4, 2)
    assert result.of("isp").accuracy == 0.5
    assert result.of("isp").confusion == {"acquirer_outage": 1, "missing": 1}
    assert result.of("unknown").confusion == {"unattributed": 1}
    assert (result.expected, result.right, result.unexpected) == (6, 3, 1)
    table = format_score(result)
    assert "isp" in table and "50.0%" in table and "acquirer_outage 1, missing 1" in table
    assert table.splitlines()[-1].startswith("all")
    assert result.to_json()["causes"]["isp"]["right"] == 2


def test_a_perfect_score() -> None:
    rows = [_row(n, Cause.DEVICE) for n in range(3)]
    result = score(rows, [_item(r, "device") for r in rows])
    assert result.accuracy == 1.0 and result.of("device").confusion == {}
