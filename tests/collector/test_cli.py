"""posmon-collector and posmon as real processes: tokens, help, bad settings."""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

import protocol
from collector.storage import hash_token
from tests.collector.wire import count, make_report, post_report, rows
from tests.helpers import (
    ROOT,
    CollectorProc,
    create_token,
    run_collector_cli,
    self_signed_cert,
    start_collector,
)


def test_token_created_while_the_server_runs_works_at_once(collector: CollectorProc) -> None:
    done = run_collector_cli(
        "token", "create", "--db", str(collector.db_path), "--terminal", "T-1", "--store", "S-1"
    )

    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    token = lines[-1]
    assert len(lines) == 2 and "shown once" in lines[0]
    assert len(token) >= 43 and " " not in token
    reply = post_report(collector.url, protocol.encode_report(make_report([1])), token)
    assert reply.status == 200, reply.body
    assert count(collector.db_path, "events") == 1


def test_viewer_token_is_created_but_cannot_upload(collector: CollectorProc) -> None:
    token = create_token(collector.db_path, viewer="central-it")
    reply = post_report(collector.url, protocol.encode_report(make_report([1])), token)
    assert reply.status == 403
    assert rows(collector.db_path, "SELECT kind, name, terminal_id FROM tokens") == [
        ("viewer", "central-it", None)
    ]


def test_tokens_are_stored_hashed_never_in_plaintext(tmp_path: Path) -> None:
    db = tmp_path / "collector.db"
    tokens = [create_token(db, terminal=f"T-{i}", store="S-1") for i in range(3)]
    tokens.append(create_token(db, viewer="auditor"))
    collector = start_collector(db)  # the server reads them too (and writes WAL)
    try:
        for token in tokens:
            assert post_report(collector.url, b"{}", token).status in (400, 403)
        files = [p for p in tmp_path.iterdir() if p.name.startswith("collector.db")]
        for path in files:
            data = path.read_bytes()
            for token in tokens:
                assert token.encode() not in data, f"plaintext token in {path.name}"
    finally:
        collector.stop()
    stored = {r[0] for r in rows(db, "SELECT token_hash FROM tokens")}
    assert stored == {hash_token(t) for t in tokens}


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["token", "create", "--db", "{db}", "--terminal", "T-1"], "--terminal needs --store"),
        (["token", "create", "--db", "{db}", "--viewer", "x", "--store", "S"], "--store"),
        (["token", "create", "--db", "{db}", "--terminal", " ", "--store", "S"], "terminal_id"),
        (["token", "create", "--db", "{db}", "--terminal", "T", "--viewer", "x"], "not allowed"),
        (["token", "create", "--terminal", "T", "--store", "S"], "--db"),
        (["serve", "--db", "{db}", "--listen", "localhost"], "--listen"),
        (["serve", "--db", "{db}", "--listen", "127.0.0.1:99999"], "--listen"),
        (["serve", "--db", "{db}", "--max-body-bytes", "lots"], "--max-body-bytes"),
        (["serve", "--db", "{db}", "--log-level", "loud"], "--log-level"),
        (["serve", "--db", "{db}", "--tls-cert", "{db}"], "tls_key"),
        (["serve", "--db", "postgresql://db.example/posmon"], "PostgreSQL backend not available"),
        (["serve", "--db", "{db}", "--config", "{dir}/missing.toml"], "missing.toml"),
        (["serve"], "--db"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_usage_exits_2_naming_the_problem(tmp_path: Path, args: list[str], says: str) -> None:
    db = tmp_path / "c.db"
    db.touch()
    argv = [a.format(db=db, dir=tmp_path) for a in args]

    done = run_collector_cli(*argv)

    assert done.returncode == 2, (done.stdout, done.stderr)
    assert says in done.stderr
    assert done.stdout.strip() == ""


def test_bad_key_in_config_file_exits_2_naming_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text('[server]\ndb = "c.db"\nmax_events_per_report = 0\n')
    done = run_collector_cli("serve", "--config", str(config))
    assert done.returncode == 2
    assert f"{config}: [server] max_events_per_report" in done.stderr


def test_unopenable_database_exits_1(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, just bytes" * 100)
    done = run_collector_cli("serve", "--db", str(garbage), "--listen", "127.0.0.1:0")
    assert done.returncode == 1
    assert "cannot open the database" in done.stderr


def test_config_file_is_used_and_flags_override_it(tmp_path: Path) -> None:
    config = tmp_path / "collector.toml"
    config.write_text(
        f'[server]\nlisten = "127.0.0.1:1"\ndb = "{tmp_path / "c.db"}"\n'
        '[log]\nlevel = "info"\nformat = "json"\n'
    )
    # listen from the file would fail (port 1 needs root or is taken); the flag wins
    collector = start_collector(tmp_path / "other.db", ["--config", str(config)])
    try:
        assert collector.url.startswith("http://127.0.0.1:")
        assert not collector.url.endswith(":1")
        assert (tmp_path / "other.db").exists() and not (tmp_path / "c.db").exists()
    finally:
        collector.stop()


HELP = [
    ["--help"],
    ["serve", "--help"],
    ["token", "--help"],
    ["token", "create", "--help"],
]


@pytest.mark.parametrize("args", HELP, ids=[" ".join(a) for a in HELP])
def test_every_command_has_help(args: list[str]) -> None:
    done = run_collector_cli(*args)
    assert done.returncode == 0
    assert "usage: posmon-collector" in done.stdout
    description = done.stdout.split("\n\n")[1]
    assert len(description) > 30


def test_shipped_example_config_is_valid() -> None:
    from collector.settings import load_settings

    settings = load_settings(config=ROOT / "deploy" / "collector.toml")
    assert settings.db.endswith(".db")


def _posmon(*args: str) -> subprocess.CompletedProcess[str]:
    code = "import sys; from collector.people_cli import main; sys.exit(main())"
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_people_cli_lists_its_commands() -> None:
    shown = _posmon("--help")
    assert shown.returncode == 0
    for command in ("fleet", "terminal", "txns", "incidents"):
        assert command in shown.stdout


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_collector_serves_https_with_its_own_certificate(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path, "collector")
    collector = start_collector(tmp_path / "c.db", ["--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        assert collector.url.startswith("https://127.0.0.1:")
        context = ssl.create_default_context(cafile=str(cert))
        with urllib.request.urlopen(collector.url + "/healthz", context=context, timeout=30) as r:
            assert json.loads(r.read()) == {"status": "ok"}
    finally:
        collector.stop()


def test_unloadable_tls_files_exit_2(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("not a certificate")
    key.write_text("not a key")
    done = run_collector_cli(
        "serve", "--db", str(tmp_path / "c.db"), "--tls-cert", str(cert), "--tls-key", str(key)
    )
    assert done.returncode == 2
    assert "--tls-cert/--tls-key: cannot load" in done.stderr
