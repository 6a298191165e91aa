"""GET /metrics on a real collector, parsed with Prometheus' own text parser."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import protocol
from collector.metrics import Family, render
from protocol import AgentInfo, Cause, Report, Txn
from tests.collector.viewdata import TERMINALS, Fleet, seed_fleet
from tests.collector.wire import make_report, post_report, request
from tests.helpers import CollectorProc, create_token, start_collector

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, sorted labels), and each family's type."""
    reply = request(url, "/metrics")
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(reply.body.decode()):
        types[family.name] = family.type
        assert family.documentation, f"{family.name} has no HELP"
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = sample.value
    return samples, types


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    collector = start_collector(tmp_path_factory.mktemp("metrics") / "collector.db")
    try:
        yield seed_fleet(collector)
    finally:
        collector.stop()


def test_terminals_by_state_follow_the_rule(fleet: Fleet) -> None:
    samples, types = scrape(fleet.url)
    assert types["posmon_terminals"] == "gauge"
    by_state = {
        state: samples[("posmon_terminals", (("state", state),))]
        for state in ("ok", "warning", "fault", "offline")
    }
    # T-OK ok (a failing collector probe does not count); T-FAULT gateway failing;
    # T-WARN printer warning and T-HOST CPU at 99 %: warning; T-OFF not heard for 1 h
    assert by_state == {"ok": 1, "warning": 2, "fault": 1, "offline": 1}
    assert sum(by_state.values()) == len(TERMINALS)


def test_failed_payments_in_24h_by_cause_and_in_doubt(fleet: Fleet) -> None:
    samples, types = scrape(fleet.url)
    assert types["posmon_failed_payments"] == "gauge"
    failed = {
        dict(labels)["cause"]: value
        for (name, labels), value in samples.items()
        if name == "posmon_failed_payments"
    }
    assert all(
        dict(labels)["window"] == "24h" for (n, labels) in samples if n == "posmon_failed_payments"
    )
    # every cause is exported, zeros included; tx-old (2 days ago) and tx-ok are not counted
    assert set(failed) == {c.value for c in Cause} | {"pending"}
    assert {c: v for c, v in failed.items() if v} == {
        "isp": 1,
        "gateway": 1,
        "host": 1,
        "pending": 1,
    }
    # tx-isp is in doubt; tx-rev was in doubt but is resolved
    assert samples[("posmon_in_doubt_payments", ())] == 1


def test_open_incidents_and_alerts(fleet: Fleet) -> None:
    samples, types = scrape(fleet.url)
    assert types["posmon_open_incidents"] == "gauge"
    open_ = {
        (dict(labels)["kind"], dict(labels)["cause"]): value
        for (name, labels), value in samples.items()
        if name == "posmon_open_incidents"
    }
    assert {k: v for k, v in open_.items() if v} == {
        ("payments", "isp"): 1,
        ("health", "device"): 1,
    }
    assert open_[("payments", "acquirer_outage")] == 0  # incident 3 is closed
    assert types["posmon_alerts_pending"] == "gauge"
    assert types["posmon_alerts_failed"] == "counter"
    assert samples[("posmon_alerts_pending", (("channel", "webhook"),))] == 1
    assert samples[("posmon_alerts_pending", (("channel", "email"),))] == 0
    assert samples[("posmon_alerts_failed_total", (("channel", "email"),))] == 1
    assert samples[("posmon_alerts_failed_total", (("channel", "webhook"),))] == 0


def test_no_terminal_or_store_id_in_any_label(fleet: Fleet) -> None:
    text = request(fleet.url, "/metrics").body.decode()
    for name in [*TERMINALS, *set(TERMINALS.values()), "ACQ-A", "ACQ-B"]:
        assert name not in text


def test_ingest_counters_count_reports_events_duplicates_and_refusals(tmp_path: Path) -> None:
    collector: CollectorProc = start_collector(tmp_path / "collector.db")
    try:
        samples, types = scrape(collector.url)
        assert types["posmon_ingest_reports"] == "counter"
        assert samples[("posmon_ingest_reports_total", ())] == 0
        assert samples[("posmon_terminals", (("state", "ok"),))] == 0

        token = create_token(collector.db_path, terminal="T-1", store="S-1")
        body = protocol.encode_report(make_report([1, 2, 3]))
        assert post_report(collector.url, body, token).status == 200
        assert post_report(collector.url, body, token).status == 200  # all three again
        assert post_report(collector.url, body, "not-a-token").status == 401
        assert post_report(collector.url, b"{not json", token).status == 400
        assert post_report(collector.url, b"{not json", token).status == 400

        samples, _ = scrape(collector.url)
        assert samples[("posmon_ingest_reports_total", ())] == 2
        assert samples[("posmon_ingest_events_total", ())] == 3
        assert samples[("posmon_ingest_duplicates_total", ())] == 3
        assert samples[("posmon_ingest_rejected_total", (("status", "401"),))] == 1
        assert samples[("posmon_ingest_rejected_total", (("status", "400"),))] == 2
        assert samples[("posmon_terminals", (("state", "ok"),))] == 1
    finally:
        collector.stop()


def test_metrics_needs_no_token_and_refuses_post(fleet: Fleet) -> None:
    assert request(fleet.url, "/metrics").status == 200
    assert request(fleet.url, "/metrics", body=b"x", method="POST").status == 405


def test_correlator_figures_follow_a_payment_through_the_real_correlator(tmp_path: Path) -> None:
    collector = start_collector(tmp_path / "collector.db")
    try:
        token = create_token(collector.db_path, terminal="T-1", store="S-1")
        now = datetime.now(UTC)
        report = Report(
            agent=AgentInfo(id="agent-1", terminal_id="T-1", store_id="S-1", version="0.1.0"),
            sent_at=now,
            events=(
                Txn(seq=1, ts=now - timedelta(minutes=1), txn_id="tx-1", acquirer="ACQ",
                    outcome="timeout", in_doubt=True),
            ),
        )  # fmt: skip
        assert post_report(collector.url, protocol.encode_report(report), token).status == 200
        deadline = time.monotonic() + 60
        while True:  # the correlator works in the background; wait until it has read it
            # (one scrape reads the database and the correlator's counters at slightly
            # different moments, so wait for both to show the payment)
            samples, types = scrape(collector.url)
            failed = {
                dict(labels)["cause"]: value
                for (name, labels), value in samples.items()
                if name == "posmon_failed_payments" and value
            }
            attributed = samples.get(("posmon_correlator_attributed_total", ()), 0)
            if attributed >= 1 and failed and "pending" not in failed:
                break
            assert time.monotonic() < deadline, samples
            time.sleep(0.1)
        assert types["posmon_correlator_pending_events"] == "gauge"
        assert types["posmon_correlator_pending_payments"] == "gauge"
        assert samples[("posmon_correlator_max_pass_milliseconds", ())] > 0
        assert types["posmon_correlator_attributed"] == "counter"
        assert samples[("posmon_correlator_pending_events", ())] == 0
        assert len(failed) == 1 and "pending" not in failed  # one cause, whichever it is
        assert sum(failed.values()) == 1
        assert samples[("posmon_in_doubt_payments", ())] == 1
    finally:
        collector.stop()


def test_label_values_and_help_are_escaped() -> None:
    family = Family("posmon_test", "gauge", 'a "help" with \\ and\nnewline')
    family.add(1.5, who='quote " backslash \\ newline \n end')
    family.add(float("nan"), who="nan")
    (parsed,) = text_string_to_metric_families(render([family]))
    assert parsed.documentation == 'a "help" with \\ and\nnewline'
    first, second = parsed.samples
    assert first.labels == {"who": 'quote " backslash \\ newline \n end'} and first.value == 1.5
    assert math.isnan(second.value)
