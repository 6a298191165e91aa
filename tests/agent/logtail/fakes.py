"""An in-memory store for the tailer, with the semantics of the real one: a
submit stores the report and the checkpoint together or not at all."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.config import load_config
from agent.logtail.settings import FIELDS, KINDS, OUTCOMES, LogFileSpec
from agent.logtail.tailer import Rejected, StoreFailed


class Crash(BaseException):
    """The process dies here (SIGKILL): nothing after this point runs."""


@dataclass
class Submitted:
    data: dict[str, object]
    source: str
    checkpoint: dict[str, str]


@dataclass
class FakeStore:
    """What survives a crash: ``meta`` and ``submitted`` (the durable part).

    ``crash_on`` (the n-th submit call, 1-based, counted over the store's life)
    raises :class:`Crash` before that submit is stored, or after it is stored
    when ``crash_after_commit``. ``fail_next`` submits raise StoreFailed first.
    """

    meta: dict[str, str] = field(default_factory=dict)
    submitted: list[Submitted] = field(default_factory=list)
    calls: int = 0
    crash_on: int | None = None
    crash_after_commit: bool = False
    fail_next: int = 0
    saves: int = 0

    async def submit(
        self, data: Mapping[str, object], *, source: str, checkpoint: Mapping[str, str]
    ) -> str:
        self.calls += 1
        if self.fail_next:
            self.fail_next -= 1
            raise StoreFailed("database is locked")
        crash = self.calls == self.crash_on
        if crash and not self.crash_after_commit:
            raise Crash
        for name, value in data.items():
            if name not in FIELDS:
                raise Rejected(name, "unknown field")
            if name == "outcome" and value not in OUTCOMES:
                raise Rejected(name, f"must be one of {', '.join(OUTCOMES)}")
            if name == "kind" and value not in KINDS:
                raise Rejected(name, f"must be one of {', '.join(KINDS)}")
        self.submitted.append(Submitted(dict(data), source, dict(checkpoint)))
        self.meta.update(checkpoint)
        if crash:
            raise Crash
        return "ended" if "outcome" in data else "started"

    async def load_checkpoint(self, key: str) -> str | None:
        return self.meta.get(key)

    async def save_checkpoint(self, values: Mapping[str, str]) -> None:
        self.saves += 1
        self.meta.update(values)

    # -- assertions ---------------------------------------------------------

    def ids(self) -> list[str]:
        """``<txn_id>:<start|end>`` of every stored report, in order."""
        return [
            f"{s.data['txn_id']}:{'end' if 'outcome' in s.data else 'start'}"
            for s in self.submitted
        ]

    def assert_each_once(self, expected: list[str]) -> None:
        got = self.ids()
        dup = sorted({x for x in got if got.count(x) > 1})
        assert not dup, f"stored twice: {dup[:10]}"
        missing = [x for x in expected if x not in got]
        assert not missing, f"{len(missing)} lines lost, first {missing[:10]}"
        assert got == expected, "out of order"


CONFIG_HEAD = """
[agent]
terminal_id = "T-1"
store_id = "S-1"
[collector]
url = "http://127.0.0.1:9"
token = "tok"
[spool]
path = "spool.db"
"""

#: Rules for the lines :func:`start_line` and :func:`end_line` write.
RULES = r"""
[[logfile.rule]]
pattern = '^(?P<started_at>\S+) START id=(?P<txn_id>\S+) amount=(?P<amount_minor>\d+) (?P<currency>[A-Z]{3})'
set = { kind = "sale" }

[[logfile.rule]]
pattern = '^(?P<ended_at>\S+) END id=(?P<txn_id>\S+) result=(?P<outcome>\w+)(?: rc=(?P<response_code>\d+))?(?: (?P<message>.+))?'
outcome_map = { OK = "approved", DECL = "declined", TMO = "timeout" }
"""  # noqa: E501 (a log rule is one long regex)


def load_spec(directory: Path, log: Path, rules: str = RULES, **options: object) -> LogFileSpec:
    """A [[logfile]] through the real config loader."""
    lines = ["[[logfile]]", f"path = {json.dumps(str(log))}"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in options.items()]
    config = directory / "agent.toml"
    config.write_text(CONFIG_HEAD + "\n".join(lines) + "\n" + rules, encoding="utf-8")
    (spec,) = load_config(config).logfiles
    return spec


def start_line(n: int) -> str:
    return f"2026-11-21T10:00:00Z START id=T{n:05d} amount={100 + n} EUR\n"


def end_line(n: int, result: str = "OK") -> str:
    return f"2026-11-21T10:00:02Z END id=T{n:05d} result={result}\n"
