"""``posmon`` over HTTPS with the collector's own certificate; a collector that never answers."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from collector.people_cli import main
from tests.helpers import create_token, self_signed_cert, start_collector


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_https_collector_with_cafile_and_without(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = self_signed_cert(tmp_path, "collector")
    collector = start_collector(tmp_path / "c.db", ["--tls-cert", str(cert), "--tls-key", str(key)])
    try:
        env = {
            "POSMON_URL": collector.url,
            "POSMON_TOKEN": create_token(collector.db_path, viewer="it"),
        }
        assert main(["terminals"], env) == 1  # the system's CAs do not know this certificate
        err = capsys.readouterr().err
        assert f"cannot verify the certificate of {collector.url}" in err and "--cafile" in err
        assert main(["terminals", "--cafile", str(cert)], env) == 0
        assert capsys.readouterr().out.strip() == "(none)"  # no terminal has reported yet
        assert main(["terminals"], {**env, "POSMON_CAFILE": str(cert)}) == 0
    finally:
        collector.stop()


def test_a_collector_that_never_answers_is_given_up_after_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with socket.socket() as server:  # accepts connections (backlog), never answers
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        code = main(["fleet", "--url", url, "--token", "t", "--timeout", "0.3"], {})
    assert code == 1
    assert f"no answer from the collector at {url} within 0.3 s" in capsys.readouterr().err
