"""``posmon-agent``: the daemon and the technician's commands on the terminal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sqlite3
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from protocol import AgentInfo, encode_report_raw

from . import __version__
from .config import AgentSettings, ConfigError, load_config
from .logs import configure_logging
from .spool import SpoolError, open_readonly

DEFAULT_CONFIG = "/etc/posmon/agent.toml"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler: Callable[[argparse.Namespace], int] = args.handler
    return handler(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="posmon-agent",
        description="posmon's agent for a POS host or store gateway: records terminal health "
        "and failed payments in a durable spool and uploads them to the collector.",
    )
    parser.add_argument("--version", action="version", version=f"posmon-agent {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help: str) -> Any:
        cmd = sub.add_parser(name, help=help, description=help)
        cmd.add_argument(
            "--config",
            default=DEFAULT_CONFIG,
            metavar="FILE",
            help=f"the agent's TOML config (default {DEFAULT_CONFIG})",
        )
        cmd.set_defaults(handler=handler)
        return cmd

    add("run", _run, "run the agent daemon until SIGTERM or Ctrl-C")
    add(
        "check-config",
        _check_config,
        "validate the config, check the spool and local API port, reach the collector with "
        "the token; exit 0 when everything is ready, 1 otherwise",
    )
    status = add(
        "status",
        _status,
        "show the running agent's state: spool depth, last upload, last error, sources, "
        "payment counts by outcome and the payments in doubt",
    )
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    diagnose = add(
        "diagnose",
        _diagnose,
        "run every configured probe and device check once, now, and name the first failing "
        "hop on the path link → gateway → isp → dns → acquirer and every device in trouble; "
        "needs no collector and no running agent; exit 0 when all is well, 1 when a hop or "
        "a device fails, 2 when the config is bad",
    )
    diagnose.add_argument("--json", action="store_true", help="print JSON for scripts")

    from .sim import SIMULATORS

    simulate = sub.add_parser(
        "simulate",
        help="start a device simulator on a pty and take fault commands on stdin",
        description="Start a device simulator on a pseudo-terminal pair: it prints the device "
        "path (a stable symlink to the pty) and then reads one fault command per line on "
        "stdin (e.g. 'paper_end', 'on_battery', 'signal -95', 'unplug', 'replug', 'ok'); "
        "'help' lists them, 'quit' or end of input stops it.",
    )
    simulate.add_argument("device", choices=sorted(SIMULATORS), help="the device to simulate")
    simulate.add_argument(
        "--link",
        metavar="PATH",
        help="where to put the device's symlink (default /tmp/posmon-sim-DEVICE)",
    )
    simulate.set_defaults(handler=_simulate)
    return parser


def _load(path: str) -> AgentSettings | None:
    try:
        return load_config(path)
    except ConfigError as err:
        print(f"posmon-agent: bad config: {err}", file=sys.stderr)
        return None


# -- run --------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return 1
    configure_logging(settings.log.level, settings.log.format)
    from .daemon import Agent  # the daemon's imports are only needed here

    return asyncio.run(Agent(settings).run())


# -- simulate ---------------------------------------------------------------


def _simulate(args: argparse.Namespace) -> int:
    from .sim import create
    from .sim.pty import serve

    link = Path(args.link or f"/tmp/posmon-sim-{args.device}")
    if link.exists() and not link.is_symlink():
        print(f"posmon-agent: {link} exists and is not a symlink; choose another --link",
              file=sys.stderr)  # fmt: skip
        return 2
    sim = create(args.device, link)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(sim))
    return 0


# -- diagnose ---------------------------------------------------------------


def _diagnose(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return 2
    from .device_report import check_devices, devices_json, render_devices
    from .diagnose import checks_json, diagnose, render, run_checks

    specs, devices = settings.probes.probes, settings.devices
    started = datetime.now(UTC)
    if not args.json:
        longest = max((s.timeout_s for s in specs), default=0.0)
        print(
            f"posmon-agent diagnose: terminal {settings.agent.terminal_id}, store "
            f"{settings.agent.store_id}; {len(specs)} probes (each at most {longest:g} s), "
            f"{len(devices)} devices …",
            flush=True,
        )

    async def both() -> tuple[Any, Any]:
        return await asyncio.gather(run_checks(specs), check_devices(devices))

    probe_checks, device_checks = asyncio.run(both())
    result = diagnose(probe_checks)
    device_trouble = [c for c in device_checks if c.failing]
    if args.json:
        doc = {
            "terminal_id": settings.agent.terminal_id,
            "store_id": settings.agent.store_id,
            "checked_at": started.isoformat(),
            **checks_json(result),
            "devices": devices_json(device_checks),
        }
        print(json.dumps(doc, indent=2))
    else:
        print(render(result))
        if device_checks:
            print("\nDevices:")
            print("\n".join(render_devices(device_checks)))
    return 0 if result.first_failing is None and not device_trouble else 1


# -- status -----------------------------------------------------------------


def _api_url(settings: AgentSettings) -> str | None:
    api = settings.api
    if not api.enabled:
        return None
    if api.port != 0:
        host = f"[{api.host}]" if ":" in api.host else api.host
        return f"http://{host}:{api.port}"
    # Port 0: the agent wrote the port it got into its spool.
    try:
        db = open_readonly(settings.spool.path)
        try:
            row = db.execute("SELECT value FROM meta WHERE key = 'api_url'").fetchone()
        finally:
            db.close()
    except (SpoolError, sqlite3.Error):
        return None
    return None if row is None else str(row[0])


def _status(args: argparse.Namespace) -> int:
    settings = _load(args.config)
    if settings is None:
        return 1
    url = _api_url(settings)
    status: dict[str, Any] | None = None
    problem = "the local API is disabled in the config ([api] enabled = false)"
    if url is not None:
        try:
            with urllib.request.urlopen(url + "/v1/status", timeout=5) as resp:
                status = json.loads(resp.read())
        except (OSError, ValueError) as err:
            problem = f"nothing answers at {url} ({err}); is posmon-agent running?"
    if status is None:
        offline: dict[str, Any] = {
            "running": False,
            "error": problem,
            "spool": _spool_offline(settings),
        }
        payments = _payments_offline(settings)
        if payments is not None:
            offline["payments"] = payments
        if args.json:
            print(json.dumps(offline, indent=2))
        else:
            print(f"posmon-agent is not answering: {problem}")
            print(_spool_line(offline["spool"]))
            if payments is not None:
                print("\n".join(_payment_lines(payments)))
        return 1
    status["running"] = True
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(_render_status(status))
    return 0


def _spool_offline(settings: AgentSettings) -> dict[str, Any]:
    """What the spool file says when the agent is not there to ask."""
    path = settings.spool.path
    if not path.exists():
        return {"path": str(path), "depth": None, "note": "spool file does not exist yet"}
    try:
        db = open_readonly(path)
        try:
            depth = db.execute("SELECT count(*) FROM events").fetchone()[0]
            quarantined = db.execute("SELECT count(*) FROM quarantine").fetchone()[0]
        finally:
            db.close()
    except (SpoolError, sqlite3.Error) as err:
        return {"path": str(path), "depth": None, "note": f"unreadable: {err}"}
    return {"path": str(path), "depth": depth, "quarantined": quarantined}


def _payments_offline(settings: AgentSettings) -> dict[str, Any] | None:
    """Payment counts and payments in doubt, read from the spool file itself."""
    if not settings.spool.path.exists():
        return None
    from .payments.intake import offline_status

    try:
        db = open_readonly(settings.spool.path)
        try:
            bodies = [
                bytes(body)
                for (body,) in db.execute("SELECT body FROM payments WHERE state = 'in_doubt'")
            ]
            counts = dict(
                db.execute("SELECT key, value FROM meta WHERE key LIKE 'payments.count.%'")
            )
        finally:
            db.close()
    except (SpoolError, sqlite3.Error):
        return None  # an older spool without a payment book, or unreadable
    return offline_status(bodies, counts)


def _spool_line(spool: dict[str, Any]) -> str:
    if spool.get("depth") is None:
        return f"spool     {spool['path']}: {spool.get('note', 'unknown')}"
    return (
        f"spool     {spool['path']}: {spool['depth']} events waiting, "
        f"{spool.get('quarantined', 0)} quarantined"
    )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _ago(iso: str | None) -> str:
    if iso is None:
        return "never"
    seconds = (datetime.now(UTC) - datetime.fromisoformat(iso)).total_seconds()
    return f"{iso} ({seconds:.0f} s ago)"


def _render_status(status: dict[str, Any]) -> str:
    agent, spool, uplink = status["agent"], status["spool"], status["uplink"]
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(spool["dropped"].items())) or "none"
    lines = [
        f"posmon-agent {agent['version']}  terminal {agent['terminal_id']}  "
        f"store {agent['store_id']}  (agent id {agent['id']}, pid {agent['pid']}, "
        f"up {agent['uptime_s']:.0f} s)",
        f"spool     {spool['depth']} events waiting ({_size(spool['bytes'])} of "
        f"{_size(spool['max_bytes'])}), {spool['quarantined']} quarantined, dropped: {dropped}",
        f"uplink    {uplink['state']} → {agent['collector']}; last upload "
        f"{_ago(uplink['last_upload_at'])}; {uplink['uploaded_events']} events in "
        f"{uplink['uploads']} uploads",
        f"last error  {uplink['last_error'] or 'none'}"
        + (f" at {uplink['last_error_at']}" if uplink["last_error_at"] else ""),
    ]
    for name, source in status["sources"].items():
        detail = f" ({source['error']})" if source["error"] else ""
        lines.append(f"source    {name}: {source['state']}{detail}")
    for probe in status.get("probes", []):
        if probe["state"] == "unavailable":
            detail = f" — {probe['reason']}"
        elif probe["last_error"]:
            detail = f" (last error {probe['last_error']})"
        elif probe["last_rtt_ms"] is not None:
            detail = f" ({probe['last_rtt_ms']:.1f} ms)"
        else:
            detail = ""
        since = f" since {probe['since']}" if probe["since"] else ""
        lines.append(
            f"probe     {probe['name']} [{probe['role']}] {probe['target']}: "
            f"{probe['state']}{since}{detail}"
        )
    for device in status.get("devices", []):
        flags = f" [{', '.join(device['flags'])}]" if device["flags"] else ""
        reason = f" — {device['reason']}" if device["reason"] else ""
        lines.append(
            f"device    {device['name']} ({device['kind']}, {device['port']}): "
            f"{device['state']}{flags}{reason}"
        )
    for tail in status.get("logtails", []):
        reading = "" if tail["reading"] in (None, tail["path"]) else f" (reading {tail['reading']})"
        lines.append(
            f"logfile   {tail['path']}: {tail['state']}{reading} at byte {tail['offset']}; "
            f"{tail['lines']} lines, {tail['matched']} matched, {tail['unmatched']} unmatched, "
            f"{tail['rejected']} refused, {tail['undecodable_bytes']} undecodable bytes"
        )
    if "payments" in status:
        lines += _payment_lines(status["payments"])
    if "pan_guard" in status:
        guard = status["pan_guard"]
        lines.append(
            f"pan guard masked {guard['masked_total']} (card numbers, track data), refused "
            f"{guard['refused_total']} reports with card data fields"
        )
    return "\n".join(lines)


def _payment_lines(payments: dict[str, Any]) -> list[str]:
    counts = payments["counts"]
    by_outcome = ", ".join(
        f"{name} {counts[name]}" for name in ("approved", "declined", "timeout", "error")
    )
    running = "open" in payments  # the agent answered (offline: read from the spool file)
    lines = [
        f"payments  {by_outcome}; late ends {counts['late']}, resolved {counts['resolved']}, "
        f"technical {counts['technical']}"
        + (f"; {payments['open']} open (timeout {payments['timeout_s']:g} s)" if running else "")
    ]
    if payments.get("spool_error"):
        lines.append(f"payments  NOT STORED: {payments['spool_error']}")
    total = payments["in_doubt_total"]
    if total:
        lines.append(
            f"in doubt  {total} payment{'s' if total != 1 else ''}: the card may have been "
            "charged; check with the acquirer before charging again"
        )
        for doubt in payments["in_doubt"]:
            lines.append(
                f"  {doubt['txn_id']}  started {doubt['started_at'] or 'unknown'}  "
                f"{doubt['acquirer'] or 'acquirer unknown'}  "
                f"{_amount(doubt['amount_minor'], doubt['currency'])}  ({doubt['outcome']})"
            )
        if total > len(payments["in_doubt"]):
            lines.append(f"  … and {total - len(payments['in_doubt'])} more")
    else:
        lines.append("in doubt  none")
    return lines


#: ISO 4217 currencies without two decimals (the rest have two).
_NO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_FOUR_DECIMALS = "CLF UYW"
_EXPONENTS = {
    code: exponent
    for codes, exponent in ((_NO_DECIMALS, 0), (_THREE_DECIMALS, 3), (_FOUR_DECIMALS, 4))
    for code in codes.split()
}


def _amount(minor: int | None, currency: str | None) -> str:
    """``1250, "EUR"`` → ``12.50 EUR``; what is known of an amount, in words."""
    if minor is None:
        return "amount unknown"
    if currency is None:
        return f"{minor} minor units"
    exponent = _EXPONENTS.get(currency, 2)
    if exponent == 0:
        return f"{minor} {currency}"
    whole, part = divmod(minor, 10**exponent)
    return f"{whole}.{part:0{exponent}d} {currency}"


# -- check-config -------------------------------------------------------------


class _Report:
    def __init__(self) -> None:
        self.failed = False

    def line(self, ok: bool | None, what: str, detail: str) -> None:
        mark = {True: "ok  ", False: "FAIL", None: "warn"}[ok]
        if ok is False:
            self.failed = True
        print(f"  {mark}  {what:<10} {detail}")


def _check_config(args: argparse.Namespace) -> int:
    print(f"posmon-agent check-config {args.config}")
    report = _Report()
    try:
        settings = load_config(args.config)
    except ConfigError as err:
        report.line(False, "config", str(err))
        return 1
    report.line(True, "config", f"{settings.config_path} is valid")
    _check_spool(settings, report)
    _check_api_port(settings, report)
    _check_collector(settings, report)
    print("ready" if not report.failed else "NOT ready: fix the lines marked FAIL")
    return 1 if report.failed else 0


def _check_spool(settings: AgentSettings, report: _Report) -> None:
    path = settings.spool.path
    directory = path.parent
    existing = next((p for p in (directory, *directory.parents) if p.exists()), Path("/"))
    if not existing.is_dir() or not _writable(existing):
        report.line(False, "spool", f"cannot create or write {path} ({existing} not writable)")
    elif path.exists():
        spool = _spool_offline(settings)
        report.line(True, "spool", f"{path}: {spool.get('depth')} events waiting")
    else:
        report.line(True, "spool", f"{path} will be created")


def _writable(path: Path) -> bool:
    import os

    return os.access(path, os.W_OK | os.X_OK)


def _check_api_port(settings: AgentSettings, report: _Report) -> None:
    api = settings.api
    if not api.enabled:
        report.line(True, "local api", "disabled")
        return
    family = socket.AF_INET6 if ":" in api.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((api.host, api.port))
        except OSError as err:
            report.line(
                None,
                "local api",
                f"{api.host}:{api.port} in use ({err.strerror}); "
                "fine if posmon-agent is already running there",
            )
            return
    report.line(True, "local api", f"{api.host}:{api.port} is free")


def _check_collector(settings: AgentSettings, report: _Report) -> None:
    link = settings.collector
    context = None
    if link.url.startswith("https://"):
        import ssl

        context = ssl.create_default_context(cafile=str(link.ca_file) if link.ca_file else None)
    try:
        with urllib.request.urlopen(
            link.url + "/healthz", timeout=link.timeout_s, context=context
        ) as resp:
            resp.read()
    except urllib.error.HTTPError as err:
        report.line(False, "collector", f"{link.url}/healthz answered {err.code}")
        return
    except OSError as err:
        report.line(False, "collector", f"cannot reach {link.url}: {err}")
        return
    report.line(True, "collector", f"{link.url} is up")
    # An empty report checks the token and that it belongs to this terminal.
    ident = settings.agent
    info = AgentInfo(
        id="check-config",
        terminal_id=ident.terminal_id,
        store_id=ident.store_id,
        version=__version__,
    )
    body = encode_report_raw(info, datetime.now(UTC), [])
    request = urllib.request.Request(
        link.url + "/api/v1/reports",
        data=body,
        method="POST",
        headers={"Authorization": f"Bearer {link.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=link.timeout_s, context=context) as resp:
            resp.read()
    except urllib.error.HTTPError as err:
        detail = err.read()[:300].decode("utf-8", "replace")
        report.line(False, "token", f"the collector refused the token ({err.code}): {detail}")
        return
    except OSError as err:
        report.line(False, "token", f"upload check failed: {err}")
        return
    report.line(
        True, "token", f"accepted for terminal {ident.terminal_id} in store {ident.store_id}"
    )
