"""What a report may carry: each bad value named, card data refused or masked."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.pan_guard import PanGuard
from agent.payments.book import Book
from agent.payments.fields import (
    FIELDS,
    MESSAGE_MAX,
    PaymentError,
    parse_resolution,
    parse_submission,
)

VISA = "4111111111111111"


def parse(**data: Any) -> Any:
    return parse_submission({"txn_id": "t1", **data}, PanGuard())


def refused(data: dict[str, Any], guard: PanGuard | None = None) -> PaymentError:
    with pytest.raises(PaymentError) as err:
        parse_submission(data, guard or PanGuard())
    return err.value


def test_a_full_report_is_normalised() -> None:
    sub = parse(
        kind="refund",
        acquirer="acq-a",
        amount_minor="1250",  # log files give strings
        currency="eur",
        stan="000123",
        rrn="123456789012",
        auth_code="A1B2C3",
        response_code="00",
        started_at="2026-11-21T10:00:00+01:00",
        ended_at="2026-11-21 09:00:01.123456789z",
        outcome="approved",
        message="ok",
    )
    assert sub.is_end
    assert sub.values == {
        "kind": "refund",
        "acquirer": "acq-a",
        "amount_minor": 1250,
        "currency": "EUR",
        "stan": "000123",
        "rrn": "123456789012",
        "auth_code": "A1B2C3",
        "response_code": "00",
        "started_at": "2026-11-21T09:00:00.000000Z",
        "ended_at": "2026-11-21T09:00:01.123456Z",
        "outcome": "approved",
        "message": "ok",
    }


def test_a_start_has_no_outcome_and_nulls_or_empty_strings_are_absent() -> None:
    sub = parse(acquirer="acq-a", rrn="", stan=None)
    assert not sub.is_end and sub.values == {"acquirer": "acq-a"}


BAD: list[tuple[str, object, str]] = [
    ("kind", "purchase", "must be one of sale, refund, void, reversal"),
    ("kind", 1, "expected a string"),
    ("outcome", "ok", "must be one of approved, declined, timeout, error"),
    ("outcome", True, "expected a string"),
    ("amount_minor", -1, "must not be negative"),
    ("amount_minor", "-5", "must not be negative"),
    ("amount_minor", 12.5, "expected an integer"),
    ("amount_minor", 12.0, "expected an integer"),
    ("amount_minor", True, "expected an integer"),
    ("amount_minor", "12a", "expected an integer"),
    ("amount_minor", 10**12, "larger than"),
    ("currency", "EURO", "ISO 4217"),
    ("currency", "E1R", "ISO 4217"),
    ("currency", 978, "ISO 4217"),
    ("started_at", "2026-11-22", "RFC 3339"),
    ("started_at", "2026-11-21T10:00:00", "RFC 3339"),  # no time zone
    ("started_at", "yesterday", "RFC 3339"),
    ("ended_at", "2026-02-30T10:00:00Z", "not a real date"),
    ("ended_at", 1_700_000_000, "RFC 3339"),
    ("acquirer", ["a"], "expected a string, got a list"),
    ("acquirer", "x" * 257, "longer than 256"),
    ("stan", 123, "expected a string, got an integer"),
    ("rrn", "1" * 13, "longer than 12"),
    ("response_code", 5, "expected a string"),
    ("message", {"a": 1}, "expected a string, got an object"),
    ("txn_id", 42, "expected a string"),
    ("txn_id", "x" * 129, "longer than 128"),
    ("acquirer", "\ud800", "not valid Unicode"),
]


@pytest.mark.parametrize(("field", "value", "reason"), BAD)
def test_a_bad_value_is_refused_naming_the_field(field: str, value: object, reason: str) -> None:
    data: dict[str, Any] = {"txn_id": "t1", field: value}
    if field == "ended_at":
        data["outcome"] = "approved"
    err = refused(data)
    assert (err.status, err.field) == (400, field)
    assert reason in err.reason
    assert str(value) not in err.reason or len(str(value)) < 4  # values are not echoed


def test_missing_txn_id_unknown_fields_and_inconsistent_times() -> None:
    err = refused({"acquirer": "a"})
    assert (err.field, err.status) == ("txn_id", 400)
    err = refused({"txn_id": "t1", "outcom": "approved"})
    assert err.field == "outcom" and "unknown field" in err.reason and "outcome" in err.reason
    err = refused({"txn_id": "t1", "ended_at": "2026-11-21T10:00:00Z"})
    assert err.field == "outcome"
    err = refused(
        {
            "txn_id": "t1",
            "outcome": "approved",
            "started_at": "2026-11-21T10:00:01Z",
            "ended_at": "2026-11-21T10:00:00Z",
        }
    )
    assert err.field == "ended_at"


@pytest.mark.parametrize("name", ["pan", "card_number", "cardNumber", "cvv", "track2", "pinBlock"])
def test_card_data_field_names_are_refused_first_with_422_and_counted(name: str) -> None:
    guard = PanGuard()
    # even with other mistakes in the same report, the card data is what is named
    err = refused({name: VISA, "amount_minor": -1, "txn_id": "t1"}, guard)
    assert (err.status, err.field) == (422, name)
    assert VISA not in str(err)
    assert guard.refused_total == 1


def test_pin_pad_is_not_a_pin() -> None:
    err = refused({"txn_id": "t1", "pin_pad_id": "x"})
    assert err.status == 400  # merely unknown


def test_card_numbers_in_text_fields_are_masked_and_counted() -> None:
    guard = PanGuard()
    sub = parse_submission(
        {
            "txn_id": f"order-{VISA}",
            "message": f"card {VISA[:4]} {VISA[4:8]} {VISA[8:12]} {VISA[12:]} declined",
            "acquirer": f"acq {VISA}",
        },
        guard,
    )
    assert sub.masked == 3 and guard.masked_total == 3
    assert sub.txn_id == "order-411111******1111"
    assert sub.values["message"] == "card 4111 11** **** 1111 declined"
    assert VISA not in repr(sub)


def test_a_long_message_is_cut_after_masking() -> None:
    sub = parse(message="x" * 2000 + VISA)
    message = sub.values["message"]
    assert isinstance(message, str) and len(message) == MESSAGE_MAX and message.endswith("…")


def test_same_content_same_digest_whatever_the_key_order() -> None:
    a = parse_submission({"txn_id": "t", "acquirer": "x", "amount_minor": 5}, PanGuard())
    b = parse_submission({"amount_minor": "5", "acquirer": "x", "txn_id": "t"}, PanGuard())
    c = parse_submission({"txn_id": "t", "acquirer": "x", "amount_minor": 6}, PanGuard())
    assert a.digest == b.digest != c.digest


def test_resolution_bodies() -> None:
    guard = PanGuard()
    assert parse_resolution({"txn_id": "t", "resolution": "reversed"}, guard) == ("t", "reversed")
    for body, field in [
        ({"resolution": "reversed"}, "txn_id"),
        ({"txn_id": "t", "resolution": "refunded"}, "resolution"),
        ({"txn_id": "t", "resolution": "reversed", "why": "x"}, "why"),
    ]:
        with pytest.raises(PaymentError) as err:
            parse_resolution(body, guard)
        assert (err.value.status, err.value.field) == (400, field)
    with pytest.raises(PaymentError) as err:
        parse_resolution({"txn_id": "t", "resolution": "reversed", "cvv": "1"}, guard)
    assert err.value.status == 422


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=5,
)
plausible = {
    "kind": st.sampled_from(["sale", "refund", "void", "reversal", "x"]),
    "outcome": st.sampled_from(["approved", "declined", "timeout", "error", "x"]),
    "amount_minor": st.integers(-5, 10**13) | st.text("0123456789-", max_size=14),
    "currency": st.text("EURusd1", min_size=2, max_size=4),
    "started_at": st.sampled_from(["2026-11-21T10:00:00Z", "2026-11-21T10:00:00", "x"]),
    "ended_at": st.sampled_from(["2026-11-21T10:00:01.5+02:00", "2026-13-01T00:00:00Z"]),
}


@settings(max_examples=400, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(FIELDS) | st.text(max_size=10),
        json_values,
        max_size=8,
    ),
    st.fixed_dictionaries({}, optional={k: v for k, v in plausible.items()}),
)
def test_any_input_is_a_submission_or_a_payment_error_and_a_submission_makes_a_txn(
    garbage: dict[str, Any], fields: dict[str, Any]
) -> None:
    """The garbage invariant: we parse it or raise our own error — never anything else;
    and whatever we accept, the wire format can carry."""
    data = {**garbage, **fields}
    try:
        sub = parse_submission(data, PanGuard())
    except PaymentError as err:
        assert err.status in (400, 422)
        return
    book = Book(timeout_s=60, technical_codes=("91",))
    change = book.submit(sub, 1_800_000_000.0)
    book.apply(change)
    if not sub.is_end:
        book.apply(book.expire(1_800_001_000.0)[0])
