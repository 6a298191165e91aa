"""A fleet scenario: a TOML file read into frozen types, every mistake naming its key.

    ScenarioError(ValueError)   a file that cannot be read or a key that is
                                wrong; the message names the file and the key
                                (``fault[2].stores``) and says why.

A scenario describes the fleet's ordinary life (payment rates, acquirers,
upload interval) and the faults injected on a schedule. Times inside the
file are offsets from the scenario's start: an integer number of seconds or
a string such as ``"90s"``, ``"20m"``, ``"2h"`` or ``"1h30m"``. The README
("Fleet simulator") lists every key; :data:`FAULT_KINDS` the fault kinds.

Which stores and terminals a fault hits is decided later, by
:func:`collector.fleetsim.plan.plan_faults`, once the fleet's size is known.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from protocol.causes import Cause

from ..settings import boolean, int_between, number_between

FaultKind = Literal[
    "isp_down",
    "router_down",
    "wifi_weak",
    "dns_broken",
    "acquirer_outage",
    "acquirer_path",
    "pinpad_unplugged",
    "power_cut",
    "clock_skewed",
    "host_starved",
]

#: Each fault kind and the cause a payment it breaks should get.
FAULT_KINDS: Final[Mapping[str, Cause]] = {
    "isp_down": Cause.ISP,
    "router_down": Cause.GATEWAY,
    "wifi_weak": Cause.LINK,
    "dns_broken": Cause.DNS,
    "acquirer_outage": Cause.ACQUIRER_OUTAGE,
    "acquirer_path": Cause.ACQUIRER_PATH,
    "pinpad_unplugged": Cause.DEVICE,
    "power_cut": Cause.POWER,
    "clock_skewed": Cause.CLOCK,
    "host_starved": Cause.HOST,
}
#: Faults of one acquirer (they need ``acquirer``).
ACQUIRER_KINDS: Final = frozenset({"acquirer_outage", "acquirer_path"})
#: Faults of single terminals (``terminals`` picks them in each store).
TERMINAL_KINDS: Final = frozenset({"pinpad_unplugged", "clock_skewed", "host_starved"})

MAX_STORES: Final = 10_000
MAX_TERMINALS_PER_STORE: Final = 100
MAX_DURATION_S: Final = 30 * 86400
DEFAULT_ACQUIRERS: Final = ("acquirer-a", "acquirer-b")
_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ScenarioError(ValueError):
    """A scenario that cannot be used; the message says where, which key and why."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FaultSpec:
    """One ``[[fault]]`` table, as written (stores and terminals not yet chosen)."""

    index: int  # position in the file, 0-based: fault[index]
    kind: FaultKind
    name: str
    at_s: int
    duration_s: int
    #: store ids, or how many stores (None: the kind's default)
    stores: tuple[str, ...] | int | None = None
    #: terminal ids, or how many terminals per chosen store (terminal kinds only)
    terminals: tuple[str, ...] | int = 1
    acquirer: str | None = None
    #: wifi_weak: "bad" (uploads stop) or "weak" (lossy, uploads go through)
    severity: Literal["bad", "weak"] = "bad"
    #: clock_skewed: the terminal's clock minus the true time
    offset_s: int = -365 * 86400
    #: power_cut: how long the UPS keeps the store running before everything goes dark
    ups_runtime_s: int = 120
    #: the stores' agents cannot reach the collector while the fault runs (a proxy or
    #: firewall in front of it), though their internet works: reports wait in the spool
    hold_uploads: bool = False

    @property
    def key(self) -> str:
        return f"fault[{self.index}]"

    @property
    def cause(self) -> Cause:
        return FAULT_KINDS[self.kind]


@dataclass(frozen=True, slots=True, kw_only=True)
class NoiseSpec:
    """The ``[noise]`` table: ordinary background trouble that causes no failed payment.

    Every key defaults to off; :mod:`collector.fleetsim.noise` turns them into symptoms.
    """

    #: isolated lossy probe windows per terminal per hour (one probe, one window) ...
    probe_loss_per_hour: float = 0.0
    #: ... with a loss drawn from this range, in percent
    probe_loss_pct: tuple[float, float] = (10.0, 40.0)
    #: percent of probe attempts that fail alone (a single lost packet)
    probe_blip_pct: float = 0.0
    #: printer paper-end episodes per terminal per hour (3 to 10 minutes each)
    paper_end_per_hour: float = 0.0
    #: during every fault of a store, one other terminal's printer runs out of paper
    paper_end_during_faults: bool = False
    #: percent of host samples with a CPU spike (70-94 %, under the default threshold)
    cpu_spike_pct: float = 0.0
    #: spread (log-normal sigma) of acquirer round trips and payment latencies; 0: off
    acquirer_latency_sigma: float = 0.0
    #: the NTP offset wanders (random walk) within +/- this many ms; 0: off
    ntp_wander_ms: float = 0.0
    #: declines carry the wider set of ordinary issuer codes (14, 51, 54, 55, 57, 61, 65, 05)
    varied_declines: bool = False
    #: percent of reports posted twice (the agent retried after a lost acknowledgement)
    duplicate_report_pct: float = 0.0

    @property
    def on(self) -> bool:
        return self != NoiseSpec()


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """A whole scenario file, validated."""

    name: str
    duration_s: int
    stores: int = 12
    terminals: int = 2
    acquirers: tuple[str, ...] = DEFAULT_ACQUIRERS
    upload_interval_s: int = 30
    payments_per_hour: tuple[float, float] = (20.0, 40.0)
    decline_pct: float = 5.0
    background_failures_per_hour: float = 0.05
    payment_timeout_s: int = 60
    fleet_min_stores: int = 3
    wifi_stores: int = 0
    quiet_margin_s: int = 600
    noise: NoiseSpec = NoiseSpec()
    faults: tuple[FaultSpec, ...] = ()


# --- value checks: raw TOML value -> typed value, ValueError with the reason -----------


def parse_duration(value: Any) -> int:
    """Seconds from an integer or a string like ``"90s"``, ``"20m"``, ``"1h30m"``, ``"2d"``."""
    if type(value) is int:
        seconds = value
    elif isinstance(value, str):
        match = _DURATION.match(value.strip())
        if not value.strip() or match is None:
            raise ValueError(f'{value!r} is not a duration like "90s", "20m", "2h" or "1h30m"')
        d, h, m, s = (int(part or 0) for part in match.groups())
        seconds = ((d * 24 + h) * 60 + m) * 60 + s
    else:
        raise ValueError('expected seconds or a duration like "20m"')
    if not 0 <= seconds <= MAX_DURATION_S:
        raise ValueError(f"{seconds} s is out of range; allowed 0..{MAX_DURATION_S} s (30 days)")
    return seconds


def _ident(value: Any) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(
            f"{value!r} is not a valid id (letters, digits, '.', '_', '-'; at most 64)"
        )
    return value


def _acquirers(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ValueError('expected a list of acquirer names, like ["acquirer-a"]')
    names = tuple(_ident(v) for v in value)
    if len(set(names)) != len(names):
        raise ValueError("names must be unique")
    return names


def _rate_range(value: Any) -> tuple[float, float]:
    check = number_between(0, 3600)
    if isinstance(value, int | float) and not isinstance(value, bool):
        rate = check(value)
        return rate, rate
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("expected a rate or [min, max] payments per hour per terminal")
    low, high = check(value[0]), check(value[1])
    if low > high:
        raise ValueError(f"[{low:g}, {high:g}]: min is above max")
    return low, high


def _stores(value: Any) -> tuple[str, ...] | int:
    if type(value) is int:
        return int_between(1, MAX_STORES)(value)
    if isinstance(value, list) and value:
        ids = tuple(_ident(v) for v in value)
        if len(set(ids)) != len(ids):
            raise ValueError("a store is listed twice")
        return ids
    raise ValueError('expected a number of stores or a list of store ids like ["S001"]')


def _terminals(value: Any) -> tuple[str, ...] | int:
    if type(value) is int:
        return int_between(1, MAX_TERMINALS_PER_STORE)(value)
    if isinstance(value, list) and value:
        ids = tuple(_ident(v) for v in value)
        if len(set(ids)) != len(ids):
            raise ValueError("a terminal is listed twice")
        return ids
    raise ValueError(
        'expected terminals per store (a number) or a list of terminal ids like ["S001-T1"]'
    )


def _choice(options: tuple[str, ...]) -> Callable[[Any], str]:
    def check(value: Any) -> str:
        if value not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return str(value)

    return check


def _pct_range(value: Any) -> tuple[float, float]:
    check = number_between(0, 100)
    if not isinstance(value, list) or len(value) != 2:
        raise ValueError("expected [min, max] in percent, like [10, 40]")
    low, high = check(value[0]), check(value[1])
    if low > high:
        raise ValueError(f"[{low:g}, {high:g}]: min is above max")
    return low, high


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise ValueError("expected a non-empty string of at most 64 characters")
    return value


_TOP: Final[Mapping[str, Callable[[Any], Any]]] = {
    "name": _text,
    "duration": parse_duration,
    "stores": int_between(1, MAX_STORES),
    "terminals": int_between(1, MAX_TERMINALS_PER_STORE),
    "acquirers": _acquirers,
    "upload_interval_s": int_between(5, 3600),
    "payments_per_hour": _rate_range,
    "decline_pct": number_between(0, 50),
    "background_failures_per_hour": number_between(0, 60),
    "payment_timeout_s": int_between(5, 600),
    "fleet_min_stores": int_between(2, MAX_STORES),
    "wifi_stores": int_between(0, MAX_STORES),
    "quiet_margin_s": int_between(0, 86400),
}
_TOP_FIELDS: Final = {"duration": "duration_s"}

_FAULT: Final[Mapping[str, Callable[[Any], Any]]] = {
    "kind": _choice(tuple(FAULT_KINDS)),
    "name": _text,
    "at": parse_duration,
    "duration": parse_duration,
    "stores": _stores,
    "terminals": _terminals,
    "acquirer": _ident,
    "severity": _choice(("bad", "weak")),
    "offset_s": int_between(-50 * 365 * 86400, 50 * 365 * 86400),
    "ups_runtime": parse_duration,
    "hold_uploads": boolean,
}
_NOISE: Final[Mapping[str, Callable[[Any], Any]]] = {
    "probe_loss_per_hour": number_between(0, 60),
    "probe_loss_pct": _pct_range,
    "probe_blip_pct": number_between(0, 20),
    "paper_end_per_hour": number_between(0, 10),
    "paper_end_during_faults": boolean,
    "cpu_spike_pct": number_between(0, 100),
    "acquirer_latency_sigma": number_between(0, 2),
    "ntp_wander_ms": number_between(0, 5000),
    "varied_declines": boolean,
    "duplicate_report_pct": number_between(0, 50),
}
_FAULT_FIELDS: Final = {"at": "at_s", "duration": "duration_s", "ups_runtime": "ups_runtime_s"}
#: keys only some kinds take
_ONLY: Final[Mapping[str, frozenset[str]]] = {
    "acquirer": ACQUIRER_KINDS,
    "terminals": TERMINAL_KINDS,
    "severity": frozenset({"wifi_weak"}),
    "offset_s": frozenset({"clock_skewed"}),
    "ups_runtime": frozenset({"power_cut"}),
}


def _close_match(key: str, known: Mapping[str, Any]) -> str:
    import difflib

    near = difflib.get_close_matches(key, list(known), n=1)
    return f"; did you mean {near[0]!r}?" if near else f"; known keys: {', '.join(known)}"


def _read_table(
    where: str, prefix: str, table: Mapping[str, Any], schema: Mapping[str, Callable[[Any], Any]]
) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in table.items():
        check = schema.get(key)
        if check is None:
            raise ScenarioError(f"{where}: {prefix}{key}: unknown key{_close_match(key, schema)}")
        try:
            values[key] = check(raw)
        except ValueError as err:
            raise ScenarioError(f"{where}: {prefix}{key}: {err}") from None
    return values


def _fault(where: str, index: int, table: Any, scenario: Mapping[str, Any]) -> FaultSpec:
    prefix = f"fault[{index}]."
    if not isinstance(table, dict):
        raise ScenarioError(f"{where}: fault[{index}]: expected a [[fault]] table")
    values = _read_table(where, prefix, table, _FAULT)
    for key in ("kind", "at", "duration"):
        if key not in values:
            raise ScenarioError(f"{where}: {prefix}{key}: missing (every fault needs it)")
    kind = values["kind"]
    for key, kinds in _ONLY.items():
        if key in values and kind not in kinds:
            raise ScenarioError(
                f"{where}: {prefix}{key}: not used by {kind}; only by {', '.join(sorted(kinds))}"
            )
    if kind in ACQUIRER_KINDS:
        acquirer = values.get("acquirer")
        if acquirer is None:
            raise ScenarioError(f"{where}: {prefix}acquirer: missing ({kind} needs an acquirer)")
        if acquirer not in scenario["acquirers"]:
            raise ScenarioError(
                f"{where}: {prefix}acquirer: {acquirer!r} is not one of the scenario's "
                f"acquirers ({', '.join(scenario['acquirers'])})"
            )
    if values["duration"] < 60:
        raise ScenarioError(f"{where}: {prefix}duration: a fault lasts at least 60 s")
    if values["at"] + values["duration"] > scenario["duration_s"]:
        raise ScenarioError(
            f"{where}: {prefix}duration: the fault ends after the scenario "
            f"({values['at'] + values['duration']} s > duration {scenario['duration_s']} s)"
        )
    if kind == "power_cut":
        runtime = values.get("ups_runtime", 120)
        if runtime >= values["duration"]:
            raise ScenarioError(
                f"{where}: {prefix}ups_runtime: must be shorter than the fault's duration "
                f"({runtime} s >= {values['duration']} s)"
            )
    if kind == "clock_skewed" and abs(values.get("offset_s", 1000)) <= 1:
        raise ScenarioError(f"{where}: {prefix}offset_s: a skew of at most 1 s is no fault")
    fields = {_FAULT_FIELDS.get(k, k): v for k, v in values.items()}
    fields.setdefault("name", f"{kind}-{index}")
    return FaultSpec(index=index, **fields)


def parse_scenario(data: Mapping[str, Any], where: str = "scenario") -> Scenario:
    """A :class:`Scenario` from parsed TOML; ``where`` names the source in errors."""
    top = {k: v for k, v in data.items() if k not in ("fault", "noise")}
    values = _read_table(where, "", top, _TOP)
    raw_noise = data.get("noise", {})
    if not isinstance(raw_noise, dict):
        raise ScenarioError(f"{where}: noise: expected a [noise] table")
    noise = NoiseSpec(**_read_table(where, "noise.", raw_noise, _NOISE))
    if "duration" not in values:
        raise ScenarioError(f'{where}: duration: missing (how long the scenario runs, e.g. "3h")')
    if values["duration"] < 60:
        raise ScenarioError(f"{where}: duration: a scenario lasts at least 60 s")
    fields = {_TOP_FIELDS.get(k, k): v for k, v in values.items()}
    fields.setdefault("name", Path(where).stem or "scenario")
    context = {"acquirers": fields.get("acquirers", DEFAULT_ACQUIRERS), **fields}
    raw_faults = data.get("fault", [])
    if not isinstance(raw_faults, list):
        raise ScenarioError(f"{where}: fault: expected [[fault]] tables")
    faults = tuple(_fault(where, i, t, context) for i, t in enumerate(raw_faults))
    names = [f.name for f in faults]
    for fault in faults:
        if names.count(fault.name) > 1:
            raise ScenarioError(f"{where}: {fault.key}.name: {fault.name!r} is used twice")
    return Scenario(faults=faults, noise=noise, **fields)


def load_scenario(path: Path | str) -> Scenario:
    """Read and validate a scenario file. Raises :class:`ScenarioError`."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ScenarioError(f"{path}: cannot read: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise ScenarioError(f"{path}: not UTF-8 text: {err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ScenarioError(f"{path}: not valid TOML: {err}") from None
    return parse_scenario(data, str(path))


#: The example scenarios shipped with posmon (``collector/fleetsim/scenarios``).
SCENARIO_DIR: Final = Path(__file__).with_name("scenarios")


def find_scenario(name: str) -> Path:
    """A scenario file by path, or by the name of a shipped example (``mixed``)."""
    path = Path(name)
    if path.exists() or path.suffix == ".toml" or "/" in name:
        return path
    return SCENARIO_DIR / f"{name}.toml"
