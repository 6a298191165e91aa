"""Rules: a (guarded) line → payment fields; first match wins; times made RFC 3339."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.logtail.rules import LineError, Rules
from tests.agent.logtail.fakes import load_spec

RULES = r"""
[[logfile.rule]]
pattern = '^(?P<started_at>\d\d\.\d\d\.\d{4} \d\d:\d\d:\d\d) TXN (?P<txn_id>\d+) START'
time_format = "%d.%m.%Y %H:%M:%S"
timezone = "Europe/Berlin"

[[logfile.rule]]
pattern = '^(?P<ended_at>\w{3} [ \d]\d \d\d:\d\d:\d\d) TXN (?P<txn_id>\d+) (?P<outcome>[A-Z]+)(?: RC=(?P<response_code>\d\d))?'
time_format = "%b %d %H:%M:%S"
outcome_map = { OK = "approved", NOK = "declined", TO = "timeout" }

[[logfile.rule]]
pattern = 'TXN (?P<txn_id>\d+) host unreachable'
set = { outcome = "error", message = "acquirer host unreachable", amount_minor = 0 }

[[logfile.rule]]
pattern = 'TXN (?P<txn_id>\d+)(?P<stan>)? at (?P<ended_at>\S+) (?P<outcome>\w+)'
"""  # noqa: E501 (a log rule is one long regex)


@pytest.fixture
def rules(tmp_path: Path) -> Rules:
    spec = load_spec(tmp_path, tmp_path / "pos.log", RULES)
    return Rules(spec.rules, now=lambda: datetime(2026, 11, 21, 12, 0, tzinfo=UTC))


def test_time_format_with_a_timezone(rules: Rules) -> None:
    fields = rules.apply("21.11.2026 10:15:00 TXN 42 START")
    assert fields == {"txn_id": "42", "started_at": "2026-11-21T10:15:00+01:00"}


def test_outcome_map_and_a_syslog_time_without_a_year(rules: Rules) -> None:
    assert rules.apply("Nov 21 10:15:02 TXN 42 NOK RC=05") == {
        "txn_id": "42",
        "ended_at": "2026-11-21T10:15:02+00:00",
        "outcome": "declined",
        "response_code": "05",
    }
    # Late December seen in January belongs to last year.
    january = Rules(rules._rules, now=lambda: datetime(2027, 1, 1, 0, 5, tzinfo=UTC))
    assert january.apply("Dec 31 23:59:59 TXN 7 OK")["ended_at"] == "2026-12-31T23:59:59+00:00"  # type: ignore[index]
    # An unmapped word is passed on as it is (the intake refuses it, naming the field).
    assert rules.apply("Nov 21 10:15:02 TXN 42 MAYBE")["outcome"] == "MAYBE"  # type: ignore[index]


def test_set_adds_constant_fields(rules: Rules) -> None:
    assert rules.apply("ERROR TXN 9 host unreachable") == {
        "txn_id": "9",
        "outcome": "error",
        "message": "acquirer host unreachable",
        "amount_minor": 0,
    }


def test_rfc3339_times_and_empty_groups(rules: Rules) -> None:
    assert rules.apply("TXN 5 at 2026-11-21T10:00:00.250+02:00 approved") == {
        "txn_id": "5",  # the empty optional group (stan) is left out
        "ended_at": "2026-11-21T10:00:00.250000+02:00",
        "outcome": "approved",
    }
    # Without an offset, the rule's timezone (default UTC) is taken.
    assert rules.apply("TXN 5 at 2026-11-21T10:00:00 approved")["ended_at"] == (  # type: ignore[index]
        "2026-11-21T10:00:00+00:00"
    )


def test_first_matching_rule_wins_and_counts(rules: Rules) -> None:
    # Both rule 3 and rule 4 could match; rule 3 comes first.
    fields = rules.apply("TXN 9 host unreachable at 2026-11-21T10:00:00Z error")
    assert fields is not None and fields["message"] == "acquirer host unreachable"
    assert rules.apply("nothing to see") is None
    assert rules.matched_by == [0, 0, 1, 0]


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        ("31.02.2026 10:15:00 TXN 1 START", "started_at",
         "expected a time in the format '%d.%m.%Y %H:%M:%S', got '31.02.2026 10:15:00'"),
        ("TXN 5 at yesterday approved", "ended_at", "expected an RFC 3339 time, got 'yesterday'"),
    ],
)  # fmt: skip
def test_unreadable_times_name_the_field(rules: Rules, line: str, field: str, reason: str) -> None:
    with pytest.raises(LineError) as info:
        rules.apply(line)
    assert (info.value.field, info.value.reason) == (field, reason)
