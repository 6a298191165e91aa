"""collector.settings: flags over file over defaults; every error names where and what."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from collector.settings import CollectorSettings, SettingsError, load_settings, parse_listen


def _config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return path


def test_defaults_with_only_a_db() -> None:
    settings = load_settings(overrides={"db": "c.db"})
    assert settings == CollectorSettings(db="c.db")
    assert (settings.listen_host, settings.listen_port) == ("127.0.0.1", 8780)
    assert settings.max_body_bytes == 8 * 1024 * 1024
    assert settings.max_events_per_report == 5000
    assert settings.tls_cert is None and not settings.tls


def test_settings_are_frozen() -> None:
    settings = load_settings(overrides={"db": "c.db"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.db = "other.db"  # type: ignore[misc]


def test_file_values_and_flags_overriding_them(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("x")
    config = _config(
        tmp_path,
        f"""
        [server]
        listen = "0.0.0.0:9000"
        db = "from-file.db"
        max_body_bytes = 65536
        max_events_per_report = 100
        tls_cert = "{cert}"
        tls_key = "{key}"
        [log]
        level = "debug"
        format = "json"
        """,
    )
    settings = load_settings(
        config=config,
        overrides={"db": "from-flag.db", "listen": "[::1]:0", "max_events_per_report": "7"},
    )
    assert settings == CollectorSettings(
        db="from-flag.db",
        listen_host="::1",
        listen_port=0,
        max_body_bytes=65536,
        max_events_per_report=7,
        tls_cert=cert,
        tls_key=key,
        log_level="debug",
        log_format="json",
    )


def test_flag_given_as_none_does_not_override(tmp_path: Path) -> None:
    config = _config(tmp_path, '[server]\ndb = "file.db"\n')
    assert load_settings(config=config, overrides={"db": None}).db == "file.db"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[server]\ndb = "c.db"\nlisen = "x:1"\n', "[server] unknown key 'lisen'"),
        ('[server]\ndb = "c.db"\n[metrics]\nport = 1\n', "unknown table or key 'metrics'"),
        ('db = "c.db"\n', "unknown table or key 'db'"),
        ("server = 1\n", "'server' must be a table"),
        ('[server]\ndb = "c.db"\nmax_body_bytes = "big"\n', "[server] max_body_bytes: 'big'"),
        ('[server]\ndb = "c.db"\nmax_body_bytes = true\n', "[server] max_body_bytes"),
        ('[server]\ndb = "c.db"\nmax_events_per_report = 0\n', "max_events_per_report: 0 is out"),
        ('[server]\ndb = "c.db"\nmax_events_per_report = 20000\n', "allowed 1..10000"),
        ('[server]\ndb = "c.db"\nlisten = 8780\n', "[server] listen: expected a string"),
        ("[server]\ndb = 5\n", "[server] db: expected a database file path"),
        ('[server]\ndb = "postgresql://h/db"\n', "PostgreSQL backend not available yet"),
        ('[server]\ndb = "c.db"\ntls_cert = "/nonexistent.pem"\n', "[server] tls_cert"),
        ('[server]\ndb = "c.db"\n[log]\nlevel = "chatty"\n', "[log] level: 'chatty'"),
        ('[server]\ndb = "c.db"\n[log]\nformat = "xml"\n', "[log] format"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_file_errors_name_the_file_and_key(tmp_path: Path, text: str, says: str) -> None:
    config = _config(tmp_path, text)
    with pytest.raises(SettingsError) as err:
        load_settings(config=config)
    assert str(err.value).startswith(str(config))
    assert says in str(err.value)


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"db": "c.db", "listen": "8780"}, "--listen: '8780' is not of the form"),
        ({"db": "c.db", "listen": "::1:80"}, "--listen: '::1:80': write an IPv6 address"),
        ({"db": "c.db", "listen": "h:65536"}, "--listen: 'h:65536': port must be"),
        ({"db": "c.db", "listen": "h:-1"}, "port must be"),
        ({"db": "c.db", "max_body_bytes": "12"}, "--max-body-bytes: 12 is out of range"),
        ({"db": "c.db", "log_level": "loud"}, "--log-level"),
        ({"db": "postgres://h/db"}, "--db: PostgreSQL backend not available yet"),
        ({"db": "mysql://h/db"}, "--db: 'mysql://h/db' is not a file path"),
        ({"db": ""}, "--db: expected a database file path"),
        ({}, "db: no database given"),
        ({"db": "c.db", "colour": "blue"}, "--colour: unknown setting"),
    ],
)
def test_flag_errors_name_the_flag(overrides: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(overrides=overrides)
    assert says in str(err.value)


def test_tls_needs_both_cert_and_key(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(SettingsError) as err:
        load_settings(overrides={"db": "c.db", "tls_cert": str(cert)})
    assert str(err.value) == "--tls-cert: tls_cert needs tls_key too (give both or neither)"


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings(config=tmp_path / "nope.toml")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:0", ("127.0.0.1", 0)),
        ("0.0.0.0:8780", ("0.0.0.0", 8780)),
        ("collector.internal:443", ("collector.internal", 443)),
        ("[::]:8780", ("::", 8780)),
    ],
)
def test_parse_listen(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected
