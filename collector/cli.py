"""``posmon-collector``: run the collector, create tokens, recompute causes, simulate a fleet.

    posmon-collector serve --db PATH --listen HOST:PORT [--config FILE] [...]
    posmon-collector token create --db PATH --terminal ID --store ID
    posmon-collector token create --db PATH --viewer NAME
    posmon-collector reattribute --db PATH --since WHEN [--until WHEN]
    posmon-collector simulate-fleet --url URL --db PATH --scenario FILE [...]

Exit status: 0 done; 1 the database or the network failed; 2 bad usage or
settings (the message on stderr names the flag or the file and key).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import ssl
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import structlog
from aiohttp import web

from agent.logs import configure_logging

from .app import create_app, create_runner
from .command import CommandError
from .correlate import reattribute
from .fleetsim import command as fleetsim_command
from .settings import (
    DEFAULT_LISTEN,
    LOG_FORMATS,
    LOG_LEVELS,
    OVERRIDABLE,
    CollectorSettings,
    SettingsError,
    flag_of,
    load_settings,
)
from .storage import StorageError, storage_for

PROG = "posmon-collector"
EXIT_FAILED = 1
EXIT_USAGE = 2

log = structlog.get_logger("collector")


class _Fail(Exception):
    """A fatal error for the user: printed on stderr, then exit with ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def _settings_flags(parser: argparse.ArgumentParser, *, server: bool) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML settings file (see deploy/collector.toml); flags given here override it",
    )
    parser.add_argument(
        "--db", metavar="PATH", help="SQLite database file (created if missing); required"
    )
    if not server:
        return
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help=f"address to listen on; port 0 picks a free port (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--max-body-bytes", metavar="N", help="largest request body accepted (default 8 MiB)"
    )
    parser.add_argument(
        "--max-events-per-report", metavar="N", help="most events in one report (default 5000)"
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="serve HTTPS with this certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="private key of --tls-cert")
    parser.add_argument("--log-level", metavar="LEVEL", help=f"one of {', '.join(LOG_LEVELS)}")
    parser.add_argument(
        "--log-format",
        metavar="FORMAT",
        help=f"one of {', '.join(LOG_FORMATS)} (auto: JSON unless stdout is a terminal)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "posmon's collector: receives the agents' reports, names the cause of every "
            "failed payment, groups them into incidents and sends alerts, and answers the "
            "query API, /metrics and the posmon CLI."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the collector's HTTP server",
        description=(
            "Run the collector: accept agents' reports on POST /api/v1/reports, attribute "
            "failed payments and keep incidents in the background, deliver alerts, and answer "
            "the query API under /api/v1 (viewer tokens), GET /api/v1/openapi.json, "
            "GET /metrics and GET /healthz. Logs collector_listening with the URL once bound. "
            "Stops cleanly on SIGTERM or SIGINT."
        ),
    )
    _settings_flags(serve, server=True)

    token = commands.add_parser(
        "token",
        help="manage access tokens",
        description="Manage the bearer tokens agents and viewers present.",
    )
    token.set_defaults(help_of=token)
    token_commands = token.add_subparsers(dest="token_command", metavar="COMMAND")
    create = token_commands.add_parser(
        "create",
        help="create a token and print it once",
        description=(
            "Create a token and print it on the last line of stdout. It is stored hashed and "
            "cannot be shown again. An agent token (--terminal and --store) uploads that "
            "terminal's reports only; a viewer token (--viewer) reads."
        ),
    )
    _settings_flags(create, server=False)
    who = create.add_mutually_exclusive_group(required=True)
    who.add_argument("--terminal", metavar="ID", help="agent token for this terminal id")
    who.add_argument("--viewer", metavar="NAME", help="viewer token for this person or system")
    create.add_argument("--store", metavar="ID", help="store id of --terminal (required with it)")

    # commands that live in their own modules: each adds its parser and sets
    # ``run(args) -> int`` (raising SettingsError or CommandError for the user)
    reattribute.add_parser(commands)
    fleetsim_command.add_parser(commands)
    return parser


def _load(args: argparse.Namespace) -> CollectorSettings:
    overrides = {name: getattr(args, name, None) for name in OVERRIDABLE}
    return load_settings(config=args.config, overrides=overrides)


def _ssl_context(settings: CollectorSettings) -> ssl.SSLContext | None:
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(settings.tls_cert, settings.tls_key)
    except (ssl.SSLError, OSError) as err:
        raise _Fail(
            f"{flag_of('tls_cert')}/{flag_of('tls_key')}: cannot load "
            f"{settings.tls_cert} with {settings.tls_key}: {err}",
            EXIT_USAGE,
        ) from None
    return context


def _url(scheme: str, host: str, port: int) -> str:
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


@contextlib.contextmanager
def _stop_signals() -> Iterator[asyncio.Future[str]]:
    """A future set to the name of the first SIGTERM/SIGINT while the block runs."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[str] = loop.create_future()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:

        def handler(name: str = sig.name) -> None:
            if not received.done():
                received.set_result(name)

        loop.add_signal_handler(sig, handler)
    try:
        yield received
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def serve(settings: CollectorSettings) -> None:
    """Run until SIGTERM/SIGINT. Raises _Fail when the database or the address fails."""
    context = _ssl_context(settings)
    runner = create_runner(create_app(settings, storage_for(settings.db)))
    try:
        await runner.setup()  # opens the storage
    except StorageError as err:
        raise _Fail(f"cannot open the database: {err}", EXIT_FAILED) from None
    try:
        site = web.TCPSite(runner, settings.listen_host, settings.listen_port, ssl_context=context)
        try:
            await site.start()
        except OSError as err:
            where = f"{settings.listen_host}:{settings.listen_port}"
            raise _Fail(f"cannot listen on {where}: {err.strerror or err}", EXIT_FAILED) from None
        port = runner.addresses[0][1]
        url = _url("https" if context else "http", settings.listen_host, port)
        with _stop_signals() as stop:  # installed before anyone learns the URL
            log.info("collector_listening", url=url, db=settings.db)
            name = await stop
        log.info("collector_stopping", signal=name)
    finally:
        await runner.cleanup()  # closes the storage after pending writes
    log.info("collector_stopped")


async def create_token(settings: CollectorSettings, args: argparse.Namespace) -> str:
    storage = storage_for(settings.db)
    try:
        await storage.open()
    except StorageError as err:
        raise _Fail(f"cannot open the database: {err}", EXIT_FAILED) from None
    try:
        if args.viewer is not None:
            return await storage.create_token("viewer", name=args.viewer)
        return await storage.create_token("agent", terminal_id=args.terminal, store_id=args.store)
    except ValueError as err:
        raise _Fail(f"token create: {err}", EXIT_USAGE) from None
    except StorageError as err:
        raise _Fail(f"cannot store the token: {err}", EXIT_FAILED) from None
    finally:
        await storage.close()


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.command == "serve":
        settings = _load(args)
        configure_logging(settings.log_level, settings.log_format)
        asyncio.run(serve(settings))
        return 0
    if args.command == "token" and args.token_command == "create":
        if args.terminal is not None and args.store is None:
            raise _Fail("token create: --terminal needs --store", EXIT_USAGE)
        if args.viewer is not None and args.store is not None:
            raise _Fail("token create: --store goes with --terminal, not --viewer", EXIT_USAGE)
        settings = _load(args)
        configure_logging("warning")  # stdout is for the token
        token = asyncio.run(create_token(settings, args))
        if args.viewer is not None:
            who = f"viewer {args.viewer!r}"
        else:
            who = f"terminal {args.terminal!r} in store {args.store!r}"
        print(f"Token for {who} (shown once; only its hash is stored):")
        print(token)
        return 0
    run = getattr(args, "run", None)
    if run is not None:
        try:
            return int(run(args))
        except CommandError as err:
            raise _Fail(str(err), err.code) from None
    getattr(args, "help_of", parser).print_help(sys.stderr)  # no command given
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(parser, args)
    except SettingsError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except _Fail as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
