"""Network namespace pairs for tests, and running Python code inside one.

A pair is two fresh namespaces joined by a veth link; nothing is created in
the host's own namespace, and :func:`netns_pair` deletes both namespaces
(and with them the link) on exit, even when the test failed::

    require_tools("nft")  # skips unless root with ip (and nft) installed
    with netns_pair() as pair:
        pair.nft(pair.target, "table inet t { ... }")
        result = pair.call(pair.source, some_module_function, target=pair.target_ip)

Addresses come from 198.18.0.0/15, the range reserved for benchmarking
tests (RFC 2544); packets to them never leave the pair.
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[3]
PREFIX = "posmon-test-"
SOURCE_IP, TARGET_IP = "198.18.0.1", "198.18.0.2"
#: setpriv arguments that run a command as root but without CAP_NET_RAW.
NO_NET_RAW = ("setpriv", "--inh-caps=-net_raw", "--bounding-set=-net_raw", "--")
_serial = itertools.count()


def require_tools(*tools: str) -> None:
    """Skip the calling test unless we are root and ``ip`` and ``tools`` are installed."""
    if sys.platform != "linux" or os.geteuid() != 0:
        pytest.skip("network namespaces need root on Linux")
    missing = [tool for tool in ("ip", *tools) if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)}")


def run(*command: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; fail the test with its output if it fails."""
    done = subprocess.run(command, input=input, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(command)} exited {done.returncode}: {done.stderr}")
    return done


def _remove_stale() -> None:
    """Delete pairs left behind by test runs that were killed (their pid is gone)."""
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    for line in listing.stdout.splitlines():
        name = line.split(" ", 1)[0]
        if not name.startswith(PREFIX):
            continue
        pid = name[len(PREFIX) :].split("-", 1)[0]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            subprocess.run(["ip", "netns", "delete", name], capture_output=True)


@dataclass(frozen=True)
class NetnsPair:
    """Namespaces ``source`` (SOURCE_IP) and ``target`` (TARGET_IP) on one veth link.

    Each has its end of the link named ``veth0`` and its loopback up; the
    source routes everything else via the target.
    """

    source: str
    target: str
    source_ip: str = SOURCE_IP
    target_ip: str = TARGET_IP
    link: str = "veth0"

    def ip(self, ns: str, *args: str) -> subprocess.CompletedProcess[str]:
        return run("ip", "-n", ns, *args)

    def exec(self, ns: str, *command: str) -> subprocess.CompletedProcess[str]:
        return run("ip", "netns", "exec", ns, *command)

    def sysctl(self, ns: str, key: str, value: str) -> None:
        """Set a per-namespace sysctl (without needing procps' sysctl)."""
        path = "/proc/sys/" + key.replace(".", "/")
        self.exec(ns, "sh", "-c", 'printf "%s\\n" "$1" > "$2"', "sh", value, path)

    def nft(self, ns: str, ruleset: str) -> None:
        """Load an nftables ruleset into ``ns``."""
        run("ip", "netns", "exec", ns, "nft", "-f", "-", input=ruleset)

    def call(
        self, ns: str, function: Callable[..., Any], *, prefix: Sequence[str] = (), **kwargs: Any
    ) -> Any:
        """Run ``function(**kwargs)`` (awaited if a coroutine) in a Python inside ``ns``.

        ``function`` must be a module-level function; arguments and result
        travel as JSON.  ``prefix`` goes between ``ip netns exec NS`` and
        Python, e.g. :data:`NO_NET_RAW`.
        """
        command = self._python(ns, function, prefix, kwargs)
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300)
        if done.returncode != 0:
            raise AssertionError(f"{function.__name__} in {ns} failed:\n{done.stderr}")
        return json.loads(done.stdout.splitlines()[-1])

    @contextlib.contextmanager
    def running(
        self, ns: str, function: Callable[..., Any], *, ready: str = "ready", **kwargs: Any
    ) -> Iterator[subprocess.Popen[str]]:
        """``function(**kwargs)`` running inside ``ns`` until the block ends.

        Waits until the function prints the line ``ready``; the process is
        killed on exit (the function should also stop by itself, in time).
        """
        command = self._python(ns, function, (), kwargs)
        process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert line == ready, f"{function.__name__} in {ns} did not start: {line!r}"
            yield process
        finally:
            process.kill()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()

    @staticmethod
    def _python(
        ns: str, function: Callable[..., Any], prefix: Sequence[str], kwargs: dict[str, Any]
    ) -> list[str]:
        path = Path(inspect.getfile(function)).resolve().relative_to(ROOT)
        module = ".".join(path.with_suffix("").parts)
        python = [sys.executable, "-c", _CALL, module, function.__name__, json.dumps(kwargs)]
        return ["ip", "netns", "exec", ns, *prefix, *python]


_CALL = """
import asyncio, importlib, inspect, json, sys
function = getattr(importlib.import_module(sys.argv[1]), sys.argv[2])
result = function(**json.loads(sys.argv[3]))
if inspect.iscoroutine(result):
    result = asyncio.run(result)
print(json.dumps(result))
"""


@contextlib.contextmanager
def netns_pair() -> Iterator[NetnsPair]:
    """A fresh pair of namespaces joined by veth; both deleted on exit."""
    _remove_stale()
    base = f"{PREFIX}{os.getpid()}-{next(_serial)}"
    pair = NetnsPair(source=f"{base}-src", target=f"{base}-dst")
    created: list[str] = []
    try:
        for ns in (pair.source, pair.target):
            done = subprocess.run(["ip", "netns", "add", ns], capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"cannot create a network namespace: {done.stderr.strip()}")
            created.append(ns)
        link = pair.link
        peer = ("peer", "name", link, "netns", pair.target)
        pair.ip(pair.source, "link", "add", link, "type", "veth", *peer)
        for ns, address in ((pair.source, pair.source_ip), (pair.target, pair.target_ip)):
            pair.ip(ns, "address", "add", f"{address}/30", "dev", link)
            pair.ip(ns, "link", "set", link, "up")
            pair.ip(ns, "link", "set", "lo", "up")
        pair.ip(pair.source, "route", "add", "default", "via", pair.target_ip)
        yield pair
    finally:
        for ns in created:
            subprocess.run(["ip", "netns", "delete", ns], capture_output=True)
