"""The [[logfile]] tables of the agent config: rules checked when the config loads."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from agent.config import ConfigError, load_config
from agent.logtail.settings import LogFileSpec

HEAD = """
[agent]
terminal_id = "T-1"
store_id = "S-1"

[collector]
url = "http://127.0.0.1:9"
token = "tok"

[spool]
path = "spool.db"
"""

GOOD = r"""
[[logfile]]
path = "logs/pos.log"

[[logfile.rule]]
pattern = 'START id=(?P<txn_id>\S+) amount=(?P<amount_minor>\d+) (?P<currency>[A-Z]{3})'
set = { kind = "sale", acquirer = "acq-a" }

[[logfile.rule]]
pattern = '^(?P<ended_at>\S+ \S+) END id=(?P<txn_id>\S+) result=(?P<outcome>\w+)'
outcome_map = { OK = "approved", DECL = "declined" }
time_format = "%Y-%m-%d %H:%M:%S"
timezone = "Europe/Berlin"
"""


def load(tmp_path: Path, body: str) -> list[LogFileSpec]:
    path = tmp_path / "agent.toml"
    text = body + HEAD if body.startswith("logfile =") else HEAD + body  # a top-level key
    path.write_text(text, encoding="utf-8")
    return list(load_config(path).logfiles)


def error(tmp_path: Path, body: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, body)
    return info.value


def test_no_logfile_is_fine(tmp_path: Path) -> None:
    assert load(tmp_path, "") == []


def test_a_full_logfile_table(tmp_path: Path) -> None:
    (spec,) = load(tmp_path, GOOD)
    assert spec.path == tmp_path / "logs" / "pos.log"  # relative to the config file
    assert (spec.encoding, spec.poll_s, spec.start_at) == ("utf-8", 0.5, "end")
    start, end = spec.rules
    assert start.groups == ("txn_id", "amount_minor", "currency")
    assert dict(start.set) == {"kind": "sale", "acquirer": "acq-a"}
    assert start.time_format is None and start.timezone is UTC
    assert dict(end.outcome_map) == {"OK": "approved", "DECL": "declined"}
    assert end.timezone == ZoneInfo("Europe/Berlin")


def test_options(tmp_path: Path) -> None:
    (spec,) = load(tmp_path, """
[[logfile]]
path = "/var/log/./pos//app.log"
encoding = "latin-1"
poll_s = 0.1
start_at = "beginning"
[[logfile.rule]]
pattern = 'id=(?P<txn_id>\\d+)'
set = { amount_minor = 100, outcome = "timeout" }
""")  # fmt: skip
    assert spec.path == Path("/var/log/pos/app.log")
    assert (spec.encoding, spec.poll_s, spec.start_at) == ("iso8859-1", 0.1, "beginning")
    assert dict(spec.rules[0].set) == {"amount_minor": 100, "outcome": "timeout"}


def rule(pattern: str, extra: str = "") -> str:
    return f"""
[[logfile]]
path = "/var/log/pos.log"
[[logfile.rule]]
pattern = 'id=(?P<txn_id>\\d+) ok'
[[logfile.rule]]
pattern = '{pattern}'
{extra}
"""


MISTAKES = [
    # (the [[logfile]] text, the key in the error, words of the reason)
    (rule("id=(?P<txn_id>\\d+"), "logfile[0].rule[1].pattern",
     "invalid regular expression: missing ), unterminated subpattern at position 3"),
    (rule("(?P<txn_id>x)(?P<txn_id>y)"), "logfile[0].rule[1].pattern", "redefinition of group"),
    (rule("(?P<txn_id>\\d+) (?P<terminal>\\w+)"), "logfile[0].rule[1].pattern",
     "named group 'terminal' is not a payment field; use one of txn_id, kind"),
    (rule("(?P<txn_id>\\d+) (?P<pan>\\d+)"), "logfile[0].rule[1].pattern",
     "named group 'pan' would hold card data"),
    (rule("(?P<txn_id>\\d+) (?P<card_number>\\d+)"), "logfile[0].rule[1].pattern",
     "'card_number' would hold card data"),
    (rule("(?P<txn_id>\\d+)", "set = { cvv = \"x\" }"), "logfile[0].rule[1].set",
     "field 'cvv' would hold card data"),
    (rule("amount=(?P<amount_minor>\\d+)"), "logfile[0].rule[1].pattern",
     "must capture the payment's id in a named group (?P<txn_id>...)"),
    (rule(""), "logfile[0].rule[1].pattern", "must not be empty"),
    (rule("(?P<txn_id>\\d+) (?P<outcome>\\w+)", 'set = { outcome = "declined" }'),
     "logfile[0].rule[1].set", "'outcome' is both captured by the pattern and set"),
    (rule("(?P<txn_id>\\d+)", 'set = { outcome = "lost" }'), "logfile[0].rule[1].set.outcome",
     "must be one of approved, declined, timeout, error, got 'lost'"),
    (rule("(?P<txn_id>\\d+)", 'set = { kind = "refnd" }'), "logfile[0].rule[1].set.kind",
     "must be one of sale, refund, void, reversal"),
    (rule("(?P<txn_id>\\d+)", "set = { amount_minor = -1 }"),
     "logfile[0].rule[1].set.amount_minor", "must be ≥ 0"),
    (rule("(?P<txn_id>\\d+)", "set = { stan = 12 }"), "logfile[0].rule[1].set.stan",
     "expected a non-empty string, got an integer"),
    (rule("(?P<txn_id>\\d+)", 'set = "timeout"'), "logfile[0].rule[1].set", "expected a table"),
    (rule("(?P<txn_id>\\d+)", 'outcome_map = { OK = "approved" }'),
     "logfile[0].rule[1].outcome_map", "needs a named group (?P<outcome>...)"),
    (rule("(?P<txn_id>\\d+) (?P<outcome>\\w+)", 'outcome_map = { OK = "fine" }'),
     "logfile[0].rule[1].outcome_map.OK", "must be one of approved, declined, timeout, error"),
    (rule("(?P<txn_id>\\d+)", 'time_format = "%d.%m.%Y"'), "logfile[0].rule[1].time_format",
     "needs a named group (?P<started_at>...) or (?P<ended_at>...)"),
    (rule("(?P<txn_id>\\d+) (?P<ended_at>.+)", 'time_format = "%Q"'),
     "logfile[0].rule[1].time_format", "not a usable strptime format"),
    (rule("(?P<txn_id>\\d+) (?P<ended_at>.+)", 'time_format = "dd.mm.yyyy"'),
     "logfile[0].rule[1].time_format", "expected a strptime format"),
    (rule("(?P<txn_id>\\d+)", 'timezone = "Mars/Olympus"'), "logfile[0].rule[1].timezone",
     "unknown time zone 'Mars/Olympus'"),
    (rule("(?P<txn_id>\\d+)", 'patern = "x"'), "logfile[0].rule[1].patern",
     "unknown key; did you mean 'pattern'?"),
    ('[[logfile]]\npath = "/a.log"\n', "logfile[0].rule", "missing required [[logfile.rule]]"),
    ('[[logfile]]\nrule = [{pattern = "(?P<txn_id>x)"}]\n', "logfile[0].path", "missing required"),
    ('[[logfile]]\npath = "/a.log"\nrule = []\n', "logfile[0].rule",
     "expected [[logfile[0].rule]]"),
    ('[[logfile]]\npath = "/a.log"\nrule = ["x"]\n', "logfile[0].rule[0]",
     "expected a [[logfile.rule]] table"),
    ('logfile = "x"\n', "logfile", "expected [[logfile]] tables, got a string"),
    (rule("(?P<txn_id>\\d+)").replace('path = "/var/log/pos.log"',
     'path = "/var/log/pos.log"\nencoding = "utf-16"'), "logfile[0].encoding",
     "'utf-16' cannot be read line by line"),
    (rule("(?P<txn_id>\\d+)").replace('path = "/var/log/pos.log"',
     'path = "/var/log/pos.log"\nencoding = "klingon"'), "logfile[0].encoding", "unknown encoding"),
    (rule("(?P<txn_id>\\d+)").replace('path = "/var/log/pos.log"',
     'path = "/var/log/pos.log"\npoll_s = 0'), "logfile[0].poll_s", "must be ≥ 0.01"),
    (rule("(?P<txn_id>\\d+)").replace('path = "/var/log/pos.log"',
     'path = "/var/log/pos.log"\nstart_at = "middle"'), "logfile[0].start_at",
     "must be one of 'end', 'beginning'"),
    (rule("(?P<txn_id>\\d+)") + rule("(?P<txn_id>\\d+)").replace("/var/log/pos.log",
     "/var/log/../log/pos.log"), "logfile[1].path", "is already followed by logfile[0]"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "key", "reason"), MISTAKES)
def test_mistakes_name_the_key(tmp_path: Path, body: str, key: str, reason: str) -> None:
    err = error(tmp_path, body)
    assert err.key == key, str(err)
    assert reason in err.reason, str(err)


def test_the_deploy_example_loads_when_uncommented(tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parents[3] / "deploy" / "agent.toml").read_text()
    block = text[text.index("\n# [[logfile]]\n") :]
    uncommented = "\n".join(line.removeprefix("#").removeprefix(" ") for line in block.splitlines())
    (spec,) = load(tmp_path, "\n" + uncommented)
    assert spec.path == Path("/var/log/pos/payments.log")
    start, end = spec.rules
    fields = start.pattern.search("2026-11-21T10:00:00Z START txn=A1 amount=1250 EUR")
    assert fields is not None and fields["amount_minor"] == "1250"
    assert end.pattern.search("21.11.2026 10:00:02 END txn=A1 DECLINED rc=05") is not None
    assert end.time_format == "%d.%m.%Y %H:%M:%S"
