"""NUT's network protocol, pure: words, requests and replies recorded from Debian's upsd 2.8.0."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.devices.nut_net import (
    MAX_ITEMS,
    MAX_LINE,
    Err,
    ListReply,
    NutError,
    Ok,
    Reply,
    ReplyReader,
    encode_request,
    list_upses,
    list_vars,
    quote,
    split_words,
)

# `LIST VAR esc` and `LIST UPS` as upsd 2.8.0 sent them for a dummy-ups whose
# .dev file says: ups.model: "Backup \"650\" pro \\x"
LIST_VAR = rb"""BEGIN LIST VAR esc
VAR esc device.mfr "Dummy Manufacturer"
VAR esc device.model "Backup \\\"650\\\" pro \\\\x"
VAR esc device.type "ups"
VAR esc driver.name "dummy-ups"
VAR esc ups.mfr "Dummy Manufacturer"
VAR esc ups.model "Backup \"650\" pro \\x"
VAR esc ups.status "OL"
END LIST VAR esc
"""
LIST_UPS = rb"""BEGIN LIST UPS
UPS esc "quote \" and backslash \\ here"
UPS test "a test ups"
UPS other "Description unavailable"
END LIST UPS
"""
VARS = {
    "device.mfr": "Dummy Manufacturer",
    "device.model": 'Backup \\"650\\" pro \\\\x',  # dummy-ups escapes this one twice
    "device.type": "ups",
    "driver.name": "dummy-ups",
    "ups.mfr": "Dummy Manufacturer",
    "ups.model": 'Backup "650" pro \\x',
    "ups.status": "OL",
}


Feed = Callable[[tuple[str, ...], bytes], Reply | None]


def feed_whole(request: tuple[str, ...], data: bytes) -> Reply | None:
    return ReplyReader(request).feed(data)


def feed_bytewise(request: tuple[str, ...], data: bytes) -> Reply | None:
    reader = ReplyReader(request)
    reply = None
    for i in range(len(data)):
        reply = reader.feed(data[i : i + 1])
        if reply is not None:
            break
    return reply


FEEDS = [feed_whole, feed_bytewise]


# ── words ───────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('VAR ups ups.status "OB LB"', ["VAR", "ups", "ups.status", "OB LB"]),
        ("a  \t b", ["a", "b"]),
        ('x ""', ["x", ""]),
        (r'"a \"b\" \\c"', ['a "b" \\c']),
        (r"a\ b", ["a b"]),
        ("", []),
    ],
)
def test_split_words(line: str, words: list[str]) -> None:
    assert split_words(line) == words


@pytest.mark.parametrize("line", ['VAR u v "open', "VAR u v trailing\\"])
def test_split_words_rejects_an_open_quote_or_escape(line: str) -> None:
    with pytest.raises(NutError):
        split_words(line)


def test_encode_request_quotes_what_needs_it() -> None:
    assert encode_request("LIST", "VAR", "ups") == b"LIST VAR ups\n"
    assert encode_request("PASSWORD", 'pa ss"\\') == b'PASSWORD "pa ss\\"\\\\"\n'
    assert encode_request("USERNAME", "") == b'USERNAME ""\n'


@pytest.mark.parametrize("word", ["a\nLOGOUT", "a\rb", "nul\0"])
def test_encode_request_refuses_line_breaks(word: str) -> None:
    with pytest.raises(ValueError, match="control characters"):
        encode_request("PASSWORD", word)


_WORD = st.text(st.characters(blacklist_categories=("Cc", "Cs")))


@given(st.lists(_WORD, min_size=1))
def test_quoted_words_split_back(words: list[str]) -> None:
    line = encode_request(*words).decode()
    assert line.endswith("\n")
    assert split_words(line[:-1]) == words
    assert split_words(" ".join(quote(w) for w in words)) == words


# ── replies ─────────────────────────────────────────────────────────────────


@pytest.mark.parametrize("feed", FEEDS)
def test_list_var_recorded(feed: Feed) -> None:
    reply = feed(("LIST", "VAR", "esc"), LIST_VAR)
    assert isinstance(reply, ListReply)
    assert dict(list_vars(reply)) == VARS


@pytest.mark.parametrize("feed", FEEDS)
def test_list_ups_recorded(feed: Feed) -> None:
    reply = feed(("LIST", "UPS"), LIST_UPS)
    assert isinstance(reply, ListReply)
    assert list_upses(reply) == ("esc", "test", "other")
    assert reply.items[0] == ("esc", 'quote " and backslash \\ here')


def test_trailing_bytes_are_kept_apart() -> None:
    reader = ReplyReader(("LIST", "UPS"))
    assert reader.feed(LIST_UPS + b"OK Goodbye\n") == reader.reply
    assert reader.rest == b"OK Goodbye\n"
    assert reader.feed(b"more") == reader.reply
    assert reader.rest == b"OK Goodbye\nmore"


def test_crlf_line_ends_are_accepted() -> None:
    reply = ReplyReader(("LIST", "UPS")).feed(LIST_UPS.replace(b"\n", b"\r\n"))
    assert isinstance(reply, ListReply)
    assert list_upses(reply) == ("esc", "test", "other")


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize(
    ("request_", "data", "reply"),
    [
        (("LIST", "VAR", "nope"), b"ERR UNKNOWN-UPS\n", Err("UNKNOWN-UPS")),
        (("LIST", "VAR", "ups"), b"ERR DATA-STALE\n", Err("DATA-STALE")),
        (("USERNAME", "x"), b"OK\n", Ok("")),
        (("LOGOUT",), b"OK Goodbye\n", Ok("Goodbye")),
        (("USERNAME", "x"), b"ERR ALREADY-SET-USERNAME\n", Err("ALREADY-SET-USERNAME")),
        (("LIST", "UPS"), b"BEGIN LIST UPS\nERR X some detail\n", Err("X", "some detail")),
        (("LIST", "UPS"), b"BEGIN LIST UPS\nEND LIST UPS\n", ListReply(())),
    ],
)
def test_replies(request_: tuple[str, ...], data: bytes, reply: Reply, feed: Feed) -> None:
    assert feed(request_, data) == reply


@pytest.mark.parametrize(
    ("request_", "data", "match"),
    [
        (("LIST", "VAR", "ups"), b"OK\n", "expected BEGIN LIST VAR ups"),
        (("LIST", "VAR", "ups"), b"BEGIN LIST VAR other\n", "expected BEGIN LIST VAR ups"),
        (("LIST", "VAR", "ups"), b'BEGIN LIST VAR ups\nVAR other x "1"\n', "unexpected line"),
        (("LIST", "VAR", "ups"), b"\n", "empty reply line"),
        (("USERNAME", "x"), b"HELLO\n", "expected OK or ERR"),
        (("USERNAME", "x"), b"ERR\n", "ERR without a code"),
        (("USERNAME", "x"), b'OK "open\n', "unterminated quote"),
    ],
)
def test_garbage_is_a_nut_error(request_: tuple[str, ...], data: bytes, match: str) -> None:
    with pytest.raises(NutError, match=match):
        ReplyReader(request_).feed(data)


def test_a_line_without_end_is_refused_when_too_long() -> None:
    reader = ReplyReader(("LIST", "UPS"))
    assert reader.feed(b"x" * MAX_LINE) is None
    with pytest.raises(NutError, match="longer than"):
        reader.feed(b"x")
    with pytest.raises(NutError, match="longer than"):
        ReplyReader(("LIST", "UPS")).feed(b"x" * (MAX_LINE + 1) + b"\n")


def test_too_many_items_are_refused() -> None:
    data = b"BEGIN LIST UPS\n" + b'UPS u ""\n' * (MAX_ITEMS + 1)
    with pytest.raises(NutError, match="more than"):
        ReplyReader(("LIST", "UPS")).feed(data)


def test_items_with_the_wrong_number_of_words() -> None:
    with pytest.raises(NutError, match="a name and a value"):
        list_vars(ListReply((("ups.status",),)))
    with pytest.raises(NutError, match="a name and a description"):
        list_upses(ListReply((("u", "d", "extra"),)))


REQUESTS = [("LIST", "VAR", "ups"), ("LIST", "UPS"), ("USERNAME", "u")]


@given(st.sampled_from(REQUESTS), st.binary(max_size=400))
def test_garbage_invariant_whole(request_: tuple[str, ...], data: bytes) -> None:
    try:
        reply = ReplyReader(request_).feed(data)
    except NutError:
        return
    assert reply is None or isinstance(reply, Ok | Err | ListReply)


@given(st.sampled_from(REQUESTS), st.binary(max_size=400))
def test_garbage_invariant_bytewise(request_: tuple[str, ...], data: bytes) -> None:
    reader = ReplyReader(request_)
    try:
        for i in range(len(data)):
            reader.feed(data[i : i + 1])
    except NutError:
        return


_LINE = st.one_of(
    st.sampled_from(
        [b"BEGIN LIST VAR ups", b"END LIST VAR ups", b'VAR ups ups.status "OB LB"', b"ERR X"]
    ),
    st.binary(max_size=40).map(lambda b: b"VAR ups " + b),
)


@given(st.lists(_LINE, max_size=8))
def test_garbage_invariant_near_misses(lines: list[bytes]) -> None:
    try:
        reply = ReplyReader(("LIST", "VAR", "ups")).feed(b"\n".join(lines) + b"\n")
        if isinstance(reply, ListReply):
            list_vars(reply)
    except NutError:
        return
