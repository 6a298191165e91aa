"""NUT's network protocol (upsd, TCP port 3493), pure: request lines out, replies in.

No I/O here; :mod:`agent.devices.nut_ups` moves the bytes. Facts from NUT's
``docs/net-protocol.txt``, checked against Debian's upsd 2.8.0:

- Every request and reply is one line ending in LF. Words are separated by
  spaces; a word may be put in double quotes, and a backslash makes the next
  character literal (``"Backup \\"650\\" pro"`` is ``Backup "650" pro``).
  upsd reads requests with the same rules, so a UPS name or a password with
  a space or a quote is sent quoted (:func:`encode_request`).
- ``USERNAME``/``PASSWORD``/``LOGOUT`` → ``OK [text]``.
- ``LIST <what...>`` → ``BEGIN LIST <what...>``, one line per item that
  starts with the same words (``LIST VAR ups`` → ``VAR ups <name> "<value>"``,
  ``LIST UPS`` → ``UPS <name> "<description>"``), ``END LIST <what...>``.
- Any request may be answered ``ERR <CODE> [detail]`` instead: that is an
  answer (:class:`Err`), not a protocol error. The codes this agent acts on
  are named in :mod:`agent.devices.nut_ups`.

:class:`ReplyReader` collects the reply to one request from bytes fed in any
pieces; bytes after the reply are kept in ``rest``. Whatever arrives, it
returns a reply, asks for more, or raises :class:`NutError` — never another
exception::

    DeviceProtocolError
     └── NutError    a line that is not NUT's protocol (or too long, or too many)

:func:`split_hostport` reads the config's ``host[:port]`` (ValueError if it is not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from .base import DeviceProtocolError

DEFAULT_PORT: Final = 3493

#: upsd's values are at most 256 bytes; a longer line is not upsd talking.
MAX_LINE: Final = 8192
#: A UPS has a few hundred variables at most.
MAX_ITEMS: Final = 4096

_PLAIN_FORBIDDEN: Final = frozenset(' "\\\t')


class NutError(DeviceProtocolError):
    """upsd's reply does not follow NUT's network protocol."""


@dataclass(frozen=True, slots=True)
class Ok:
    """``OK [text]``."""

    text: str = ""


@dataclass(frozen=True, slots=True)
class Err:
    """``ERR <code> [detail]``: upsd refused the request, and says why."""

    code: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ListReply:
    """The items of ``BEGIN LIST … END LIST``: each the words after the list's prefix."""

    items: tuple[tuple[str, ...], ...]


Reply = Ok | Err | ListReply


def quote(word: str) -> str:
    """``word`` as one word on the wire: bare if it can be, else quoted and escaped."""
    if word and word.isprintable() and not _PLAIN_FORBIDDEN.intersection(word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encode_request(*words: str) -> bytes:
    """One request line; ValueError for a word with a line break or another control character."""
    for word in words:
        if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in word):
            raise ValueError(f"a NUT request word cannot contain control characters: {word!r}")
    return (" ".join(quote(w) for w in words) + "\n").encode()


def split_words(line: str) -> list[str]:
    """The words of one reply line (quotes and backslash escapes resolved)."""
    words: list[str] = []
    current: list[str] = []
    in_word = in_quotes = escaped = False
    for ch in line:
        if escaped:
            current.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = in_word = True
        elif ch == '"':
            in_quotes = not in_quotes
            in_word = True
        elif ch in " \t" and not in_quotes:
            if in_word:
                words.append("".join(current))
                current.clear()
                in_word = False
        else:
            current.append(ch)
            in_word = True
    if escaped:
        raise NutError(f"line ends in a lone backslash: {_short(line)}")
    if in_quotes:
        raise NutError(f"unterminated quote: {_short(line)}")
    if in_word:
        words.append("".join(current))
    return words


class ReplyReader:
    """Collects upsd's reply to one request; feed it bytes as they come."""

    def __init__(self, request: Sequence[str]) -> None:
        self.request = tuple(request)
        # the words after LIST: "BEGIN LIST" and "END LIST" repeat them, and each
        # item line starts with them (LIST VAR ups → VAR ups <name> <value>)
        self._list = self.request[1:] if self.request[:1] == ("LIST",) else None
        self._buffer = bytearray()
        self._begun = False
        self._items: list[tuple[str, ...]] = []
        self.reply: Reply | None = None
        #: bytes that arrived after the reply was complete
        self.rest = b""

    def feed(self, data: bytes) -> Reply | None:
        """The reply once complete, else None; raises NutError for anything else."""
        if self.reply is not None:
            self.rest += data
            return self.reply
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            if end > MAX_LINE:
                break
            line = bytes(self._buffer[:end]).rstrip(b"\r").decode("utf-8", "replace")
            del self._buffer[: end + 1]
            reply = self._line(line)
            if reply is not None:
                self.reply = reply
                self.rest = bytes(self._buffer)
                self._buffer.clear()
                return reply
        if len(self._buffer) > MAX_LINE:
            raise NutError(f"a reply line longer than {MAX_LINE} bytes")
        return None

    def _line(self, line: str) -> Reply | None:
        words = split_words(line)
        if not words:
            raise NutError("an empty reply line")
        if words[0] == "ERR":
            if len(words) < 2:
                raise NutError("ERR without a code")
            return Err(words[1], " ".join(words[2:]))
        what = self._list
        if what is None:
            if words[0] == "OK":
                return Ok(" ".join(words[1:]))
            raise NutError(f"expected OK or ERR, got {_short(line)}")
        if not self._begun:
            if words != ["BEGIN", "LIST", *what]:
                raise NutError(f"expected BEGIN LIST {' '.join(what)}, got {_short(line)}")
            self._begun = True
            return None
        if words == ["END", "LIST", *what]:
            return ListReply(tuple(self._items))
        if tuple(words[: len(what)]) != what:
            raise NutError(f"unexpected line in LIST {' '.join(what)}: {_short(line)}")
        if len(self._items) >= MAX_ITEMS:
            raise NutError(f"more than {MAX_ITEMS} items in LIST {' '.join(what)}")
        self._items.append(tuple(words[len(what) :]))
        return None


def list_vars(reply: ListReply) -> Mapping[str, str]:
    """``LIST VAR``'s items as {variable: value}."""
    found: dict[str, str] = {}
    for item in reply.items:
        if len(item) != 2:
            raise NutError(f"a VAR line needs a name and a value, got {len(item)} words")
        found[item[0]] = item[1]
    return found


def list_upses(reply: ListReply) -> tuple[str, ...]:
    """``LIST UPS``'s UPS names, in upsd's order."""
    for item in reply.items:
        if len(item) != 2:
            raise NutError(f"a UPS line needs a name and a description, got {len(item)} words")
    return tuple(item[0] for item in reply.items)


def _short(line: str) -> str:
    return repr(line if len(line) <= 60 else line[:57] + "...")


def split_hostport(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address → (host, port)."""
    host, colon, port_text = text, "", ""
    if text.startswith("["):
        host, bracket, after = text[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise ValueError("an IPv6 address goes in brackets: [::1]:3493")
        colon, port_text = after[:1], after[1:]
    elif text.count(":") == 1:
        host, colon, port_text = text.partition(":")
    if "@" in host:
        raise ValueError("give the UPS's name in the ups key, not as ups@host")
    if not host or any(ch.isspace() for ch in host):
        raise ValueError("expected host or host:port")
    if not colon:
        return host, DEFAULT_PORT
    digits = port_text.isascii() and port_text.isdigit() and len(port_text) <= 5
    number = int(port_text) if digits else 0
    if not 1 <= number <= 65535:
        raise ValueError(f"the port must be a number 1–65535, got {port_text!r}")
    return host, number
