"""Test inputs for the PAN guard: card numbers in every shape, and look-alikes.

Used by the PAN guard's unit tests and by the end-to-end PAN tests of the API
and the log tailer::

    from tests.agent import pan_corpus

    for text in pan_corpus.positives():      # 10,000 lines, each with ≥ 1 card number
        ...                                  # post it, write it to a log file
    leaked = pan_corpus.find_card_numbers(spool_db.read_bytes())
    assert leaked == []

Every input is one line (no CR, LF or NUL), at most 240 characters, mostly
ASCII with a few accented letters and € signs. Generation is deterministic
(``seed``) and cached.

- :func:`card_numbers` — the raw digit strings of every card number used:
  well-known test numbers from the brands' and gateways' documentation and
  generated Luhn-valid numbers for each row and length of the IIN table.
- :func:`positives` — texts that carry card numbers: plain, spaced and dashed
  in each brand's grouping (4-4-4-4, Amex 4-6-5, Diners 4-6-4, 19 as
  4-4-4-4-3), glued inside words (``ref4111111111111111x``), glued to other
  digits (ISO 8583 ``16<PAN>``, zero padding), next to other numbers, in
  track 1 (``%B<PAN>^NAME^YYMM…?``) and track 2 (``;<PAN>=YYMM…?``, EMV
  ``<PAN>D<YYMM>…F``) data, inside JSON-ish and key=value log lines, URLs,
  ISO 8583 dumps and free text; some lines carry two.
- :func:`negatives` — look-alikes that must come out unchanged: phone numbers,
  order and invoice ids, 13–19 digit runs that fail Luhn or whose prefix does
  not fit their length, dates and times, epoch timestamps, amounts, barcodes,
  STAN/RRN/TID/MID, IP and MAC addresses, UUIDs, and words that merely
  contain "pan" or "pin" (company, pinpad, shipping). Each one is checked by
  this module's own card-number finder, written separately from
  ``agent.pan_guard`` on purpose: no 13–19 digit window of a run of digits
  (single spaces or dashes allowed between them) both fits the IIN table and
  passes Luhn.
- :func:`samples` — the positives with the card numbers each one carries.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Iterable
from typing import NamedTuple

__all__ = [
    "Sample",
    "card_numbers",
    "find_card_numbers",
    "looks_like_card",
    "negatives",
    "positives",
    "samples",
]

SEED = 5

# Published test card numbers (brand and payment-gateway documentation).
KNOWN_TEST_CARDS: tuple[str, ...] = (
    "4111111111111111",
    "4012888888881881",
    "4222222222222",
    "4242424242424242",
    "4000056655665556",
    "4917610000000000",
    "5555555555554444",
    "5105105105105100",
    "5200828282828210",
    "2223003122003222",
    "2221000000000009",
    "378282246310005",
    "371449635398431",
    "378734493671000",
    "6011111111111117",
    "6011000990139424",
    "3530111333300000",
    "3566002020360505",
    "30569309025904",
    "38520000023237",
    "36227206271667",
    "6200000000000005",
    "6759649826438453",
    "6799990100000000019",
)

# The IIN table, written out again (prefix ranges as strings, lengths).
_IIN: tuple[tuple[str, str, tuple[int, ...]], ...] = (
    ("4", "4", (13, 16, 19)),
    ("51", "55", (16,)),
    ("2221", "2720", (16,)),
    ("34", "34", (15,)),
    ("37", "37", (15,)),
    ("6011", "6011", (16, 17, 18, 19)),
    ("644", "649", (16, 17, 18, 19)),
    ("65", "65", (16, 17, 18, 19)),
    ("3528", "3589", (16, 17, 18, 19)),
    ("300", "305", (14, 15, 16)),
    ("3095", "3095", (14, 15, 16)),
    ("36", "36", (14, 15, 16)),
    ("38", "39", (14, 15, 16)),
    ("62", "62", (16, 17, 18, 19)),
    ("50", "50", tuple(range(13, 20))),
    ("56", "69", tuple(range(13, 20))),
    ("2200", "2204", (16, 17, 18, 19)),
)

_GROUPS = {13: (4, 4, 5), 14: (4, 6, 4), 15: (4, 6, 5), 16: (4, 4, 4, 4), 17: (4, 4, 4, 5)}
_GROUPS |= {18: (4, 4, 4, 6), 19: (4, 4, 4, 4, 3)}


class Sample(NamedTuple):
    text: str
    cards: tuple[str, ...]  # the raw digit strings it carries
    shape: str  # how the card numbers are written, for test ids


def _luhn_valid(digits: str) -> bool:
    checksum = 0
    for pos, ch in enumerate(digits[::-1]):
        value = int(ch) * (2 if pos % 2 else 1)
        checksum += value // 10 + value % 10
    return checksum % 10 == 0


def _fits_table(digits: str) -> bool:
    for lo, hi, lengths in _IIN:
        head = digits[: len(lo)]
        if len(digits) in lengths and lo <= head <= hi:
            return True
    return False


def _check_digit(body: str) -> str:
    for d in "0123456789":
        if _luhn_valid(body + d):
            return d
    raise AssertionError("unreachable")


_RUN = re.compile(r"\d(?:[ -]?\d)*")


def looks_like_card(text: str) -> bool:
    """This module's own finder: does any 13–19 digit window of a digit run (single
    spaces or dashes allowed between digits) fit the IIN table and pass Luhn?"""
    for run in _RUN.findall(text):
        digits = "".join(ch for ch in run if ch.isdigit())
        if not digits.isascii():
            continue
        for size in range(13, 20):
            for start in range(len(digits) - size + 1):
                window = digits[start : start + size]
                if _fits_table(window) and _luhn_valid(window):
                    return True
    return False


# --- card numbers ----------------------------------------------------------------


@functools.cache
def _cards() -> tuple[str, ...]:
    rng = random.Random(SEED)
    out = list(KNOWN_TEST_CARDS)
    for lo, hi, lengths in _IIN:
        for length in lengths:
            for _ in range(4):
                head = str(rng.randint(int(lo), int(hi))).zfill(len(lo))
                body = head + _digits(rng, length - len(head) - 1)
                out.append(body + _check_digit(body))
    seen: dict[str, None] = {}
    for card in out:
        assert _luhn_valid(card) and _fits_table(card), card
        seen[card] = None
    return tuple(seen)


def card_numbers() -> list[str]:
    """The raw digit strings of every card number the positives use."""
    return list(_cards())


def find_card_numbers(haystack: bytes | str, cards: Iterable[str] | None = None) -> list[str]:
    """Which card numbers occur in ``haystack`` (e.g. a database file's bytes): as
    written, and again after every space and dash is removed from the haystack."""
    data = haystack.encode("utf-8", "surrogateescape") if isinstance(haystack, str) else haystack
    squeezed = data.replace(b" ", b"").replace(b"-", b"")
    found = []
    for card in _cards() if cards is None else cards:
        needle = card.encode()
        if needle in data or needle in squeezed:
            found.append(card)
    return found


# --- how a card number is written ------------------------------------------------

_NAMES = ("DOE/JOHN", "SMITH/JANE MS", "MULLER/KARL", "O'NEIL/ANN", "LEE/K", "GARCIA/MARIA J")


def _grouped(card: str, sep: str) -> str:
    groups = _GROUPS[len(card)]
    parts, i = [], 0
    for size in groups:
        parts.append(card[i : i + size])
        i += size
    return sep.join(parts)


def _expiry(rng: random.Random) -> str:
    return f"{rng.randint(24, 35):02d}{rng.randint(1, 12):02d}"


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def _written(card: str, shape: str, rng: random.Random) -> str:
    """The card number as it appears in text, in the given shape."""
    if shape == "plain":
        return card
    if shape == "spaced":
        return _grouped(card, " ")
    if shape == "dashed":
        return _grouped(card, "-")
    if shape == "in_word":
        before, after = rng.choice(
            [("ref", "x"), ("ID", "END"), ("card#", ""), ("", "abc"), ("_", "_"), ("PAN:", "/")]
        )
        return f"{before}{card}{after}"
    if shape == "llvar":  # ISO 8583 field 2 in an ASCII dump: length, PAN, processing code
        return f"{len(card):02d}{card}{rng.choice(['', '000000', '003000'])}"
    if shape == "zero_padded":
        return card.rjust(19 + rng.randint(0, 3), "0")
    if shape == "after_number":  # joined to another number by one space
        return f"{_digits(rng, rng.randint(2, 10))} {card}"
    if shape == "track1":
        start, end = rng.choice([("%B", "?"), ("%B", ""), ("B", "?")])
        name = rng.choice(_NAMES)
        return f"{start}{card}^{name}^{_expiry(rng)}101{_digits(rng, rng.randint(8, 20))}{end}"
    if shape == "track2":
        start, end = rng.choice([(";", "?"), (";", ""), ("", "?"), ("", "")])
        service = rng.choice(["101", "201", "120"])
        return f"{start}{card}={_expiry(rng)}{service}{_digits(rng, 10)}{end}"
    if shape == "track2_emv":  # tag 57 (track 2 equivalent data) in hex
        return f"{card}D{_expiry(rng)}201{_digits(rng, rng.randint(5, 12))}F"
    raise AssertionError(shape)


SHAPES = (
    "plain",
    "spaced",
    "dashed",
    "in_word",
    "llvar",
    "zero_padded",
    "after_number",
    "track1",
    "track2",
    "track2_emv",
)


# --- the lines they appear in ----------------------------------------------------


def _ts(rng: random.Random) -> str:
    h, m, s, ms = rng.randint(6, 22), rng.randint(0, 59), rng.randint(0, 59), rng.randint(0, 999)
    return rng.choice(
        [
            f"2026-11-21 {h:02d}:{m:02d}:{s:02d}.{ms:03d}",
            f"2026-11-21T{h:02d}:{m:02d}:{s:02d}.{ms:03d}Z",
            f"21/11/2026 {h:02d}:{m:02d}:{s:02d}",
            f"Nov 21 {h:02d}:{m:02d}:{s:02d}",
        ]
    )


def _amount(rng: random.Random) -> str:
    return f"{rng.randint(1, 50000) / 100:.2f}"


_LINES = (
    "{ts} INFO  [ecr] auth request card={card} amount={amt} EUR stan={stan}",
    "{ts} DEBUG [pinpad] card read: {card}",
    "{ts} posapp[{pid}]: customer paid with {card} exp 12/28, {amt} €",
    '{{"ts":"{ts}","level":"debug","msg":"auth request","card":"{card}","amount":{amt}}}',
    '{{"ts":"{ts}","event":"emv_data","data":"{card}","lane":{lane}}}',
    "ts={ts} level=info event=txn_start account={card} amount_minor={minor} lane={lane}",
    'ts={ts} level=warn msg="card rejected: {card}" code=05',
    "{card}",
    "{card} approved",
    "approved {card}",
    "GET /api/v1/cards/{card}/balance HTTP/1.1 200",
    "{ts} ISO8583 MTI=0200 DE2={card} DE4=000000001250 DE11={stan}",
    "{ts} TID 12345678 {card} {amt}",
    "{ts} WARN Zahlung fehlgeschlagen, Karte {card} – Betrag {amt} €",
    "{ts} ERROR Échec du paiement carte {card} montant {amt}",
    "{ts} receipt: ************ then full {card} printed by mistake",
    "{ts} INFO swipe raw=[{card}] len={lane}",
)
_TWO_CARDS = (
    "{ts} retry with second card: first {card} then {card2}",
    '{{"cards":["{card}","{card2}"],"ts":"{ts}"}}',
)


def _fill(template: str, rng: random.Random, card: str, card2: str = "") -> str:
    return template.format(
        ts=_ts(rng),
        card=card,
        card2=card2,
        amt=_amount(rng),
        minor=rng.randint(1, 500000),
        stan=f"{rng.randint(0, 999999):06d}",
        pid=rng.randint(100, 65000),
        lane=rng.randint(1, 12),
    )


@functools.cache
def _samples(n: int, seed: int) -> tuple[Sample, ...]:
    rng = random.Random(seed)
    cards = _cards()
    out: list[Sample] = []
    seen: set[str] = set()
    i = 0
    while len(out) < n:
        shape = SHAPES[i % len(SHAPES)]  # every shape equally often
        card = cards[i % len(cards)]
        i += 1
        written = _written(card, shape, rng)
        if rng.random() < 0.08:
            card2 = rng.choice(cards)
            shape2 = rng.choice(SHAPES)
            text = _fill(rng.choice(_TWO_CARDS), rng, written, _written(card2, shape2, rng))
            sample = Sample(text, (card, card2), f"{shape}+{shape2}")
        else:
            sample = Sample(_fill(rng.choice(_LINES), rng, written), (card,), shape)
        if sample.text in seen:
            continue
        assert len(sample.text) <= 240 and not set(sample.text) & {"\r", "\n", "\0"}, sample
        seen.add(sample.text)
        out.append(sample)
    return tuple(out)


def samples(n: int = 10_000, seed: int = SEED) -> list[Sample]:
    """``n`` distinct lines carrying card numbers, with the numbers each one carries."""
    return list(_samples(n, seed))


def positives(n: int = 10_000, seed: int = SEED) -> list[str]:
    """``n`` distinct lines, each carrying at least one card number."""
    return [s.text for s in _samples(n, seed)]


# --- look-alikes -------------------------------------------------------------------


def _phone(rng: random.Random) -> str:
    d = functools.partial(_digits, rng)
    return rng.choice(
        [
            f"+44 20 {d(4)} {d(4)}",
            f"+1 ({d(3)}) {d(3)}-{d(4)}",
            f"+49 151 {d(4)} {d(4)}",
            f"0049 30 {d(4)} {d(4)}",
            f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}",
            f"+353 87 {d(3)} {d(4)}",
            f"tel:+4930{d(8)}",
            f"(0{d(2)}) {d(3)}-{d(5)}",
        ]
    )


def _failing_run(rng: random.Random) -> str:
    """13–19 digits with a card brand's prefix and length that fail Luhn."""
    lo, hi, lengths = rng.choice(_IIN)
    length = rng.choice(lengths)
    head = str(rng.randint(int(lo), int(hi))).zfill(len(lo))
    body = head + _digits(rng, length - len(head) - 1)
    good = _check_digit(body)
    return body + rng.choice([d for d in "0123456789" if d != good])


def _implausible_run(rng: random.Random) -> str:
    """13–19 digits that pass Luhn but whose prefix does not fit their length."""
    head, length = rng.choice(
        [
            (str(rng.choice([0, 1, 7, 8, 9])), rng.randint(13, 19)),
            ("4", rng.choice([14, 15, 17, 18])),
            (rng.choice(["34", "37"]), rng.choice([13, 14, 16, 17])),
            (str(rng.randint(51, 55)), rng.choice([13, 14, 15, 17, 18, 19])),
            ("2", rng.randint(13, 19)),
        ]
    )
    body = head + _digits(rng, length - len(head) - 1)
    return body + _check_digit(body)


def _negative(rng: random.Random) -> str:
    d = functools.partial(_digits, rng)
    ts = _ts(rng)
    kind = rng.randrange(16)
    if kind == 0:
        return f"{ts} INFO customer phone {_phone(rng)} for delivery"
    if kind == 1:
        return rng.choice(
            [
                f"{ts} order ORD-2026-{d(6)} created",
                f"order_id={_failing_run(rng)} status=paid",
                f"{ts} INFO invoice INV{d(10)} total {_amount(rng)} EUR",
                f'{{"order":"{_implausible_run(rng)}","lines":{rng.randint(1, 9)}}}',
            ]
        )
    if kind == 2:
        return f"{ts} ref {_failing_run(rng)} declined code=05"
    if kind == 3:
        return f"{ts} loyalty number {_implausible_run(rng)} points={rng.randint(0, 9999)}"
    if kind == 4:
        return rng.choice(
            [
                f"{ts} batch closed for 2026-11-21 at 23:59:59",
                f"business day 20261121 shift {rng.randint(1, 3)} opened {ts}",
                f"{ts} clock 2026-11-21T09:15:02.123456+01:00 drift 0.004 s",
                f"Sat Nov 21 {rng.randint(0, 23):02d}:15:02 2026 lane {rng.randint(1, 9)}",
            ]
        )
    if kind == 5:
        return rng.choice(
            [
                f"{ts} total EUR 1,234.{d(2)} paid",
                f"{ts} Summe 12 345 678,{d(2)} €",
                f"amount_minor={rng.randint(1, 10**9)} currency=EUR",
                f"{ts} refund -{_amount(rng)} total 1.250,00",
            ]
        )
    if kind == 6:
        return f"{ts} scan ean={rng.choice('0123789')}{d(12)} qty={rng.randint(1, 5)}"
    if kind == 7:
        return f"{ts} stan={d(6)} rrn={d(12)} auth={d(6)} rc=00 tid={d(8)}"
    if kind == 8:
        return f"{ts} mid={rng.choice('0178')}{d(14)} acquirer=acme tid={d(8)}"
    if kind == 9:
        ip = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.1"
        return f"{ts} peer {ip}:443 mac 00-1B-44-11-3A-B7"
    if kind == 10:
        u = f"{d(8)}-{d(4)}-4{d(3)}-a{d(3)}-{d(12)}"
        return f"{ts} request_id={u} took {rng.randint(1, 900)} ms"
    if kind == 11:
        return f"epoch_ms={rng.randint(1_700_000_000_000, 1_800_000_000_000)} seq={d(5)}"
    if kind == 12:
        return rng.choice(
            [
                f"{ts} company=ACME Retail GmbH store={rng.randint(1, 999)}",
                f"{ts} pinpad=ingenico_{rng.randint(1, 9)} state=ready",
                f"{ts} shipping={rng.randint(0, 20)} spanner tool sold",
                f"{ts} tracking_number=1Z999AA{d(10)}",
                f"{ts} panel {rng.randint(1, 4)} pin entry took {rng.randint(1, 30)} s",
            ]
        )
    if kind == 13:
        return f"{ts} masked card 411111******1111 approved amount={_amount(rng)}"
    if kind == 14:
        return f"{ts} version 4.{rng.randint(0, 20)}.{rng.randint(0, 99)} build {d(8)}"
    return f"{ts} receipt {d(4)}-{d(4)} lane {rng.randint(1, 9)} cashier {d(3)}"


@functools.cache
def _negatives(n: int, seed: int) -> tuple[str, ...]:
    rng = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        text = _negative(rng)
        if not looks_like_card(text):  # about 1 in 7 would: a chance Luhn-valid window
            out[text] = None
    return tuple(out)


def negatives(n: int = 3_000, seed: int = SEED) -> list[str]:
    """``n`` distinct look-alike lines that must come out of the PAN guard unchanged."""
    return list(_negatives(n, seed))
