"""Placeholder wired into collector.app.create_app; replaced by its owner in issue 6."""

from __future__ import annotations

from aiohttp import web


def setup(app: web.Application) -> None:
    """Add this part's routes and background tasks to the collector's app."""
