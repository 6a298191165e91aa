"""The [probes] table and [[probe]] items of the agent config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, load_config
from agent.probes.settings import ProbeSpec, ProbesSettings

HEAD = """
[agent]
terminal_id = "T-1"
store_id = "S-1"

[collector]
url = "{url}"
token = "tok"

[spool]
path = "spool.db"
"""


def toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    assert isinstance(value, str)
    escaped = "".join(
        f"\\u{ord(c):04x}" if c in '"\\' or ord(c) < 0x20 or ord(c) == 0x7F else c for c in value
    )
    return f'"{escaped}"'


def load(
    tmp_path: Path,
    *probes: dict[str, Any],
    table: str = "",
    url: str = "https://collector.example:8443",
) -> ProbesSettings:
    return load_config(write(tmp_path, *probes, table=table, url=url)).probes


def write(tmp_path: Path, *probes: dict[str, Any], table: str = "", url: str = "http://c") -> Path:
    text = HEAD.format(url=url) + ("\n[probes]\n" + table if table else "")
    for probe in probes:
        text += "\n[[probe]]\n" + "".join(f"{k} = {toml(v)}\n" for k, v in probe.items())
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def error(tmp_path: Path, *probes: dict[str, Any], table: str = "") -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, *probes, table=table))
    return info.value


# ── defaults ────────────────────────────────────────────────────────────────


def test_no_probes_gives_the_minimal_install(tmp_path: Path) -> None:
    cfg = load(tmp_path)
    assert (cfg.window_s, cfg.interval_s, cfg.timeout_s) == (60.0, 10.0, 3.0)
    assert (cfg.fail_after, cfg.recover_after) == (3, 2)
    by_name = {p.name: p for p in cfg.probes}
    assert list(by_name) == ["link", "gateway", "resolver", "collector"]
    assert by_name["link"] == ProbeSpec(name="link", type="link", target="auto", role="link")
    assert by_name["gateway"].type == "icmp" and by_name["gateway"].host == "gateway"
    resolver = by_name["resolver"]
    assert (resolver.type, resolver.host, resolver.query) == ("dns", "system", "collector.example")
    assert resolver.target == "collector.example@system"
    collector = by_name["collector"]
    assert (collector.type, collector.host, collector.port) == ("tls", "collector.example", 8443)
    assert collector.role == "collector"


def test_defaults_follow_the_collector_url(tmp_path: Path) -> None:
    cfg = load(tmp_path, url="http://10.0.0.5")
    names = [(p.name, p.type, p.target) for p in cfg.probes]
    # an address needs no resolving: no resolver probe; http → TCP connect on port 80
    assert names == [
        ("link", "link", "auto"),
        ("gateway", "icmp", "gateway"),
        ("collector", "tcp", "10.0.0.5:80"),
    ]


def test_defaults_can_be_turned_off(tmp_path: Path) -> None:
    assert load(tmp_path, table="defaults = false\n").probes == ()


def test_listed_probes_replace_the_defaults(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        {"type": "tcp", "target": "pay.a.example:443", "role": "acquirer", "acquirer": "a"},
        table="interval_s = 5\ntimeout_s = 1.5\n",
    )
    assert cfg.probes == (
        ProbeSpec(
            name="tcp:pay.a.example:443",
            type="tcp",
            target="pay.a.example:443",
            role="acquirer",
            acquirer="a",
            interval_s=5.0,
            timeout_s=1.5,
            host="pay.a.example",
            port=443,
        ),
    )


# ── each type ───────────────────────────────────────────────────────────────


def test_every_type_reads_its_target(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    cfg = load(
        tmp_path,
        {"type": "icmp", "target": "192.0.2.1", "role": "isp"},
        {"type": "icmp", "target": "gateway", "role": "gateway", "name": "gw"},
        {"type": "tcp", "target": "[2001:db8::1]:8443", "role": "acquirer", "acquirer": "a"},
        {"type": "tls", "target": "h.example:443", "role": "collector", "server_name": "x.example"},
        {"type": "http", "target": "https://h.example/health", "role": "isp", "ca_file": "ca.pem"},
        {"type": "dns", "target": "127.0.0.1:5353", "query": "pay.example", "qtype": "AAAA"},
        {"type": "dns", "target": "system", "query": "other.example"},
        {"type": "ntp", "target": "ntp.example", "role": "isp", "max_offset_ms": 250},
        {"type": "link", "target": "eth0"},
        {"type": "wifi", "target": "auto", "weak_dbm": -70},
        {"type": "wifi", "target": "wlan0", "interval_s": 30},
    )
    p = cfg.probes
    assert (p[0].host, p[0].role) == ("192.0.2.1", "isp")
    assert (p[1].name, p[1].host) == ("gw", "gateway")
    assert (p[2].host, p[2].port, p[2].acquirer) == ("2001:db8::1", 8443, "a")
    assert (p[3].host, p[3].port, p[3].server_name) == ("h.example", 443, "x.example")
    assert (p[4].url, p[4].ca_file) == ("https://h.example/health", ca)
    assert (p[5].host, p[5].port, p[5].query, p[5].qtype, p[5].role) == (
        "127.0.0.1",
        5353,
        "pay.example",
        "AAAA",
        "dns",
    )
    assert p[5].target == "pay.example@127.0.0.1:5353"
    assert (p[6].host, p[6].port, p[6].name) == ("system", 53, "dns:other.example@system")
    assert (p[7].host, p[7].port, p[7].max_offset_ms) == ("ntp.example", 123, 250.0)
    assert (p[8].interface, p[8].role) == ("eth0", "link")
    assert (p[9].interface, p[9].weak_dbm) == (None, -70.0)
    assert (p[10].interface, p[10].interval_s) == ("wlan0", 30.0)


# ── mistakes ────────────────────────────────────────────────────────────────

TCP = {"type": "tcp", "target": "h.example:443", "role": "isp"}

MISTAKES: list[tuple[dict[str, Any], str, str]] = [
    ({"target": "h:1", "role": "isp"}, "probe[0].type", "missing required key"),
    ({**TCP, "type": "ping"}, "probe[0].type", "must be one of 'icmp', 'tcp'"),
    ({"type": "tcp", "role": "isp"}, "probe[0].target", "missing required key"),
    ({"type": "tcp", "target": "h.example:443"}, "probe[0].role", "missing required key"),
    ({**TCP, "role": "router"}, "probe[0].role", "must be one of 'link', 'gateway'"),
    ({**TCP, "role": "acquirer"}, "probe[0].acquirer", "must name the acquirer"),
    ({**TCP, "acquirer": "a"}, "probe[0].acquirer", "only a probe with role 'acquirer'"),
    ({**TCP, "target": "h.example"}, "probe[0].target", "expected 'HOST:PORT'"),
    ({**TCP, "target": "h.example:99999"}, "probe[0].target", "1–65535"),
    ({**TCP, "target": "2001:db8::1:443"}, "probe[0].target", "in brackets"),
    ({**TCP, "target": "bad host:443"}, "probe[0].target", "not a host name"),
    ({**TCP, "interval_s": 0}, "probe[0].interval_s", "must be ≥ 0.1"),
    ({**TCP, "timeout_s": 121}, "probe[0].timeout_s", "must be ≤ 120"),
    ({**TCP, "query": "x"}, "probe[0].query", "unknown key"),
    ({**TCP, "intervall_s": 5}, "probe[0].intervall_s", "did you mean 'interval_s'?"),
    ({"type": "dns", "target": "system"}, "probe[0].query", "missing required key"),
    ({"type": "dns", "target": "system", "query": "x", "qtype": "MX"}, "probe[0].qtype", "'A'"),
    ({"type": "http", "target": "ftp://h/", "role": "isp"}, "probe[0].target", "http://"),
    (
        {"type": "tls", **{"target": "h:1", "role": "isp", "ca_file": "no.pem"}},
        "probe[0].ca_file",
        "not found",
    ),
    ({"type": "link", "target": "a/b"}, "probe[0].target", "interface name"),
    ({"type": "wifi", "target": "auto", "weak_dbm": 10}, "probe[0].weak_dbm", "≤ 0"),
]


@pytest.mark.parametrize(
    ("probe", "key", "reason"), MISTAKES, ids=[m[1] + ":" + m[2] for m in MISTAKES]
)
def test_mistake_names_the_probe_and_key(
    tmp_path: Path, probe: dict[str, Any], key: str, reason: str
) -> None:
    err = error(tmp_path, probe)
    assert (err.key, reason in err.reason) == (key, True), str(err)


def test_duplicate_names_and_targets_are_refused(tmp_path: Path) -> None:
    err = error(tmp_path, {**TCP, "name": "x"}, {**TCP, "name": "x", "target": "h:2"})
    assert (err.key, err.reason) == ("probe[1].name", "another probe is already named 'x'")
    err = error(tmp_path, TCP, {**TCP, "name": "y"})
    assert (err.key, err.reason) == ("probe[1].target", "another tcp probe has this target")


def test_table_mistakes(tmp_path: Path) -> None:
    assert error(tmp_path, table="window_s = 0\n").key == "probes.window_s"
    assert error(tmp_path, table="fail_after = 0\n").key == "probes.fail_after"
    assert "did you mean 'defaults'" in error(tmp_path, table="default = false\n").reason
    path = tmp_path / "agent.toml"
    path.write_text('probe = "x"\n' + HEAD.format(url="http://c"))
    with pytest.raises(ConfigError, match=r"probe: expected an array of tables"):
        load_config(path)


PROBE_KEYS = [
    *("name", "type", "target", "role", "acquirer", "interval_s", "timeout_s", "query"),
    *("qtype", "server_name", "ca_file", "max_offset_ms", "weak_dbm", "port"),
]
VALUES = (
    st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=40)
    | st.sampled_from(["icmp", "dns", "wifi", "acquirer", "system", "gateway", "h:1", "[::1]:1"])
)


@settings(
    deadline=None, max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    base=st.sampled_from(
        [
            TCP,
            {"type": "dns", "target": "system", "query": "q.example"},
            {"type": "wifi", "target": "auto"},
        ]
    ),
    key=st.sampled_from(PROBE_KEYS),
    value=VALUES,
)
def test_any_value_gives_settings_or_config_error(
    tmp_path: Path, base: dict[str, Any], key: str, value: object
) -> None:
    try:
        cfg = load(tmp_path, {**base, key: value})
    except ConfigError as err:
        assert err.key.startswith("probe[0].")
        assert err.reason
    else:
        assert len(cfg.probes) == 1
