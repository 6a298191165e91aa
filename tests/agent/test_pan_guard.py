"""The PAN guard: the corpus, exact masking shapes, track data, sensitive keys, field
names, the counting guard, and the structlog processor on real log output."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator

import pytest
import structlog
from hypothesis import example, given
from hypothesis import strategies as st

from agent import pan_guard
from agent.logs import LogFormat, configure_logging
from agent.pan_guard import (
    GUARD,
    TRACK_REMOVED,
    PanGuard,
    forbidden_fields,
    is_forbidden_name,
    luhn_ok,
    plausible_pan,
    scrub,
)
from tests.agent import pan_corpus

CARDS = pan_corpus.card_numbers()


def masked(card: str) -> str:
    return card[:6] + "*" * (len(card) - 10) + card[-4:]


def regroup(flat: str, like: str) -> str:
    """``flat`` with the separators of ``like`` put back where they were."""
    out, it = [], iter(flat)
    for ch in like:
        out.append(ch if ch in " -" else next(it))
    return "".join(out)


# --- the corpus ---------------------------------------------------------------------


def test_corpus_has_ten_thousand_positives_in_every_shape() -> None:
    samples = pan_corpus.samples()
    assert len(samples) == len({s.text for s in samples}) == 10_000
    shapes = {shape for s in samples for shape in s.shape.split("+")}
    assert shapes == set(pan_corpus.SHAPES)
    lengths = {len(card) for s in samples for card in s.cards}
    assert lengths == set(range(13, 20))
    for card in CARDS:  # the corpus's own table and Luhn agree with the guard's
        assert luhn_ok(card) and plausible_pan(card), card


def test_no_card_number_survives_the_corpus() -> None:
    outputs = []
    for sample in pan_corpus.samples():
        out, count = scrub(sample.text)
        assert pan_corpus.find_card_numbers(out, sample.cards) == [], (sample, out)
        assert count >= len(sample.cards), (sample, out, count)
        assert scrub(out) == (out, 0), sample  # idempotent
        assert not pan_corpus.looks_like_card(out), (sample, out)
        outputs.append(out)
    everything = "\n".join(outputs)
    assert pan_corpus.find_card_numbers(everything) == []


def test_look_alikes_are_left_alone() -> None:
    negatives = pan_corpus.negatives()
    assert len(negatives) == len(set(negatives)) == 3_000
    changed = [(text, scrub(text)) for text in negatives if scrub(text) != (text, 0)]
    assert changed == []


def test_find_card_numbers_sees_separated_and_raw_digits() -> None:
    card = "4111111111111111"
    assert pan_corpus.find_card_numbers(b"x 4111 1111 1111 1111 y", [card]) == [card]
    assert pan_corpus.find_card_numbers("x 4111-1111-1111-1111 y", [card]) == [card]
    assert pan_corpus.find_card_numbers(b"x 411111******1111 y", [card]) == []


# --- masking, exactly ---------------------------------------------------------------


@pytest.mark.parametrize("card", CARDS)
def test_every_card_is_masked_to_first_six_and_last_four(card: str) -> None:
    assert scrub(f"card {card} ok") == (f"card {masked(card)} ok", 1)
    for sep in " -":
        written = pan_corpus._grouped(card, sep)
        assert scrub(f"paid with {written}.") == (f"paid with {regroup(masked(card), written)}.", 1)


@pytest.mark.parametrize(
    ("text", "expected", "count"),
    [
        ("4111111111111111", "411111******1111", 1),
        ("pay 4111 1111 1111 1111 ok", "pay 4111 11** **** 1111 ok", 1),
        ("pay 4111-1111-1111-1111", "pay 4111-11**-****-1111", 1),
        ("amex 3782 822463 10005", "amex 3782 82**** *0005", 1),
        ("amex 3782-822463-10005", "amex 3782-82****-*0005", 1),
        ("visa13 4222222222222!", "visa13 422222***2222!", 1),
        ("maestro19 6799990100000000019", "maestro19 679999*********0019", 1),
        ("diners 3056 930902 5904", "diners 3056 93**** 5904", 1),
        ("ref4111111111111111x", "ref411111******1111x", 1),
        ('{"card":"5555555555554444"}', '{"card":"555555******4444"}', 1),
        ("a=4111111111111111&b=2", "a=411111******1111&b=2", 1),
        (
            "two 4111111111111111 and 5555555555554444",
            "two 411111******1111 and 555555******4444",
            2,
        ),
        ("spaced pair 4111 1111 1111 1111 5555 5555 5555 4444", None, 2),
        ("llvar 164111111111111111000000", None, 1),
        ("padded 0004111111111111111", None, 1),
    ],
)
def test_masking(text: str, expected: str | None, count: int) -> None:
    out, n = scrub(text)
    if expected is not None:
        assert out == expected
    assert n == count
    assert pan_corpus.find_card_numbers(out) == []


def test_masking_keeps_the_shape_and_hides_the_middle_digits() -> None:
    text = "card 4000 0566 5566 5556 end"
    out, _ = scrub(text)
    assert len(out) == len(text)
    assert out == "card 4000 05** **** 5556 end"
    assert "0566 5566" not in out and "66556" not in out.replace(" ", "")


def test_glued_card_number_is_found_inside_a_longer_run() -> None:
    # a terminal id and a PAN joined by one space, an ISO 8583 LLVAR, a 25-digit run
    for text in ("tid 12345678 4111111111111111", "164111111111111111", "000000000" + CARDS[5]):
        out, n = scrub(text)
        assert n >= 1
        assert pan_corpus.find_card_numbers(out) == [], out


def test_runs_that_fail_luhn_or_the_table_are_left_alone() -> None:
    failing = "4111111111111112"
    implausible = "1234567890128"  # Luhn-valid, but 1 is no card brand's prefix
    wrong_length = "411111111111111"  # 15 digits, Luhn-valid? either way: Visa has no 15
    assert not luhn_ok(failing) and luhn_ok(implausible)
    for text in (f"id {failing}", f"id {implausible}", f"id {wrong_length}"):
        assert scrub(text) == (text, 0)


# --- track data ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("%B4111111111111111^DOE/JOHN^25121010000000000000?", TRACK_REMOVED),
        ("x %B4111111111111111^DOE/JOHN^2512101000?; y", f"x {TRACK_REMOVED}; y"),
        ("B4111111111111111^SMITH/JANE MS^2512101 tail", f"{TRACK_REMOVED} tail"),
        ("%B3782 822463 10005^AMEX/CARD^2512101?", TRACK_REMOVED),
        (";4111111111111111=25121010000000000000?", TRACK_REMOVED),
        ("raw=;4111111111111111=2512101?&n=1", f"raw={TRACK_REMOVED}&n=1"),
        ("4111111111111111=25121010000000000000", TRACK_REMOVED),
        ("57 4111111111111111D25122010000F 5F20", f"57 {TRACK_REMOVED} 5F20"),
        (";123456789012=2512101?", TRACK_REMOVED),  # a 12-digit PAN, by its sentinel
        ('{"t2":";5555555555554444=2912101123?"}', f'{{"t2":"{TRACK_REMOVED}"}}'),
    ],
)
def test_track_data_is_wiped_whole(text: str, expected: str) -> None:
    assert scrub(text) == (expected, 1)


def test_track_like_shapes_without_a_valid_pan_are_not_track_data() -> None:
    digits = "1234567890123"
    assert not luhn_ok(digits)
    text = f"batch {digits}=20261121 closed"  # no sentinel, not Luhn-valid
    assert scrub(text) == (text, 0)
    short = "4111111111111111=2512"  # no sentinel, too short for expiry + service code
    out, n = scrub(short)
    assert out == "411111******1111=2512" and n == 1


# --- sensitive keys -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cvv=123", "cvv=[removed]"),
        ("CVV2: 4321 ok", "CVV2: [removed] ok"),
        ('{"cvc": "123", "amount": 5}', '{"cvc": "[removed]", "amount": 5}'),
        ('{"cvv2": 123}', '{"cvv2": "[removed]"}'),
        ("pin_block=0412AC89ABCDEF67 rc=55", "pin_block=[removed] rc=55"),
        ("PIN=1234", "PIN=[removed]"),
        ("pan='4111 1111 1111 1111'", "pan='[removed]'"),
        ("card_number=5555555555554444", "card_number=[removed]"),
    ],
)
def test_values_of_sensitive_keys_are_wiped(text: str, expected: str) -> None:
    assert scrub(text) == (expected, 1)
    assert scrub(expected) == (expected, 0)


@pytest.mark.parametrize(
    "text",
    [
        "pinpad=ingenico_1 state=ready",
        "pin_pad_id=7",
        "company=ACME 12",
        "shipping=2 spanner=3",
        "tracking_number=1Z999AA10123456784",
        "cvv=none given",
        "card=visa last4=1111",
        "cvv=[removed]",
    ],
)
def test_other_keys_are_left_alone(text: str) -> None:
    assert scrub(text) == (text, 0)


# --- properties ---------------------------------------------------------------------

_PIECES = st.one_of(
    st.text(max_size=20),
    st.text(alphabet="0123456789", min_size=1, max_size=25),
    st.text(alphabet="0123456789 -=^;%?BDdF*", max_size=30),
    st.sampled_from(CARDS),
    st.sampled_from(CARDS).map(lambda c: pan_corpus._grouped(c, " ")),
    st.sampled_from(CARDS).map(lambda c: pan_corpus._grouped(c, "-")),
    st.sampled_from(["cvv=", "pin: ", '"pan": ', "track2=", "%B", "^DOE/J^", ";", "=2512101"]),
)
_TEXTS = st.lists(_PIECES, max_size=8).map("".join)
_DIGIT_RUN = re.compile(r"[0-9]+")


@given(_TEXTS)
@example("4111111111111111")
@example("0" * 40)
@example("%B" + "4" * 19 + "^" * 5)
def test_scrub_never_raises_is_idempotent_and_leaves_no_card_number(text: str) -> None:
    out, count = scrub(text)
    assert scrub(out) == (out, 0)
    assert (count == 0) == (out == text)
    assert not pan_corpus.looks_like_card(out)  # checked by an independent finder
    for run in _DIGIT_RUN.findall(out):  # no new digit runs: only masked or kept ones
        assert run in text


@given(st.text())
def test_scrub_of_any_text(text: str) -> None:
    out, count = scrub(text)
    assert isinstance(out, str) and count >= 0
    assert scrub(out) == (out, 0)


# --- forbidden field names ----------------------------------------------------------

FORBIDDEN = [
    "pan", "PAN", "card_pan", "cardPan", "cardPAN", "PANNumber", "pan-number", "track",
    "track1", "track2", "Track2Data", "trackdata", "track_data", "cvv", "CVV2", "cvv2",
    "cvc", "cvc2", "card.cvn", "csc", "pin", "PIN", "pin_block", "pinBlock", "pinblock",
    "card_number", "cardNumber", "CardNo", "cc_num", "ccnumber", "payer.pan",
]  # fmt: skip
ALLOWED = [
    "company", "spanner", "shipping", "pinpad", "pinpad_serial", "pin_pad_id", "PinPad",
    "panel", "PANEL", "tracking_id", "trackingNumber", "span", "txn_id", "kind", "acquirer",
    "amount_minor", "currency", "stan", "rrn", "auth_code", "response_code", "started_at",
    "ended_at", "outcome", "message", "card_brand", "cardholder_present", "pinned", "",
]  # fmt: skip


@pytest.mark.parametrize("name", FORBIDDEN)
def test_forbidden_names(name: str) -> None:
    assert is_forbidden_name(name)


@pytest.mark.parametrize("name", ALLOWED)
def test_allowed_names(name: str) -> None:
    assert not is_forbidden_name(name)


def test_forbidden_fields_keeps_order_and_the_guard_counts_refusals() -> None:
    names = ["txn_id", "cvv", "message", "card_pan", "pinpad"]
    assert forbidden_fields(names) == ["cvv", "card_pan"]
    guard = PanGuard()
    assert guard.forbidden_fields(names) == ["cvv", "card_pan"]
    assert guard.forbidden_fields(["txn_id"]) == []
    assert guard.forbidden_fields(iter(["pan"])) == ["pan"]
    assert guard.refused_total == 2
    assert guard.counts() == {"masked_total": 0, "refused_total": 2}


# --- the counting guard -------------------------------------------------------------


def test_guard_counts_across_threads() -> None:
    guard = PanGuard()
    line = "a 4111111111111111 b ;5555555555554444=2912101? cvv=123"
    assert scrub(line)[1] == 3

    def work() -> None:
        for _ in range(500):
            guard.scrub(line)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert guard.masked_total == 8 * 500 * 3
    assert guard.scrub("nothing here 2026-11-21") == ("nothing here 2026-11-21", 0)
    assert guard.masked_total == 8 * 500 * 3


class Opaque:
    def __repr__(self) -> str:
        return "Opaque(pan=4111 1111 1111 1111)"


def test_scrub_value_reaches_every_nested_string() -> None:
    guard = PanGuard()
    value = {
        "msg": "card 4111111111111111",
        "nested": {"list": ["5555-5555-5555-4444", ("ok", b"raw 378282246310005")]},
        "number": 4111111111111111,
        "float": 4111111111111111.0,
        "set": {"6011111111111117"},
        "obj": Opaque(),
        "4012888888881881": "a key",
        "plain": ["nothing", 12, None, True, 2.5],
    }
    out, n = guard.scrub_value(value)
    assert n == 8 and guard.masked_total == 8
    assert pan_corpus.find_card_numbers(repr(out)) == []
    assert isinstance(out, dict)
    assert out["msg"] == "card 411111******1111"
    assert out["nested"]["list"][1][1] == b"raw 378282*****0005"
    assert out["number"] == "411111******1111"
    assert out["plain"] == ["nothing", 12, None, True, 2.5]
    untouched = {"a": [1, "b"], "c": Opaque}
    assert guard.scrub_value(untouched) == (untouched, 0)
    assert guard.scrub_value(untouched)[0] is untouched


def test_scrub_value_of_a_deep_or_cyclic_structure() -> None:
    deep: list[object] = ["4111111111111111"]
    for _ in range(40):
        deep = [deep]
    out, n = PanGuard().scrub_value(deep)
    assert n == 1 and "4111111111111111" not in repr(out)
    cyclic: list[object] = ["4111111111111111"]
    cyclic.append(cyclic)
    out, n = PanGuard().scrub_value(cyclic)
    assert n >= 1 and "4111111111111111" not in repr(out)


# --- the agent's own logs -----------------------------------------------------------


def test_processor_scrubs_captured_log_events() -> None:
    guard = PanGuard()
    with structlog.testing.capture_logs(processors=[guard.process_log_event]) as logs:
        structlog.get_logger().info(
            "card_seen 4111111111111111",
            raw=";5555555555554444=2912101123?",
            fields={"data": ["378282246310005"]},
            cvv="123",
            amount=1250,
        )
        structlog.get_logger().info("nothing_to_see", lane=3)
    assert logs[0]["event"] == "card_seen 411111******1111"
    assert logs[0]["raw"] == TRACK_REMOVED
    assert logs[0]["fields"] == {"data": ["378282*****0005"]}
    assert logs[0]["cvv"] == "123"  # a value alone is text; the key is not part of it
    assert logs[0]["amount"] == 1250
    assert logs[1] == {"event": "nothing_to_see", "lane": 3, "log_level": "info"}
    assert guard.masked_total == 3


@pytest.fixture
def fresh_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.mark.usefixtures("fresh_structlog")
@pytest.mark.parametrize("fmt", ["json", "console"])
def test_configured_logging_writes_no_card_number(
    capsys: pytest.CaptureFixture[str], fmt: LogFormat
) -> None:
    configure_logging("debug", fmt)  # writes to pytest's stdout
    before = GUARD.masked_total
    log = structlog.get_logger()
    structlog.contextvars.bind_contextvars(source="logtail 4012888888881881")
    try:
        for sample in pan_corpus.samples(200):
            log.info("line_read", line=sample.text, shape=sample.shape)
        try:
            raise ValueError("bad card 5105 1051 0510 5100 in request")
        except ValueError:
            log.exception("request_failed", body={"pan": "6011111111111117"})
    finally:
        structlog.contextvars.clear_contextvars()
    output = capsys.readouterr().out
    assert pan_corpus.find_card_numbers(output) == []
    assert output.count("line_read") == 200
    assert "510510******5100" not in output  # spaced, so masked in its own shape:
    assert "5105 10** **** 5100" in output
    assert GUARD.masked_total - before >= 200 + 200 + 2
    if fmt == "json":
        events = [json.loads(line) for line in output.splitlines()]
        assert events[-1]["body"] == {"pan": "601111******1117"}
        assert "Traceback" in events[-1]["exception"]


def test_the_module_guard_is_a_pan_guard() -> None:
    assert isinstance(pan_guard.GUARD, PanGuard)
