"""Sending one alert through one channel, and what a failed attempt means.

Each channel (:mod:`.webhook`, :mod:`.mail`) maps its library's exceptions to
one error at its boundary::

    DeliveryError(Exception)    the alert was not delivered
        .retry = True           try again later: receiver down or busy, a 5xx,
                                408/429, a timeout, a network or TLS error
        .retry = False          give up now: the receiver refuses this alert
                                (a 4xx, an SMTP 5xx reply to the message)

The worker (:mod:`.service`) turns a retryable error into a later attempt
after :func:`backoff_s`, and gives up when the alert is too old.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Protocol

from .outbox import Alert

#: the exponent stops growing here (2**60 times any initial delay is past any maximum)
_MAX_DOUBLINGS = 60


class DeliveryError(Exception):
    """An attempt to deliver an alert failed; ``retry`` says whether trying again may help."""

    def __init__(self, message: str, *, retry: bool, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry = retry
        #: the receiver asked for this pause (an HTTP ``Retry-After``)
        self.retry_after_s = retry_after_s


class Sender(Protocol):
    """One channel's way of delivering an alert."""

    @property
    def channel(self) -> str:
        """The channel's name in the outbox: ``webhook`` or ``email``."""

    async def start(self) -> None:
        """Acquire what sending needs (an HTTP session); called once before any send."""

    async def send(self, alert: Alert) -> str | None:
        """Deliver ``alert`` or raise :class:`DeliveryError`; may return a note to keep."""

    async def close(self) -> None:
        """Release what :meth:`start` acquired."""


def backoff_s(
    failures: int,
    initial_s: float,
    max_s: float,
    rand: Callable[[], float] = random.random,
) -> float:
    """The pause after the ``failures``-th failed attempt (1, 2, ...).

    Doubles from ``initial_s`` with each failure, plus up to as much again at
    random (jitter), and never more than ``max_s``: failure 1 waits between
    ``initial_s`` and twice that, failure 2 between twice and four times, ...
    """
    base = initial_s * 2.0 ** min(max(failures, 1) - 1, _MAX_DOUBLINGS)
    return min(max_s, base * (1.0 + rand()))
