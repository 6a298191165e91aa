"""The fleet and its faults made concrete: store and terminal ids, who is hit when.

Stores are ``S001`` … (``S0001`` … past 999); a store's terminals are
``<store>-T1`` …. A fault that gives a count of stores (or, for an acquirer
outage, none: every store) gets stores drawn with the seed among those that
are *free*: no other fault within ``quiet_margin_s`` of it, so every failed
payment has one true cause. Faults with explicit store lists are placed
first; a list that collides with another fault is an error naming the key.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from protocol.causes import Cause

from .scenario import ACQUIRER_KINDS, TERMINAL_KINDS, FaultSpec, Scenario, ScenarioError


def store_ids(count: int) -> tuple[str, ...]:
    width = max(3, len(str(count)))
    return tuple(f"S{n:0{width}d}" for n in range(1, count + 1))


def terminal_ids(store: str, count: int) -> tuple[str, ...]:
    return tuple(f"{store}-T{k}" for k in range(1, count + 1))


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault, placed: when it runs and which stores and terminals it hits."""

    spec: FaultSpec
    start: datetime
    end: datetime
    stores: frozenset[str]
    terminals: frozenset[str]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> str:
        return self.spec.kind

    @property
    def cause(self) -> Cause:
        return self.spec.cause

    @property
    def acquirer(self) -> str | None:
        return self.spec.acquirer

    @property
    def dark_start(self) -> datetime:
        """power_cut: when the UPS gives up and the store goes dark."""
        return self.start + timedelta(seconds=self.spec.ups_runtime_s)

    def active(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "kind": self.kind,
            "cause": str(self.cause),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "stores": sorted(self.stores),
            "terminals": sorted(self.terminals),
            "acquirer": self.acquirer,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """The fleet (stores, terminals, who is on Wi-Fi) and its placed faults."""

    scenario: Scenario
    start: datetime
    stores: tuple[str, ...]
    terminals: Mapping[str, tuple[str, ...]]  # store -> its terminals
    wifi_stores: frozenset[str]
    faults: tuple[Fault, ...]

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.scenario.duration_s)

    def all_terminals(self) -> list[tuple[str, str]]:
        """(store, terminal) for every terminal of the fleet."""
        return [(s, t) for s in self.stores for t in self.terminals[s]]

    def faults_of(self, store: str, terminal: str) -> tuple[Fault, ...]:
        """The faults that hit ``terminal`` of ``store``."""
        return tuple(
            f
            for f in self.faults
            if store in f.stores and (f.kind not in TERMINAL_KINDS or terminal in f.terminals)
        )


class _Placer:
    def __init__(
        self, scenario: Scenario, start: datetime, stores: tuple[str, ...], where: str
    ) -> None:
        self.scenario = scenario
        self.start = start
        self.stores = stores
        self.where = where
        self.busy: dict[str, list[tuple[int, int, str]]] = {s: [] for s in stores}
        self.margin = scenario.quiet_margin_s

    def clash(self, store: str, spec: FaultSpec) -> str | None:
        begin, end = spec.at_s, spec.at_s + spec.duration_s
        for other_begin, other_end, name in self.busy[store]:
            if other_begin - self.margin < end and begin < other_end + self.margin:
                return name
        return None

    def take(self, store: str, spec: FaultSpec) -> None:
        self.busy[store].append((spec.at_s, spec.at_s + spec.duration_s, spec.name))

    def error(self, spec: FaultSpec, key: str, message: str) -> ScenarioError:
        return ScenarioError(f"{self.where}: {spec.key}.{key}: {message}")


def _explicit_stores(spec: FaultSpec, placer: _Placer, known: set[str]) -> tuple[str, ...]:
    if isinstance(spec.stores, tuple):
        stores = spec.stores
        key = "stores"
    else:  # stores from the terminal list
        assert isinstance(spec.terminals, tuple)
        stores = tuple(dict.fromkeys(t.rsplit("-T", 1)[0] for t in spec.terminals))
        key = "terminals"
    for store in stores:
        if store not in known:
            raise placer.error(
                spec,
                key,
                f"{store!r} is not a store of this fleet ({placer.stores[0]} … "
                f"{placer.stores[-1]})",
            )
        other = placer.clash(store, spec)
        if other is not None:
            raise placer.error(
                spec,
                key,
                f"{store} already has fault {other!r} within quiet_margin_s "
                f"({placer.margin} s); one cause per payment needs faults apart",
            )
    return stores


def plan_faults(
    scenario: Scenario,
    *,
    start: datetime,
    stores: int | None = None,
    terminals: int | None = None,
    seed: int = 1,
    where: str = "scenario",
) -> Plan:
    """Place the scenario's faults on a fleet of ``stores`` × ``terminals`` (scenario's by default).

    Raises :class:`ScenarioError` when a fault cannot be placed.
    """
    rng = random.Random(seed)
    n_stores = stores if stores is not None else scenario.stores
    n_terminals = terminals if terminals is not None else scenario.terminals
    ids = store_ids(n_stores)
    fleet = {s: terminal_ids(s, n_terminals) for s in ids}
    known = set(ids)
    placer = _Placer(scenario, start, ids, where)

    def explicit(spec: FaultSpec) -> bool:
        return isinstance(spec.stores, tuple) or (
            spec.kind in TERMINAL_KINDS and isinstance(spec.terminals, tuple)
        )

    # explicit lists first, then counts, then "every free store" (acquirer outages)
    order = sorted(
        scenario.faults,
        key=lambda f: (
            0
            if explicit(f)
            else (
                2
                if f.stores is None and f.kind in ACQUIRER_KINDS and f.kind == "acquirer_outage"
                else 1
            )
        ),
    )
    chosen: dict[int, tuple[str, ...]] = {}
    for spec in order:
        if explicit(spec):
            picked = _explicit_stores(spec, placer, known)
        else:
            free = [s for s in ids if placer.clash(s, spec) is None]
            if spec.stores is None and spec.kind == "acquirer_outage":
                picked = tuple(free)
            else:
                want = spec.stores if isinstance(spec.stores, int) else 1
                if want > len(free):
                    raise placer.error(
                        spec,
                        "stores",
                        f"{want} store(s) wanted but only {len(free)} of "
                        f"{len(ids)} are free of other faults (within quiet_margin_s "
                        f"{placer.margin} s); use more stores or move the fault",
                    )
                picked = tuple(sorted(rng.sample(free, want)))
            if not picked:
                raise placer.error(spec, "stores", "no store is free of other faults then")
        for store in picked:
            placer.take(store, spec)
        chosen[spec.index] = picked

    faults = []
    for spec in scenario.faults:
        picked = chosen[spec.index]
        hit: set[str] = set()
        if spec.kind in TERMINAL_KINDS:
            if isinstance(spec.terminals, tuple):
                for terminal in spec.terminals:
                    store = terminal.rsplit("-T", 1)[0]
                    if terminal not in fleet.get(store, ()):
                        raise placer.error(
                            spec, "terminals", f"{terminal!r} is not a terminal of this fleet"
                        )
                    hit.add(terminal)
            else:
                if spec.terminals > n_terminals:
                    raise placer.error(
                        spec,
                        "terminals",
                        f"{spec.terminals} per store wanted but stores have {n_terminals}",
                    )
                for store in picked:
                    hit.update(rng.sample(fleet[store], spec.terminals))
        else:
            for store in picked:
                hit.update(fleet[store])
        faults.append(
            Fault(
                spec=spec,
                start=start + timedelta(seconds=spec.at_s),
                end=start + timedelta(seconds=spec.at_s + spec.duration_s),
                stores=frozenset(picked),
                terminals=frozenset(hit),
            )
        )

    wifi = {s for f in faults if f.kind == "wifi_weak" for s in f.stores}
    others = [s for s in ids if s not in wifi]
    extra = min(scenario.wifi_stores, len(others))
    wifi.update(rng.sample(others, extra))
    return Plan(
        scenario=scenario,
        start=start,
        stores=ids,
        terminals=fleet,
        wifi_stores=frozenset(wifi),
        faults=tuple(faults),
    )
