"""agent.config: real TOML files in tmp_path, every mistake named by file and key."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config import (
    AgentSettings,
    ApiSettings,
    CollectorLinkSettings,
    ConfigError,
    HostSettings,
    IdentitySettings,
    LogSettings,
    SpoolSettings,
    SyntheticSettings,
    UplinkSettings,
    load_config,
)
from agent.probes.settings import ProbesSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY_AGENT_TOML = REPO / "deploy" / "agent.toml"

# A config as {section: {key: raw TOML value}}; section "" holds top-level keys.
Doc = dict[str, dict[str, str]]

MINIMAL: Doc = {
    "agent": {"terminal_id": '"T-0001"', "store_id": '"S-042"'},
    "collector": {"url": '"https://collector.example:8443"', "token": '"tok-123"'},
    "spool": {"path": '"/var/lib/posmon/spool.db"'},
}

# Every key the loader knows, by section (deploy/agent.toml must mention each).
ALL_KEYS = {
    "agent": {"terminal_id", "store_id"},
    "collector": {"url", "token", "token_file", "timeout_s", "ca_file"},
    "spool": {"path", "max_bytes", "max_age_s", "sync"},
    "uplink": {
        "interval_s",
        "batch_max_events",
        "batch_max_bytes",
        "backoff_initial_s",
        "backoff_max_s",
    },
    "host": {"interval_s", "disk_path"},
    "api": {"enabled", "listen"},
    "payments": {"timeout_s", "technical_codes"},
    "log": {"level", "format"},
    "synthetic": {"rate_per_s"},
    "probes": {"window_s", "interval_s", "timeout_s", "fail_after", "recover_after", "defaults"},
    # [[probe]] tables (commented out in the example)
    "probe": {
        *("name", "type", "target", "role", "acquirer", "interval_s", "timeout_s"),
        *("query", "qtype", "server_name", "ca_file", "max_offset_ms", "weak_dbm"),
    },
    # [[device]] tables (commented out in the example): the common keys and each kind's
    "device": {
        *("name", "kind", "port", "baudrate", "interval_s", "timeout_s", "heartbeat_s"),
        *("ups", "username", "password", "password_file"),
        *("weak_dbm", "use_cereg", "allow_roaming"),
        *("mode", "usb_id", "usb_sysfs", "liveness", "poll_message", "poll_response"),
        *("lrc_init", "lrc_includes_stx", "retries"),
    },
    # [[logfile]] tables and their [[logfile.rule]] tables (commented out in the example)
    "logfile": {"path", "encoding", "poll_s", "start_at"},
    "logfile.rule": {"pattern", "set", "outcome_map", "time_format", "timezone"},
}

DELETE = object()


def render(doc: Doc) -> str:
    lines: list[str] = []
    for section, keys in sorted(doc.items(), key=lambda item: item[0] != ""):
        if section:
            lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {value}" for key, value in keys.items())
    return "\n".join(lines) + "\n"


def changed(doc: Doc, dotted: str, value: str | object) -> Doc:
    section, _, key = dotted.rpartition(".")
    new = {name: dict(keys) for name, keys in doc.items()}
    if value is DELETE:
        del new[section][key]
    else:
        assert isinstance(value, str)
        new.setdefault(section, {})[key] = value
    return new


def write(tmp_path: Path, text: str, name: str = "agent.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path)
    err = info.value
    assert err.file == str(path)
    assert str(err) == f"{path}: {err.key}: {err.reason}"
    return err


# ── valid files ─────────────────────────────────────────────────────────────


def test_full_file_sets_every_field(tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    (tmp_path / "agent.token").write_text("  s3cret-token\n")
    path = write(
        tmp_path,
        """
        [agent]
        terminal_id = "T-0001"
        store_id = "S-042"

        [collector]
        url = "https://collector.example:8443/"
        token_file = "agent.token"
        timeout_s = 2.5
        ca_file = "ca.pem"

        [spool]
        path = "spool.db"
        max_bytes = "1GiB"
        max_age_s = 3600
        sync = "normal"

        [uplink]
        interval_s = 0.01
        batch_max_events = 10000
        batch_max_bytes = 2048
        backoff_initial_s = 0.5
        backoff_max_s = 0.5

        [host]
        interval_s = 0.25
        disk_path = "/srv"

        [api]
        enabled = false
        listen = "[::1]:0"

        [log]
        level = "debug"
        format = "json"

        [synthetic]
        rate_per_s = 200

        [probes]
        window_s = 30
        defaults = false
        """,
    )
    assert load_config(path) == AgentSettings(
        config_path=path,
        agent=IdentitySettings(terminal_id="T-0001", store_id="S-042"),
        collector=CollectorLinkSettings(
            url="https://collector.example:8443",
            token="s3cret-token",
            timeout_s=2.5,
            ca_file=tmp_path / "ca.pem",
        ),
        spool=SpoolSettings(
            path=tmp_path / "spool.db", max_bytes=1024**3, max_age_s=3600.0, sync="normal"
        ),
        uplink=UplinkSettings(
            interval_s=0.01,
            batch_max_events=10000,
            batch_max_bytes=2048,
            backoff_initial_s=0.5,
            backoff_max_s=0.5,
        ),
        host=HostSettings(interval_s=0.25, disk_path=Path("/srv")),
        api=ApiSettings(enabled=False, host="::1", port=0),
        log=LogSettings(level="debug", format="json"),
        synthetic=SyntheticSettings(rate_per_s=200.0),
        probes=ProbesSettings(window_s=30.0, defaults=False, probes=()),
    )


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, render(MINIMAL))
    cfg = load_config(path)
    assert cfg.config_path == path
    assert cfg.agent == IdentitySettings(terminal_id="T-0001", store_id="S-042")
    assert cfg.collector == CollectorLinkSettings(
        url="https://collector.example:8443", token="tok-123"
    )
    assert cfg.collector.timeout_s == 10.0
    assert cfg.collector.ca_file is None
    assert cfg.spool == SpoolSettings(path=Path("/var/lib/posmon/spool.db"))
    assert cfg.spool.max_bytes == 64 * 1024 * 1024
    assert cfg.spool.max_age_s == 7 * 86400.0
    assert cfg.spool.sync == "full"
    assert cfg.uplink == UplinkSettings(
        interval_s=5.0,
        batch_max_events=500,
        batch_max_bytes=512 * 1024,
        backoff_initial_s=1.0,
        backoff_max_s=300.0,
    )
    assert cfg.host == HostSettings(interval_s=60.0, disk_path=Path("/"))
    assert cfg.api == ApiSettings(enabled=True, host="127.0.0.1", port=8787)
    assert cfg.log == LogSettings(level="info", format="auto")
    assert cfg.synthetic == SyntheticSettings(rate_per_s=0.0)


def test_numbers_are_floats_even_when_written_as_integers(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, render(changed(MINIMAL, "uplink.interval_s", "2"))))
    assert cfg.uplink.interval_s == 2.0
    assert type(cfg.uplink.interval_s) is float


def test_token_is_not_shown_by_repr(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, render(MINIMAL)))
    assert "tok-123" not in repr(cfg)


def test_deploy_example_loads_and_lists_every_key(tmp_path: Path) -> None:
    text = DEPLOY_AGENT_TOML.read_text(encoding="utf-8")
    token_file = tmp_path / "agent.token"
    token_file.write_text("example-token\n")
    assert '"/etc/posmon/agent.token"' in text
    path = write(tmp_path, text.replace('"/etc/posmon/agent.token"', json.dumps(str(token_file))))

    cfg = load_config(path)

    assert cfg.collector.token == "example-token"
    assert cfg.spool.path == Path("/var/lib/posmon/spool.db")
    assert cfg.api == ApiSettings()
    # The example shows the defaults.
    defaults = load_config(write(tmp_path, render(MINIMAL), name="minimal.toml"))
    for name in ("spool", "uplink", "host", "api", "log", "synthetic", "payments"):
        if name == "spool":
            assert dataclasses.replace(cfg.spool, path=defaults.spool.path) == defaults.spool
        else:
            assert getattr(cfg, name) == getattr(defaults, name), name
    assert cfg.collector.timeout_s == defaults.collector.timeout_s
    # Every key appears, set or commented out ("# key = ...").
    present: dict[str, set[str]] = {name: set(keys) for name, keys in tomllib.loads(text).items()}
    section = ""
    for line in text.splitlines():
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section = m[1]
        elif m := re.fullmatch(r"# \[\[(probe|device|logfile|logfile\.rule)\]\]\s*(#.*)?", line):
            section = m[1]
            present.setdefault(section, set())
        elif m := re.match(r"# (\w+) = ", line):
            present[section].add(m[1])
    assert present == ALL_KEYS


# ── mistakes ────────────────────────────────────────────────────────────────

MISTAKES = [
    # (dotted key to change, new raw value or DELETE, key in the error, reason contains)
    ("agent.terminal_id", DELETE, "agent.terminal_id", "missing required key"),
    ("agent.terminal_id", '""', "agent.terminal_id", "must not be empty"),
    ("agent.terminal_id", '"T 0001"', "agent.terminal_id", "1–128 characters"),
    ("agent.terminal_id", '"' + "x" * 129 + '"', "agent.terminal_id", "1–128 characters"),
    ("agent.terminal_id", "42", "agent.terminal_id", "expected a string, got an integer"),
    ("agent.store_id", DELETE, "agent.store_id", "missing required key"),
    ("agent.store_id", '"S/042"', "agent.store_id", "1–128 characters"),
    ("collector.url", DELETE, "collector.url", "missing required key"),
    ("collector.url", '"ftp://collector.example"', "collector.url", "http:// or https://"),
    ("collector.url", '"collector.example:8443"', "collector.url", "http:// or https://"),
    ("collector.url", '"https://"', "collector.url", "must name a host"),
    ("collector.url", '"https://:8443/x"', "collector.url", "must name a host"),
    ("collector.url", '"https://c.example:99999"', "collector.url", "not a valid URL"),
    ("collector.url", '"https://u:p@c.example"', "collector.url", "credentials"),
    ("collector.url", '"https://c.example/?a=1"', "collector.url", "query"),
    ("collector.token", DELETE, "collector.token", "set token or token_file"),
    ("collector.token", '""', "collector.token", "must not be empty"),
    ("collector.token", '"two words"', "collector.token", "without spaces"),
    ("collector.token", "123", "collector.token", "expected a string"),
    ("collector.token_file", '"/etc/hostname"', "collector.token", "not both"),
    ("collector.timeout_s", "0", "collector.timeout_s", "must be > 0, got 0"),
    ("collector.timeout_s", "true", "collector.timeout_s", "expected a number, got a boolean"),
    ("collector.timeout_s", '"10"', "collector.timeout_s", "expected a number, got a string"),
    ("collector.ca_file", '"no-such-ca.pem"', "collector.ca_file", "file not found"),
    ("spool.path", DELETE, "spool.path", "missing required key"),
    ("spool.path", "5", "spool.path", "expected a string"),
    ("spool.path", '""', "spool.path", "must not be empty"),
    ("spool.max_bytes", "65535", "spool.max_bytes", "must be ≥ 65536 bytes, got 65535 bytes"),
    ("spool.max_bytes", '"32KiB"', "spool.max_bytes", "must be ≥ 65536 bytes"),
    ("spool.max_bytes", '"64 furlongs"', "spool.max_bytes", "'64MiB'"),
    ("spool.max_bytes", '"-1"', "spool.max_bytes", "'64MiB'"),
    ("spool.max_bytes", '"1.5GiB"', "spool.max_bytes", "'64MiB'"),
    ("spool.max_bytes", "true", "spool.max_bytes", "got a boolean"),
    ("spool.max_bytes", "1e9", "spool.max_bytes", "got a float"),
    ("spool.max_age_s", "0", "spool.max_age_s", "must be > 0"),
    ("spool.max_age_s", "-5", "spool.max_age_s", "must be > 0"),
    ("spool.max_age_s", "nan", "spool.max_age_s", "finite"),
    ("spool.max_age_s", "inf", "spool.max_age_s", "finite"),
    ("spool.sync", '"fast"', "spool.sync", "must be one of 'full', 'normal', got 'fast'"),
    ("spool.sync", "1", "spool.sync", "one of 'full', 'normal'"),
    ("uplink.interval_s", "0", "uplink.interval_s", "must be > 0"),
    ("uplink.interval_s", "false", "uplink.interval_s", "got a boolean"),
    ("uplink.batch_max_events", "0", "uplink.batch_max_events", "must be ≥ 1"),
    ("uplink.batch_max_events", "10001", "uplink.batch_max_events", "must be ≤ 10000"),
    ("uplink.batch_max_events", "1.5", "uplink.batch_max_events", "expected an integer"),
    ("uplink.batch_max_bytes", "1023", "uplink.batch_max_bytes", "must be ≥ 1024 bytes"),
    ("uplink.batch_max_bytes", '"17MiB"', "uplink.batch_max_bytes", "must be ≤ 16777216"),
    ("uplink.backoff_initial_s", "0", "uplink.backoff_initial_s", "must be > 0"),
    ("uplink.backoff_max_s", "0.5", "uplink.backoff_max_s", "≥ backoff_initial_s (1)"),
    ("host.interval_s", "-1", "host.interval_s", "must be > 0"),
    ("host.disk_path", "1", "host.disk_path", "expected a string"),
    ("api.enabled", '"yes"', "api.enabled", "expected true or false"),
    ("api.listen", '"0.0.0.0:8787"', "api.listen", "loopback-only for security"),
    ("api.listen", '"192.168.1.10:8787"', "api.listen", "loopback-only for security"),
    ("api.listen", '"[::]:8787"', "api.listen", "loopback-only for security"),
    ("api.listen", '"pos.example:8787"', "api.listen", "loopback-only for security"),
    ("api.listen", '"127.0.0.1"', "api.listen", "HOST:PORT"),
    ("api.listen", '"127.0.0.1:70000"', "api.listen", "0–65535"),
    ("api.listen", '"127.0.0.1:-1"', "api.listen", "0–65535"),
    ("api.listen", '"127.0.0.1:http"', "api.listen", "0–65535"),
    ("api.listen", '"::1:8787"', "api.listen", "[::1]:8787"),
    ("api.listen", '"[::1]8787"', "api.listen", "[IPv6]:PORT"),
    ("api.listen", "8787", "api.listen", "expected a string"),
    ("log.level", '"verbose"', "log.level", "'debug', 'info', 'warning', 'error'"),
    ("log.format", '"xml"', "log.format", "'auto', 'json', 'console'"),
    ("synthetic.rate_per_s", "-1", "synthetic.rate_per_s", "must be ≥ 0"),
    # typos are never ignored
    ("uplink.intervl_s", "5", "uplink.intervl_s", "unknown key; did you mean 'interval_s'?"),
    ("spool.max_byte", "65536", "spool.max_byte", "did you mean 'max_bytes'?"),
    ("log.colour", "true", "log.colour", "unknown key; known: level, format"),
    ("uplnk.interval_s", "5", "uplnk", "unknown section; did you mean 'uplink'?"),
    ("nosuch.target", '"x"', "nosuch", "unknown section; known: agent, collector, spool"),
    (".uplink", "5", "uplink", "expected a table [uplink], got an integer"),
    (".agent", '"T-1"', "agent", "expected a table [agent], got a string"),
]


@pytest.mark.parametrize(
    ("change", "value", "key", "reason"),
    MISTAKES,
    ids=[f"{c}={'DELETE' if v is DELETE else v}"[:60] for c, v, _, _ in MISTAKES],
)
def test_mistake_names_file_and_key(
    tmp_path: Path, change: str, value: str | object, key: str, reason: str
) -> None:
    doc = changed(MINIMAL, change, value)
    if change == ".agent":
        del doc["agent"]
    err = load_error(write(tmp_path, render(doc)))
    assert err.key == key
    assert reason in err.reason


def test_missing_required_section(tmp_path: Path) -> None:
    doc = {name: keys for name, keys in MINIMAL.items() if name != "spool"}
    err = load_error(write(tmp_path, render(doc)))
    assert (err.key, err.reason) == ("spool", "missing required section [spool]")


def test_misspelt_required_key_points_at_the_typo(tmp_path: Path) -> None:
    doc = changed(changed(MINIMAL, "agent.terminal_id", DELETE), "agent.terminal_ud", '"T-1"')
    err = load_error(write(tmp_path, render(doc)))
    assert err.key == "agent.terminal_id"
    assert "'agent.terminal_ud'" in err.reason


def test_misspelt_required_section_points_at_the_typo(tmp_path: Path) -> None:
    doc = {("colector" if name == "collector" else name): keys for name, keys in MINIMAL.items()}
    err = load_error(write(tmp_path, render(doc)))
    assert err.key == "collector"
    assert "missing required section [collector]" in err.reason
    assert "'colector'" in err.reason


def test_toml_syntax_error_gives_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '[agent]\nterminal_id = "T-1"\nstore_id = \n')
    err = load_error(path)
    assert err.key == "<toml>"
    assert "line 3, column 12" in err.reason


def test_duplicate_key_is_a_toml_error(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, render(MINIMAL) + "[agent]\nstore_id = 'S-2'\n"))
    assert err.key == "<toml>"


def test_file_that_is_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_bytes(b'[agent]\nterminal_id = "\xff"\n')
    err = load_error(path)
    assert err.key == "<toml>"
    assert "UTF-8" in err.reason


def test_deeply_nested_value_is_a_config_error(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, "a = " + "[" * 5000 + "]" * 5000 + "\n"))
    assert err.key == "<toml>"


def test_missing_file(tmp_path: Path) -> None:
    err = load_error(tmp_path / "nope.toml")
    assert (err.key, err.reason) == ("<file>", "config file not found")


def test_directory_instead_of_file(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    err = load_error(tmp_path / "conf.d")
    assert err.key == "<file>"
    assert "cannot read" in err.reason


def test_config_error_is_an_exception_with_fields_and_pickles() -> None:
    err = ConfigError("/etc/posmon/agent.toml", "uplink.interval_s", "must be > 0, got 0")
    assert isinstance(err, Exception)
    assert str(err) == "/etc/posmon/agent.toml: uplink.interval_s: must be > 0, got 0"
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.file, copy.key, copy.reason) == (err.file, err.key, err.reason)


# ── loopback-only local API ─────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("listen", "host", "port"),
    [
        ("127.0.0.1:8787", "127.0.0.1", 8787),
        ("127.0.0.1:0", "127.0.0.1", 0),
        ("127.1.2.3:65535", "127.1.2.3", 65535),
        ("[::1]:8787", "::1", 8787),
        ("[0:0:0:0:0:0:0:1]:9", "::1", 9),
        ("localhost:8787", "localhost", 8787),
        ("LocalHost:1", "localhost", 1),
    ],
)
def test_loopback_listen_addresses(tmp_path: Path, listen: str, host: str, port: int) -> None:
    cfg = load_config(write(tmp_path, render(changed(MINIMAL, "api.listen", json.dumps(listen)))))
    assert (cfg.api.host, cfg.api.port) == (host, port)


def test_non_loopback_refused_even_when_api_disabled(tmp_path: Path) -> None:
    doc = changed(changed(MINIMAL, "api.enabled", "false"), "api.listen", '"10.0.0.5:8787"')
    err = load_error(write(tmp_path, render(doc)))
    assert err.key == "api.listen"
    assert "'10.0.0.5'" in err.reason


# ── token_file ──────────────────────────────────────────────────────────────


def with_token_file(value: str) -> Doc:
    return changed(changed(MINIMAL, "collector.token", DELETE), "collector.token_file", value)


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    token = tmp_path / "secret" / "agent.token"
    token.parent.mkdir()
    token.write_text("\n  abc.DEF_123-xyz  \r\n")
    cfg = load_config(write(tmp_path, render(with_token_file(json.dumps(str(token))))))
    assert cfg.collector.token == "abc.DEF_123-xyz"


def test_relative_token_file_is_beside_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "agent.token").write_text("from-etc")
    write(tmp_path / "etc", render(with_token_file('"agent.token"')))
    monkeypatch.chdir(tmp_path)  # the file is not in the working directory
    cfg = load_config("etc/agent.toml")
    assert cfg.collector.token == "from-etc"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot read"),
        ("", "is empty"),
        ("  \n\t\n", "is empty"),
        ("line-one\nline-two\n", "one line of printable ASCII"),
        ("tok\x00en", "one line of printable ASCII"),
        ("tökén", "one line of printable ASCII"),
        (b"\xff\xfe", "not a text file"),
        (b"x" * (64 * 1024 + 1), "too large"),
        ("dir", "cannot read"),
    ],
    ids=["missing", "empty", "blank", "two-lines", "nul", "non-ascii", "binary", "huge", "dir"],
)
def test_bad_token_file(tmp_path: Path, content: str | bytes | None, reason: str) -> None:
    token = tmp_path / "agent.token"
    if content == "dir":
        token.mkdir()
    elif isinstance(content, bytes):
        token.write_bytes(content)
    elif content is not None:
        token.write_text(content, encoding="utf-8")
    err = load_error(write(tmp_path, render(with_token_file('"agent.token"'))))
    assert err.key == "collector.token_file"
    assert reason in err.reason
    assert str(token) in err.reason


# ── relative paths ──────────────────────────────────────────────────────────


def test_relative_paths_resolve_against_the_config_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    (conf / "tls").mkdir(parents=True)
    (conf / "tls" / "ca.pem").write_text("pem")
    doc = changed(MINIMAL, "spool.path", '"state/spool.db"')
    doc = changed(doc, "collector.ca_file", '"tls/ca.pem"')
    doc = changed(doc, "host.disk_path", '"data"')
    write(conf, render(doc))
    monkeypatch.chdir(tmp_path)

    cfg = load_config(Path("conf/agent.toml"))

    assert cfg.config_path == conf / "agent.toml"
    assert cfg.config_path.is_absolute()
    assert cfg.spool.path == conf / "state" / "spool.db"
    assert cfg.collector.ca_file == conf / "tls" / "ca.pem"
    assert cfg.host.disk_path == Path("data")  # a mount point to measure, taken as given


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("pem")
    doc = changed(MINIMAL, "collector.ca_file", json.dumps(str(ca)))
    cfg = load_config(write(tmp_path, render(doc)))
    assert cfg.collector.ca_file == ca
    assert cfg.spool.path == Path("/var/lib/posmon/spool.db")


# ── sizes ───────────────────────────────────────────────────────────────────


@pytest.mark.parametrize(
    ("raw", "size"),
    [
        ("65536", 65536),
        ('"65536"', 65536),
        ('"64MiB"', 64 * 1024**2),
        ('"512KiB"', 512 * 1024),
        ('"1GiB"', 1024**3),
        ('"10MB"', 10 * 1000**2),
        ('"100kB"', 100_000),
        ('"100KB"', 100_000),
        ('"2GB"', 2 * 1000**3),
        ('"70000B"', 70000),
        ('" 64 MiB "', 64 * 1024**2),
    ],
)
def test_size_strings(tmp_path: Path, raw: str, size: int) -> None:
    cfg = load_config(write(tmp_path, render(changed(MINIMAL, "spool.max_bytes", raw))))
    assert cfg.spool.max_bytes == size


def test_batch_size_accepts_units_within_its_range(tmp_path: Path) -> None:
    cfg = load_config(
        write(tmp_path, render(changed(MINIMAL, "uplink.batch_max_bytes", '"16MiB"')))
    )
    assert cfg.uplink.batch_max_bytes == 16 * 1024**2


# ── frozen ──────────────────────────────────────────────────────────────────


def test_settings_are_frozen(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, render(MINIMAL)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.agent = IdentitySettings("T-2", "S-2")  # type: ignore[misc]
    assert not hasattr(cfg, "__dict__")  # slots
    parts: list[Any] = [getattr(cfg, f.name) for f in dataclasses.fields(cfg)]
    sections = [part for part in parts if dataclasses.is_dataclass(part)]
    assert len(sections) == 10
    for part in sections:
        name = dataclasses.fields(part)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(part, name, getattr(part, name))
        assert not hasattr(part, "__dict__")


# ── garbage in: ConfigError or settings, never another exception ────────────


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    assert isinstance(value, dict)
    return "{" + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


SCALARS = (
    st.booleans()
    | st.integers()
    | st.floats()
    | st.text(st.characters(codec="utf-8"), max_size=300)
    | st.sampled_from(
        ["", "64MiB", "0KiB", "127.0.0.1:0", "[::1]:1", "0.0.0.0:80", "https://h", "/", ".."]
    )
)
VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), children, max_size=3)
    ),
    max_leaves=6,
)
KEYS = [
    *sorted(
        f"{s}.{k}"
        for s, keys in ALL_KEYS.items()
        if s not in ("probe", "device", "logfile", "logfile.rule")
        for k in keys
    ),
    "uplink.typo",
]  # [[probe]] items have their own test in tests/agent/probes/test_settings.py


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(key=st.sampled_from(KEYS), value=VALUES)
def test_any_value_gives_settings_or_config_error(
    tmp_path_factory: pytest.TempPathFactory, key: str, value: object
) -> None:
    path = write(tmp_path_factory.getbasetemp(), render(changed(MINIMAL, key, toml_value(value))))
    try:
        assert isinstance(load_config(path), AgentSettings)
    except ConfigError as err:
        assert err.file == str(path)
        assert err.key in (key, "<toml>", "collector.token", "uplink.backoff_max_s")
