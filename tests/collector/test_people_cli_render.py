"""The pure parts of ``posmon``: tables, times, amounts, WHEN arguments, in-doubt flags."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from collector.correlate.model import IN_DOUBT_ACTION
from collector.people import views
from collector.people.client import CliError, check_url, path_of
from collector.people.tables import Column, age, amount, clip, table
from collector.people.when import parse_when

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_columns_are_as_wide_as_their_widest_cell_and_numbers_align_right() -> None:
    out = table([Column("NAME"), Column("N", right=True)], [["a", "1"], ["longer", "100"]])
    assert out.splitlines() == [
        "NAME      N",
        "a         1",
        "longer  100",
    ]


def test_long_cells_are_clipped_with_an_ellipsis_and_kept_on_one_line() -> None:
    assert clip("abcdefghij", 5) == "abcd…"
    assert clip("two\nlines  here", 40) == "two lines here"
    out = table([Column("TEXT", max_width=6), Column("X")], [["a very long text", "x"]])
    assert out.splitlines()[1] == "a ver…  x"


def test_a_table_fits_a_given_width_by_narrowing_its_widest_text_column() -> None:
    rows = [["T-1", "x" * 60, "12"]]
    out = table([Column("ID"), Column("WHY", 80), Column("N", right=True)], rows, width=40)
    assert all(len(line) <= 40 for line in out.splitlines())
    assert out.splitlines()[1].startswith("T-1  xxx") and "…" in out and out.endswith("12")


def test_an_empty_table_says_none() -> None:
    assert table([Column("A")], [], indent="  ") == "  (none)"


def test_when_takes_ages_and_iso_times() -> None:
    assert parse_when("30m", NOW) == "2026-03-01T11:30:00.000000Z"
    assert parse_when("2h", NOW) == "2026-03-01T10:00:00.000000Z"
    assert parse_when("1d", NOW) == "2026-02-28T12:00:00.000000Z"
    assert parse_when("1w", NOW) == "2026-02-22T12:00:00.000000Z"
    assert parse_when("2026-03-01T12:00+02:00") == "2026-03-01T10:00:00.000000Z"
    assert parse_when("2026-03-01 09:15") == "2026-03-01T09:15:00.000000Z"  # no offset: UTC
    assert parse_when("2026-03-01") == "2026-03-01T00:00:00.000000Z"
    for bad in ("yesterday", "5 minutes", "-3h", "2026-13-01", ""):
        with pytest.raises(ValueError, match="is not a time: use an ISO 8601 time"):
            parse_when(bad, NOW)


def test_ages_and_amounts() -> None:
    assert age("2026-03-01T11:59:15Z", NOW) == "45s ago"
    assert age("2026-03-01T09:59:00Z", NOW) == "2h ago"
    assert age("2026-02-27T12:00:00Z", NOW) == "2d ago"
    assert age(None, NOW) == "-"
    assert amount(1250, "EUR") == "12.50 EUR"
    assert amount(1250, "JPY") == "1250 JPY"
    assert amount(1250, "KWD") == "1.250 KWD"
    assert amount(None, "EUR") == "-"


def test_in_doubt_payments_are_flagged_until_resolved() -> None:
    open_ = {"outcome": "timeout", "in_doubt": True, "resolution": None, "failed": True}
    resolved = {**open_, "resolution": "reversed"}
    assert views.outcome(open_) == "timeout IN DOUBT"
    assert views.outcome(resolved) == "timeout (reversed)"
    assert views.in_doubt_note([resolved]) == ""
    assert views.in_doubt_note([open_, open_]).strip() == (
        f"2 payments IN DOUBT above. {IN_DOUBT_ACTION}"
    )
    assert views.cause(open_) == "pending" and views.cause({**open_, "cause": "isp"}) == "isp"


def test_views_tolerate_missing_fields() -> None:
    assert views.render_fleet({}).startswith("Fleet at -")
    assert "Terminal - in store -: -" in views.render_terminal({}, NOW)
    assert views.render_txns([{}]).splitlines()[1].split()[0] == "-"
    assert "Incident -: -" in views.render_incident({})


def test_urls_and_paths() -> None:
    assert check_url("https://collector.example:8780/") == "https://collector.example:8780"
    for bad in ("collector:8780", "ftp://x", "http://", "http://h?x=1"):
        with pytest.raises(CliError) as err:
            check_url(bad)
        assert err.value.code == 2
    assert path_of("terminals", "T 1/x", "timeline") == "/api/v1/terminals/T%201%2Fx/timeline"
