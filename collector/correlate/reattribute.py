"""Placeholder wired into collector.cli; replaced by its owner in issue 6."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    """Add this command's subparser to ``commands`` (it sets ``run``)."""
    del commands


def run(args: argparse.Namespace) -> int:
    del args
    return 2
