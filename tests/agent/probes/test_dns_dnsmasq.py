"""The DNS probe against Debian's dnsmasq on a free port of 127.0.0.1.

dnsmasq answers ``store.test`` from a hosts file in ``tmp_path`` and is
authoritative for it (``--local``), so unknown names there are NXDOMAIN.  It
has no upstream servers, except that ``fwd.store.test`` is forwarded to a
port where nothing listens.  What dnsmasq 2.90 really does, pinned here:

- a name outside every configured domain: REFUSED (it has no upstream);
- a name forwarded to a dead upstream: no answer at all (the client is
  expected to retry), so the probe reports ``timeout``;
- dnsmasq killed: the kernel answers ICMP port unreachable, ``refused``;
- SERVFAIL comes from DNSSEC: a validating dnsmasq in front of a plain one
  that serves unsigned data cannot prove the answer (it logs "validation
  ... is ABANDONED", or BOGUS when the plain one answers the DS query with
  NODATA) and says SERVFAIL.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.probes.dns import probe_once
from tests.agent.probes import daemons
from tests.agent.probes.daemons import (
    Daemon,
    free_udp_port,
    running,
    start_dnsmasq,
    taken_port,
)

HOSTS = """\
192.0.2.10 till.store.test
2001:db8::10 till.store.test
192.0.2.20 pinpad.store.test
"""


def authoritative_args(tmp_path: Path) -> list[str]:
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    return [f"--addn-hosts={hosts}", "--local=/store.test/"]


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Daemon]:
    dead_upstream = free_udp_port()
    args = [*authoritative_args(tmp_path), f"--server=/fwd.store.test/127.0.0.1#{dead_upstream}"]
    with running(start_dnsmasq(tmp_path, "dnsmasq", args)) as daemon:
        yield daemon


async def test_answer_comes_from_the_hosts_file(dnsmasq: Daemon) -> None:
    result = await probe_once("till.store.test", server="127.0.0.1", port=dnsmasq.port, timeout_s=5)
    assert result.ok, dnsmasq.log()
    assert dict(result.extras) == {"resolved": "192.0.2.10", "answers": 1}
    assert result.rtt_ms is not None
    assert result.rtt_ms > 0


async def test_aaaa_answer(dnsmasq: Daemon) -> None:
    result = await probe_once(
        "till.store.test", server="127.0.0.1", port=dnsmasq.port, qtype="AAAA", timeout_s=5
    )
    assert result.ok, dnsmasq.log()
    assert result.extras["resolved"] == "2001:db8::10"


async def test_unknown_name_in_the_local_domain_is_nxdomain(dnsmasq: Daemon) -> None:
    result = await probe_once(
        "missing.store.test", server="127.0.0.1", port=dnsmasq.port, timeout_s=5
    )
    assert not result.ok
    assert result.error == "nxdomain"
    assert result.extras == {"rcode": 3}


async def test_name_outside_its_domains_is_refused_by_dnsmasq(dnsmasq: Daemon) -> None:
    result = await probe_once("www.example.com", server="127.0.0.1", port=dnsmasq.port, timeout_s=5)
    assert not result.ok
    assert result.error == "dns_refused"


async def test_dead_upstream_gets_no_answer_so_the_probe_times_out(dnsmasq: Daemon) -> None:
    result = await probe_once(
        "till.fwd.store.test", server="127.0.0.1", port=dnsmasq.port, timeout_s=0.5
    )
    assert not result.ok
    assert result.error == "timeout"
    assert "forwarded till.fwd.store.test" in dnsmasq.log()


async def test_killed_dnsmasq_is_refused(dnsmasq: Daemon) -> None:
    before = await probe_once("till.store.test", server="127.0.0.1", port=dnsmasq.port, timeout_s=5)
    assert before.ok
    dnsmasq.stop()
    result = await probe_once("till.store.test", server="127.0.0.1", port=dnsmasq.port, timeout_s=5)
    assert not result.ok
    # on loopback the port unreachable is never rate-limited, so this is not a timeout
    assert result.error == "refused"


async def test_dnssec_validation_failure_is_servfail(tmp_path: Path) -> None:
    with running(start_dnsmasq(tmp_path, "plain", authoritative_args(tmp_path))) as plain:
        unsigned = await probe_once(
            "till.store.test", server="127.0.0.1", port=plain.port, timeout_s=5
        )
        assert unsigned.ok, plain.log()
        # any root trust anchor will do: the plain server has no DNSSEC records at all
        validating_args = [
            f"--server=127.0.0.1#{plain.port}",
            "--dnssec",
            "--trust-anchor=.,12345,8,2," + "ab" * 32,
        ]
        with running(start_dnsmasq(tmp_path, "validating", validating_args)) as validating:
            result = await probe_once(
                "till.store.test", server="127.0.0.1", port=validating.port, timeout_s=5
            )
            assert not result.ok
            assert result.error == "servfail", validating.log()
            assert result.extras == {"rcode": 2}
            # BOGUS or ABANDONED, depending on how the proof of "test" fails: either is SERVFAIL
            assert re.search(r"validation till\.store\.test is (BOGUS|ABANDONED)", validating.log())


async def test_a_taken_port_is_retried_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with taken_port() as busy:
        ports = iter([busy])
        monkeypatch.setattr(daemons, "free_udp_port", lambda: next(ports, None) or free_udp_port())
        with running(start_dnsmasq(tmp_path, "dnsmasq", authoritative_args(tmp_path))) as daemon:
            assert daemon.port != busy
            assert "Address already in use" in (tmp_path / "dnsmasq-0.log").read_text()
            result = await probe_once(
                "till.store.test", server="127.0.0.1", port=daemon.port, timeout_s=5
            )
            assert result.ok
