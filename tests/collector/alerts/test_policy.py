"""The pure parts: the backoff and the e-mail's words."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.alerts.delivery import DeliveryError, backoff_s
from collector.alerts.mail import body, compose, subject, where
from collector.alerts.outbox import Alert
from collector.alerts.webhook import describe_url
from collector.settings import AlertSettings

from .conftest import incident


@given(
    failures=st.integers(min_value=1, max_value=10_000),
    initial=st.floats(min_value=0.01, max_value=3600),
    extra=st.floats(min_value=0, max_value=86_400),
    rand=st.floats(min_value=0, max_value=0.999999),
)
def test_backoff_stays_between_initial_and_max(
    failures: int, initial: float, extra: float, rand: float
) -> None:
    maximum = initial + extra
    delay = backoff_s(failures, initial, maximum, lambda: rand)
    assert min(initial, maximum) <= delay <= maximum


def test_backoff_doubles_with_jitter_up_to_the_max() -> None:
    low = [backoff_s(n, 1.0, 100.0, lambda: 0.0) for n in range(1, 9)]
    high = [backoff_s(n, 1.0, 100.0, lambda: 0.999) for n in range(1, 9)]
    assert low == [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 100.0]
    assert high[:3] == pytest.approx([1.999, 3.998, 7.996])
    assert high[-2:] == [100.0, 100.0]


def _payload(event: str = "incident_opened", **changes: object) -> dict[str, object]:
    return {"event": event, "incident": incident(**changes)}


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({}, "store S12"),
        ({"scope": "acquirer", "acquirer": "acq-1"}, "acquirer acq-1"),
        ({"scope": "terminal", "terminal_id": "T-3"}, "terminal T-3 (store S12)"),
        (
            {"scope": "device", "device": "pinpad", "terminal_id": "T-3"},
            "pinpad on terminal T-3 (store S12)",
        ),
        ({"scope": "store", "store_id": None, "terminal_id": None}, "the fleet"),
    ],
)
def test_where(changes: dict[str, object], expected: str) -> None:
    assert where(incident(**changes)) == expected


def test_subject_of_a_health_incident_has_no_payment_counts() -> None:
    payload = _payload(
        kind="health", cause="device", scope="device", device="pinpad", terminal_id="T-3",
        failed_count=0, in_doubt_count=0,
    )  # fmt: skip
    assert subject(payload) == "[posmon] OPEN: device — pinpad on terminal T-3 (store S12)"
    assert "Payments:" not in body(payload) and "IN DOUBT" not in body(payload)


def test_subject_counts_read_right() -> None:
    assert subject(_payload(failed_count=1, in_doubt_count=0)).endswith("— 1 failed payment")
    closed = _payload("incident_closed", failed_count=2, in_doubt_count=2)
    assert subject(closed) == "[posmon] CLOSED: isp — store S12 — 2 failed payments, 2 in doubt"
    assert "IN DOUBT: 2 payments may have charged the customer" in body(closed)


def test_a_line_break_in_a_name_cannot_inject_a_header() -> None:
    payload = _payload(store_id="S12\r\nBcc: thief@example.com")
    alert = Alert(1, 7, "opened", "email", json.dumps(payload), datetime.now(UTC), 0)
    settings = AlertSettings(smtp_host="127.0.0.1", smtp_to=("it@shop.example",))
    message = compose(alert, settings)
    assert message["Bcc"] is None
    assert message["Subject"] == (
        "[posmon] OPEN: isp — store S12 Bcc: thief@example.com — 3 failed payments, 1 in doubt"
    )


def test_a_long_subject_is_cut() -> None:
    text = subject(_payload(store_id="S" * 500))
    assert len(text) == 200 and text.endswith("…")


def test_a_stored_row_that_is_no_incident_is_given_up() -> None:
    alert = Alert(1, 7, "opened", "email", '{"event": "x"}', datetime.now(UTC), 0)
    settings = AlertSettings(smtp_host="127.0.0.1", smtp_to=("it@shop.example",))
    with pytest.raises(DeliveryError) as caught:
        compose(alert, settings)
    assert caught.value.retry is False


def test_webhook_url_secrets_stay_out_of_logs() -> None:
    url = "https://user:pw@hooks.example.com:8443/T000/B000/XXXX?token=abc"
    assert describe_url(url) == "https://hooks.example.com:8443"
