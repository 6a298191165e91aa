"""Logging set-up shared by both daemons (configure once, in ``main()``).

JSON lines when stdout is not a terminal (systemd, tests, log shippers), the
console renderer when it is; ISO timestamps in UTC; snake_case event names
with key=value fields. Log on a change of state, not on every poll.

Every event goes through the PAN guard (``agent.pan_guard.GUARD``) just
before it is rendered: card numbers in any value, nested or not, are masked
and track data wiped, and the guard's ``masked_total`` counts them.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog

from .pan_guard import GUARD

LogFormat = Literal["auto", "json", "console"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog for this process; safe to call again (tests do)."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stdout.isatty())
    renderer: structlog.typing.Processor
    if use_json:
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stdout.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            GUARD.process_log_event,  # after the traceback became text, before rendering
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stdout),
        cache_logger_on_first_use=False,
    )
