"""The PAN guard: no card number, track data, CVV or PIN block gets past it readable.

Everything the agent takes in (API fields, log lines, device text) and
everything it logs itself goes through :func:`scrub` first. The module is
pure: no I/O, no imports from the rest of the agent. :class:`PanGuard` adds
thread-safe counters; ``GUARD`` is the agent's one instance.

What :func:`scrub` does, in this order:

1. **Track data is wiped whole** and replaced by ``[track data removed]``:
   track 1 ``%B<PAN>^NAME^YYMM…?`` (the ``%`` and the closing ``?`` are
   optional) and track 2 ``;<PAN>=YYMM…?``. Without the ``;`` sentinel, or
   with EMV's ``D`` field separator (tag 57, ``<PAN>D<YYMM>…``), the digits
   before the separator must end in a Luhn-valid 12–19 digit PAN and at least
   7 digits (expiry and service code) must follow; a 12-digit PAN is only
   sure to be found in track 2 with its ``;`` (no 13-digit run to start from).
2. **Values of sensitive keys are wiped**: in ``key=value`` and JSON-ish
   ``"key": value`` text, a value that holds a digit becomes ``[removed]``
   when the key is a forbidden field name (see below), e.g. ``cvv=123`` or
   ``"pin_block": "0412AC89…"``.
3. **Card numbers are masked** to first 6 / last 4. A candidate is a run of
   13 or more ASCII digits in which single spaces or dashes may separate the
   digits; the run needs no word boundary (``ref4111111111111111x`` is
   caught). Every 13–19 digit *window* of the run's digits is checked, so a
   card number glued to other digits (an ISO 8583 LLVAR ``16<PAN>``, a
   zero-padded field, a terminal id and a PAN joined by a space) is still
   found. A window is a card number when its IIN prefix fits its length
   (table below) **and** it passes the Luhn check. The middle digits of every
   such window (all but its first 6 and last 4) become ``*``; separators keep
   their place, so ``4111 1111 1111 1111`` becomes ``4111 11** **** 1111``
   and the text keeps its length. This repeats until no window is left, so
   the result never holds a plausible Luhn-valid 13–19 digit window and
   ``scrub`` is idempotent.

The price of checking every window is that a run of digits that is not a
card number is masked when one of its windows happens to fit the table and
pass Luhn. For uniformly random digits (``bench/pan_guard.py
--false-positives``): 13 digits 2.4 %, 16 digits 21 %, 19 digits 44 %,
25 digits 76 %. EAN-13 barcodes that start 4, 50 or 56–69 and pass Luhn are
masked too (4.9 % of the benchmark's barcode mix). We prefer that to a leaked
card number; a numeric id of 13 or more digits may therefore come out masked,
and two such ids may come out the same.

Not detected: digits other than ASCII 0–9, other separators (dots, tabs,
two spaces in a row), card numbers shorter than 13 digits outside track data.

IIN prefix → lengths (``CARD_BRANDS``; a prefix in two rows takes both rows'
lengths):

==================  ===============================  ===========
brand               prefixes                         lengths
==================  ===============================  ===========
Visa                4                                13, 16, 19
Mastercard          51–55, 2221–2720                 16
American Express    34, 37                           15
Discover            6011, 644–649, 65                16–19
JCB                 3528–3589                        16–19
Diners Club         300–305, 3095, 36, 38–39         14–16
UnionPay            62                               16–19
Maestro             50, 56–69                        13–19
Mir                 2200–2204                        16–19
==================  ===============================  ===========

Forbidden field names (:func:`forbidden_fields`): the name is split into
words at ``_``, ``-``, ``.``, spaces, digits and camelCase humps
(``cardPAN`` → card, PAN; ``track2`` → track); it is forbidden when a word,
compared case-insensitively, is ``pan``, ``track``, ``trackdata``,
``cvv``, ``cvc``, ``cvn``, ``csc``, ``pin`` or ``pinblock``, or when two
neighbouring words are ``card``/``cc`` followed by ``number``/``num``/``no``
(or fused: ``cardnumber``, ``ccnum``…). ``pin`` followed by ``pad`` is the
device (``pin_pad_id``, ``pinPad``) and is allowed, as are ``pinpad``,
``company``, ``spanner``, ``shipping``, ``tracking_id`` and ``panel``: they
only contain the letters, not the word.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, Final

__all__ = [
    "CARD_BRANDS",
    "GUARD",
    "CardBrand",
    "PanGuard",
    "forbidden_fields",
    "is_forbidden_name",
    "luhn_ok",
    "plausible_pan",
    "scrub",
]

MIN_PAN, MAX_PAN = 13, 19
TRACK_REMOVED: Final = "[track data removed]"
VALUE_REMOVED: Final = "[removed]"


@dataclass(frozen=True, slots=True)
class CardBrand:
    """A row of the IIN table: prefixes as inclusive ranges of 1–4 digit numbers."""

    name: str
    prefixes: tuple[tuple[str, str], ...]
    lengths: tuple[int, ...]


CARD_BRANDS: Final[tuple[CardBrand, ...]] = (
    CardBrand("Visa", (("4", "4"),), (13, 16, 19)),
    CardBrand("Mastercard", (("51", "55"), ("2221", "2720")), (16,)),
    CardBrand("American Express", (("34", "34"), ("37", "37")), (15,)),
    CardBrand("Discover", (("6011", "6011"), ("644", "649"), ("65", "65")), (16, 17, 18, 19)),
    CardBrand("JCB", (("3528", "3589"),), (16, 17, 18, 19)),
    CardBrand(
        "Diners Club", (("300", "305"), ("3095", "3095"), ("36", "36"), ("38", "39")), (14, 15, 16)
    ),
    CardBrand("UnionPay", (("62", "62"),), (16, 17, 18, 19)),
    CardBrand("Maestro", (("50", "50"), ("56", "69")), (13, 14, 15, 16, 17, 18, 19)),
    CardBrand("Mir", (("2200", "2204"),), (16, 17, 18, 19)),
)


def _length_masks() -> list[int]:
    """For each 4-digit prefix 0000–9999, a bit mask of the PAN lengths it allows."""
    masks = [0] * 10_000
    for brand in CARD_BRANDS:
        bits = 0
        for length in brand.lengths:
            bits |= 1 << length
        for lo, hi in brand.prefixes:
            scale = 10 ** (4 - len(lo))
            for p4 in range(int(lo) * scale, (int(hi) + 1) * scale):
                masks[p4] |= bits
    return masks


_LENGTHS: Final = _length_masks()
_DOUBLED: Final = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_ok(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        total += _DOUBLED[d] if i & 1 else d
    return total % 10 == 0


def plausible_pan(digits: str) -> bool:
    """True when the IIN table allows this prefix with this length (no Luhn check)."""
    n = len(digits)
    return MIN_PAN <= n <= MAX_PAN and bool(_LENGTHS[int(digits[:4])] >> n & 1)


# --- finding card numbers ---------------------------------------------------------

# Cheap test first: 13 digits, single spaces or dashes allowed between them. The
# lookahead drops most starting points of ordinary lines (timestamps) at once.
_PREFILTER: Final = re.compile(r"[0-9](?=[0-9 -]{12})(?:[ -]?[0-9]){12}")
# The same from the start of a digit run, as long as it goes.
_CANDIDATE: Final = re.compile(r"(?<![0-9])[0-9](?=[0-9 -]{12})(?:[ -]?[0-9]){12,}")
_SEPARATORS: Final = str.maketrans("", "", " -")

_TRACK1: Final = re.compile(
    r"%?[Bb][0-9](?: ?[0-9]){11,18}\^[^^\r\n]{0,26}\^[^?\s\"'<>{}\[\],;]{0,79}\??"
)
_TRACK2: Final = re.compile(
    r"(?P<ss>;?)(?<![0-9])(?P<digits>[0-9]{12,})(?P<fs>[=Dd])(?P<rest>[0-9]{4,40})"
    r"(?:[Ff]?\?|[Ff])?"
)

# Where a sensitive key may be: one of the words, in any case, inside a token.
_SENSITIVE: Final = re.compile(r"[pPtTcC](?i:an|rack|vv|vc|vn|sc|in|ard)")
# A key (optionally quoted) at a given position, then = or :, then a value.
_KEYED_VALUE: Final = re.compile(
    r"(?P<q>[\"']?)(?P<key>[A-Za-z0-9_.\-]+)(?P=q)(?P<sep>\s*[:=]\s*)"
    r"(?P<val>\"(?:[^\"\\\r\n]|\\.)*\"|'[^'\r\n]*'|[^\s,;&\"'<>(){}\[\]]+)"
)
_KEY_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_HAS_DIGIT: Final = re.compile(r"[0-9]")


def _pan_windows(digits: str) -> list[tuple[int, int]]:
    """Every [start, end) window of 13–19 digits that fits the IIN table and passes Luhn."""
    n = len(digits)
    starts = [a for a in range(n - MIN_PAN + 1) if _LENGTHS[int(digits[a : a + 4])]]
    if not starts:
        return []
    # Luhn sums of prefixes under both parities: a window's sum is a difference.
    even = [0] * (n + 1)  # digits at even indexes undoubled
    odd = [0] * (n + 1)  # digits at odd indexes undoubled
    for j, ch in enumerate(digits):
        d = ord(ch) - 48
        if j & 1:
            even[j + 1], odd[j + 1] = even[j] + _DOUBLED[d], odd[j] + d
        else:
            even[j + 1], odd[j + 1] = even[j] + d, odd[j] + _DOUBLED[d]
    found: list[tuple[int, int]] = []
    for a in starts:
        lengths = _LENGTHS[int(digits[a : a + 4])]
        for length in range(MIN_PAN, min(MAX_PAN, n - a) + 1):
            if lengths >> length & 1:
                b = a + length
                sums = even if (b - 1) & 1 == 0 else odd  # the last digit is never doubled
                if (sums[b] - sums[a]) % 10 == 0:
                    found.append((a, b))
    return found


def _count_items(windows: list[tuple[int, int]], bounds: set[int]) -> int:
    """How many card numbers the windows stand for: non-overlapping ones, preferring
    windows that start and end at a separator or the run's ends, then longer ones."""

    def preference(w: tuple[int, int]) -> tuple[bool, int, int]:
        return (not (w[0] in bounds and w[1] in bounds), w[0] - w[1], w[0])

    taken: list[tuple[int, int]] = []
    for a, b in sorted(windows, key=preference):
        if all(b <= ta or a >= tb for ta, tb in taken):
            taken.append((a, b))
    return len(taken)


def _mask_pans(text: str, pos: int) -> tuple[str, int]:
    chars: list[str] | None = None
    count = 0
    for m in _CANDIDATE.finditer(text, pos):
        run = m.group()
        digits = run.translate(_SEPARATORS)
        windows = _pan_windows(digits)
        if not windows:
            continue
        positions: list[int] = []  # text index of each digit
        bounds = {0, len(digits)}  # digit indexes that follow a separator
        for i, ch in enumerate(run):
            if ch == " " or ch == "-":
                bounds.add(len(positions))
            else:
                positions.append(m.start() + i)
        if chars is None:
            chars = list(text)
        for a, b in windows:
            for k in range(a + 6, b - 4):
                chars[positions[k]] = "*"
        count += _count_items(windows, bounds)
    return ("".join(chars), count) if chars is not None else (text, 0)


def _wipe_track1(m: re.Match[str]) -> str | None:
    return TRACK_REMOVED


def _wipe_track2(m: re.Match[str]) -> str | None:
    digits = m["digits"]
    if m["ss"] and m["fs"] == "=":
        start: int | None = 0
    else:
        start = None
        if len(m["rest"]) >= 7:
            for length in range(MAX_PAN, 11, -1):
                if length <= len(digits) and luhn_ok(digits[-length:]):
                    start = len(digits) - length
                    break
    if start is None:
        return None
    if start == 0:
        return TRACK_REMOVED
    return (m["ss"] or "") + digits[:start] + TRACK_REMOVED


def _wipe_keyed_values(text: str) -> tuple[str, int]:
    """Wipe the values of keys that are forbidden field names, when they hold a digit."""
    parts: list[str] = []
    done = 0  # text before this index is in parts
    count = 0
    for word in _SENSITIVE.finditer(text):
        if word.start() < done:
            continue
        start = word.start()
        while start > 0 and text[start - 1] in _KEY_CHARS:
            start -= 1
        m = None
        if start > 0 and text[start - 1] in "\"'":
            m = _KEYED_VALUE.match(text, start - 1)
        if m is None or not m["q"]:
            m = _KEYED_VALUE.match(text, start)
        if m is None or m.end("key") < word.end():
            continue
        val = m["val"]
        if not is_forbidden_name(m["key"]) or _HAS_DIGIT.search(val) is None:
            continue
        if val[0] in "\"'":
            new = val[0] + VALUE_REMOVED + val[0]
        elif m["q"] == '"':
            new = '"' + VALUE_REMOVED + '"'  # a JSON number: keep the document JSON
        else:
            new = VALUE_REMOVED
        parts.append(text[done : m.start("val")])
        parts.append(new)
        done = m.end()
        count += 1
    if not count:
        return text, 0
    parts.append(text[done:])
    return "".join(parts), count


def _replace(
    pattern: re.Pattern[str], repl: Callable[[re.Match[str]], str | None], text: str, pos: int
) -> tuple[str, int]:
    """Like ``pattern.subn`` from ``pos``; ``repl`` answers None to leave a match alone."""
    parts: list[str] = []
    done = 0
    for m in pattern.finditer(text, pos):
        new = repl(m)
        if new is not None:
            parts.append(text[done : m.start()])
            parts.append(new)
            done = m.end()
    if not parts:
        return text, 0
    parts.append(text[done:])
    return "".join(parts), len(parts) // 2


def scrub(text: str) -> tuple[str, int]:
    """Wipe track data and sensitive key values, mask card numbers; return the text
    and how many items were wiped or masked. Pure; never raises for a ``str``.

    Passes repeat until one changes nothing, so ``scrub`` is idempotent: masking
    can leave a window of kept digits and their neighbours that fits the rules
    again. Every pass that changes something removes digits, so this ends.
    """
    total = 0
    while True:
        text, count = _scrub_pass(text)
        if not count:
            return text, total
        total += count


def _scrub_pass(text: str) -> tuple[str, int]:
    run = _PREFILTER.search(text)  # the first digit run of 13 or more: none before it
    lowered = text.lower()
    has_key = (
        "pan" in lowered
        or "pin" in lowered
        or "card" in lowered
        or "cv" in lowered
        or "csc" in lowered
        or "track" in lowered
    )
    has_track1 = "^" in text
    has_sentinel = ";" in text
    if run is None and not (has_key or has_track1 or has_sentinel):
        return text, 0
    count = 0
    first = 0 if run is None else run.start()
    if has_track1:
        text, n = _replace(_TRACK1, _wipe_track1, text, 0)
        count += n
    if has_sentinel or run is not None:  # a 12-digit PAN is track data only after a ';'
        text, n = _replace(_TRACK2, _wipe_track2, text, 0 if has_sentinel or count else first)
        count += n
    if has_key:
        text, n = _wipe_keyed_values(text)
        count += n
    if run is not None:
        text, n = _mask_pans(text, 0 if count else first)
        count += n
    return text, count


# --- forbidden field names --------------------------------------------------------

_WORDS: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+")
_FORBIDDEN_WORDS: Final = frozenset(
    {
        "pan",
        "track",
        "trackdata",
        "cvv",
        "cvc",
        "cvn",
        "csc",
        "pin",
        "pinblock",
        "cardnumber",
        "cardnum",
        "cardno",
        "ccnumber",
        "ccnum",
        "ccno",
        "pannumber",
    }
)
_CARD_WORDS: Final = frozenset({"card", "cc"})
_NUMBER_WORDS: Final = frozenset({"number", "num", "no", "nr"})


def is_forbidden_name(name: str) -> bool:
    """True when a field name says PAN, track data, CVV/CVC or PIN (see the module doc)."""
    words = [w.lower() for w in _WORDS.findall(name)]
    for i, word in enumerate(words):
        following = words[i + 1] if i + 1 < len(words) else ""
        if word == "pin" and following == "pad":
            continue
        if word in _FORBIDDEN_WORDS:
            return True
        if word in _CARD_WORDS and following in _NUMBER_WORDS:
            return True
    return False


def forbidden_fields(names: Iterable[str]) -> list[str]:
    """The names (in the order given) that must be refused: they say pan/track/cvv/pin."""
    return [name for name in names if is_forbidden_name(name)]


# --- the counting guard -----------------------------------------------------------

_MAX_DEPTH: Final = 16


class PanGuard:
    """:func:`scrub` and :func:`forbidden_fields` with thread-safe counters.

    ``masked_total`` counts every item wiped or masked by :meth:`scrub`,
    :meth:`scrub_value` and the structlog processor; ``refused_total`` counts
    the calls of :meth:`forbidden_fields` that found a forbidden name (one per
    refused request).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._masked = 0
        self._refused = 0

    @property
    def masked_total(self) -> int:
        return self._masked

    @property
    def refused_total(self) -> int:
        return self._refused

    def counts(self) -> dict[str, int]:
        """Both counters, read together (for a status report)."""
        with self._lock:
            return {"masked_total": self._masked, "refused_total": self._refused}

    def _add_masked(self, n: int) -> None:
        if n:
            with self._lock:
                self._masked += n

    def scrub(self, text: str) -> tuple[str, int]:
        """:func:`scrub`, counted."""
        out, n = scrub(text)
        self._add_masked(n)
        return out, n

    def scrub_value(self, value: object) -> tuple[object, int]:
        """Scrub every string in a value, through dicts (keys too), lists, tuples and
        sets; bytes as Latin-1; large numbers and other objects by their ``repr`` (an
        object whose ``repr`` needs masking is replaced by the masked string)."""
        out, n = _scrub_any(value, 0)
        self._add_masked(n)
        return out, n

    def forbidden_fields(self, names: Iterable[str]) -> list[str]:
        """:func:`forbidden_fields`; a non-empty answer counts one refusal."""
        found = forbidden_fields(names)
        if found:
            with self._lock:
                self._refused += 1
        return found

    def process_log_event(
        self, logger: object, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """A structlog processor: scrubs every value (and nested string) of the event.
        Put it after ``format_exc_info`` (so tracebacks are text) and before the renderer."""
        total = 0
        for key, value in list(event_dict.items()):
            new, n = _scrub_any(value, 0)
            if n:
                event_dict[key] = new
                total += n
        self._add_masked(total)
        return event_dict


def _scrub_any(value: object, depth: int) -> tuple[object, int]:
    if isinstance(value, str):
        return scrub(value)
    if value is None or isinstance(value, bool):
        return value, 0
    if isinstance(value, int | float):
        if -1e11 < value < 1e11:
            return value, 0
        text, n = scrub(repr(value))
        return (text if n else value), n
    if isinstance(value, bytes | bytearray):
        text, n = scrub(bytes(value).decode("latin-1"))
        return (text.encode("latin-1") if n else value), n
    if depth >= _MAX_DEPTH:
        text, n = scrub(repr(value))
        return (text if n else value), n
    if isinstance(value, Mapping):
        total = 0
        items = []
        for k, v in value.items():
            k2, n1 = _scrub_any(k, depth + 1)
            v2, n2 = _scrub_any(v, depth + 1)
            items.append((k2, v2))
            total += n1 + n2
        return (dict(items) if total else value), total
    if isinstance(value, list | tuple | set | frozenset):
        total = 0
        elements = []
        for v in value:
            v2, n = _scrub_any(v, depth + 1)
            elements.append(v2)
            total += n
        if not total:
            return value, 0
        if isinstance(value, list):
            return elements, total
        if isinstance(value, tuple):
            return tuple(elements), total
        return (frozenset(elements) if isinstance(value, frozenset) else set(elements)), total
    text, n = scrub(repr(value))
    return (text if n else value), n


GUARD: Final = PanGuard()
"""The agent's guard: the API, the log tailer and the agent's own logs count here."""
