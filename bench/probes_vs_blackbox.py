"""Network probes: agent CPU and RSS beside prometheus-blackbox-exporter (issue 3).

Twenty loopback targets (6 icmp, 5 tcp, 4 http, 3 dns, 2 tls) are probed
once a second, side by side in the same run, by

- a real agent (``python -m agent run``) with those 20 ``[[probe]]`` items,
  ``interval_s = 1``, ``window_s = 60``, ``[probes] defaults = false`` and
  the default uplink/host intervals, uploading to a real collector;
- Debian's ``prometheus-blackbox-exporter``, configured with one module per
  kind of check, whose ``/probe`` endpoint this process requests for all 20
  targets once a second, concurrently, as Prometheus would with a 1 s scrape
  interval (each answer must say ``probe_success 1``).

Debian's ``prometheus-node-exporter`` runs beside them, unscraped, as in
``bench/agent_footprint.py``. After a warm-up (``--warmup``, default 10 s,
not measured) the agent, blackbox_exporter and node_exporter are sampled
once a second for ``--seconds`` (default 300): CPU time (user + system,
delta over the measured period, as % of one core) and RSS (median and peak
of the samples). Not counted: the targets (a child Python process and
dnsmasq), the collector, and the scraper (this process; its CPU is printed
for information).

After the run the collector's database says whether the agent really
probed: the ``probe_window`` events, their ``sent`` and ``ok`` totals, and
attempts per second over the complete windows.

    .venv/bin/python bench/probes_vs_blackbox.py [--seconds 300] [--warmup 10]

Prints Markdown for BENCHMARKS.md. Every process and temporary file is
removed on the way out, also on Ctrl-C, SIGTERM or failure.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import grp
import http.client
import http.server
import ipaddress
import json
import os
import pwd
import random
import selectors
import shutil
import signal
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.sampling import Sampler  # noqa: E402
from tests.e2e.agents import collector_rows, kill_leftovers, start_agent, write_config  # noqa: E402
from tests.helpers import create_token, start_collector, stop_leftovers  # noqa: E402

# The agent's defaults, as in bench/agent_footprint.py, plus the probes table.
AGENT_SECTIONS: dict[str, dict[str, Any]] = {
    "uplink": {"interval_s": 5.0, "batch_max_events": 500, "backoff_initial_s": 1.0,
               "backoff_max_s": 300.0},
    "host": {"interval_s": 60.0},
    "log": {"level": "info", "format": "json"},
    "probes": {"window_s": 60.0, "interval_s": 1.0, "timeout_s": 3.0, "defaults": False},
}  # fmt: skip

N_ICMP, N_TCP, N_HTTP, N_DNS, N_TLS = 6, 5, 4, 3, 2
HTTP_SERVERS = 2  # the 4 http targets are 2 paths on each of 2 servers
DNS_NAMES = [f"t{i}.bench.test" for i in range(N_DNS)]
TIMEOUT_S = 3.0  # the agent's default per-attempt timeout; the blackbox modules use the same
START_TIMEOUT_S = 15.0


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ── targets (a child process: their CPU is not counted) ────────────────────


class _Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"ok\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _TlsHandler(socketserver.BaseRequestHandler):
    context: ssl.SSLContext  # set on a subclass per server

    def handle(self) -> None:
        self.request.settimeout(5.0)
        with (
            contextlib.suppress(OSError),
            self.context.wrap_socket(self.request, server_side=True) as conn,
        ):
            while conn.recv(4096):  # until the client closes
                pass


class _ThreadingTCP(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _accept_and_close(listeners: list[socket.socket]) -> None:
    sel = selectors.DefaultSelector()
    for sock in listeners:
        sel.register(sock, selectors.EVENT_READ)
    while True:
        for key, _ in sel.select():
            with contextlib.suppress(OSError):
                conn, _addr = key.fileobj.accept()  # type: ignore[union-attr]
                conn.close()


def serve_targets(workdir: Path) -> int:
    """The child process: TCP, HTTP and TLS servers on 127.0.0.1 until stdin closes.

    Prints one JSON line with the ports once everything listens.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    tcp = []
    for _ in range(N_TCP):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        tcp.append(sock)
    threading.Thread(target=_accept_and_close, args=(tcp,), daemon=True).start()
    servers: list[socketserver.BaseServer] = []
    for _ in range(HTTP_SERVERS):
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
        httpd.daemon_threads = True
        servers.append(httpd)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(workdir / "cert.pem", workdir / "key.pem")
    handler = type("TlsHandler", (_TlsHandler,), {"context": context})
    tls = [_ThreadingTCP(("127.0.0.1", 0), handler) for _ in range(N_TLS)]
    servers += tls
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()

    def port(server: socketserver.BaseServer) -> int:
        return int(server.server_address[1])  # type: ignore[index]

    ports = {
        "tcp": [int(s.getsockname()[1]) for s in tcp],
        "http": [port(s) for s in servers[:HTTP_SERVERS]],
        "tls": [port(s) for s in tls],
    }
    print(json.dumps(ports), flush=True)
    sys.stdin.read()  # EOF: the parent closed the pipe, or died
    return 0


def write_cert(workdir: Path) -> Path:
    """A self-signed P-256 certificate for 127.0.0.1 and localhost; returns cert.pem."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "posmon bench target")])
    now = dt.datetime.now(dt.UTC)
    san = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (workdir / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path = workdir / "cert.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _dns_query(name: str) -> bytes:
    header = struct.pack("!HHHHHH", random.randrange(0x10000), 0x0100, 1, 0, 0, 0)
    labels = b"".join(bytes([len(p)]) + p.encode("ascii") for p in name.split("."))
    return header + labels + b"\x00" + struct.pack("!HH", 1, 1)


def _dns_answers(port: int, name: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        sock.connect(("127.0.0.1", port))
        try:
            sock.send(_dns_query(name))
            reply = sock.recv(4096)
        except OSError:
            return False
        return len(reply) >= 12 and struct.unpack("!H", reply[6:8])[0] > 0  # ANCOUNT


# ── processes ──────────────────────────────────────────────────────────────


@dataclass
class Procs:
    """Every process this benchmark started, stopped in reverse order."""

    procs: list[tuple[str, subprocess.Popen[Any]]] = field(default_factory=list)

    def add(self, name: str, proc: subprocess.Popen[Any]) -> subprocess.Popen[Any]:
        self.procs.append((name, proc))
        return proc

    def stop_all(self) -> None:
        while self.procs:
            _name, proc = self.procs.pop()
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=10)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()


def program(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin")
    if found is None:
        raise SystemExit(f"{name} is not installed (Debian: apt-get install {name})")
    return found


def wait_until(what: str, check: Any, proc: subprocess.Popen[Any], log: Path | None) -> None:
    end = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < end:
        if proc.poll() is not None:
            detail = log.read_text(errors="replace")[-2000:] if log else ""
            raise RuntimeError(f"{what} exited ({proc.returncode}) while starting\n{detail}")
        with contextlib.suppress(OSError):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up in {START_TIMEOUT_S:.0f} s")


def start_targets(procs: Procs, workdir: Path) -> dict[str, list[int]]:
    proc = procs.add(
        "targets",
        subprocess.Popen(
            [sys.executable, __file__, "--serve-targets", str(workdir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        ),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"the target process exited ({proc.wait()}) before listening")
    ports: dict[str, list[int]] = json.loads(line)
    return ports


def start_dnsmasq(procs: Procs, workdir: Path) -> int:
    hosts = workdir / "bench.hosts"
    hosts.write_text("".join(f"127.0.0.{10 + i} {n}\n" for i, n in enumerate(DNS_NAMES)))
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    for attempt in range(5):
        port = free_port(socket.SOCK_DGRAM)
        log = workdir / f"dnsmasq-{attempt}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    program("dnsmasq"), "--keep-in-foreground", "--conf-file=/dev/null",
                    f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                    "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}",
                    f"--pid-file={workdir / 'dnsmasq.pid'}", f"--user={user}",
                    f"--group={group}", "--log-facility=-",
                ],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        procs.add("dnsmasq", proc)
        try:
            wait_until("dnsmasq", lambda p=port: _dns_answers(p, DNS_NAMES[0]), proc, log)
            return port
        except RuntimeError:
            if "failed to create listening socket" not in log.read_text(errors="replace"):
                raise
    raise RuntimeError("dnsmasq found no free port in 5 attempts")


def _http_ok(port: int, path: str) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        conn.request("GET", path)
        return conn.getresponse().status == 200
    finally:
        conn.close()


def start_exporter(procs: Procs, workdir: Path, name: str, args: list[str]) -> tuple[int, int]:
    """(pid, port) of a Prometheus exporter on a free loopback port, once it answers."""
    port = free_port()
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [program(name), f"--web.listen-address=127.0.0.1:{port}", *args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    procs.add(name, proc)
    wait_until(name, lambda: _http_ok(port, "/metrics"), proc, log)
    return proc.pid, port


# ── the 20 targets, for both tools ─────────────────────────────────────────


@dataclass(frozen=True)
class Target:
    kind: str  # icmp tcp http dns tls
    module: str  # the blackbox module
    bb_target: str  # what blackbox is given as ?target=
    probe: dict[str, Any]  # the agent's [[probe]] item


def targets(ports: dict[str, list[int]], dns_port: int, cert: Path) -> list[Target]:
    out = []
    for i in range(N_ICMP):
        host = f"127.0.0.{i + 1}"
        out.append(Target("icmp", "icmp", host, {"type": "icmp", "target": host, "role": "isp"}))
    for i, port in enumerate(ports["tcp"]):
        hostport = f"127.0.0.1:{port}"
        probe = {"type": "tcp", "target": hostport, "role": "acquirer", "acquirer": f"acq-{i}"}
        out.append(Target("tcp", "tcp_connect", hostport, probe))
    for i in range(N_HTTP):
        url = f"http://127.0.0.1:{ports['http'][i % HTTP_SERVERS]}/health/{i}"
        probe = {"type": "http", "target": url, "role": "acquirer", "acquirer": f"acq-{i}"}
        out.append(Target("http", "http_2xx", url, probe))
    for i, query in enumerate(DNS_NAMES):
        server = f"127.0.0.1:{dns_port}"
        probe = {"type": "dns", "target": server, "role": "dns", "query": query}
        out.append(Target("dns", f"dns_{i}", server, probe))
    for port in ports["tls"]:
        hostport = f"127.0.0.1:{port}"
        probe = {"type": "tls", "target": hostport, "role": "collector", "ca_file": str(cert)}
        out.append(Target("tls", "tls", hostport, probe))
    return out


def blackbox_config(workdir: Path, cert: Path) -> Path:
    """blackbox.yml: one module per kind of check; JSON is valid YAML."""
    ip4 = {"preferred_ip_protocol": "ip4", "ip_protocol_fallback": False}
    timeout = f"{TIMEOUT_S:g}s"
    modules: dict[str, Any] = {
        "icmp": {"prober": "icmp", "timeout": timeout, "icmp": dict(ip4)},
        "tcp_connect": {"prober": "tcp", "timeout": timeout, "tcp": dict(ip4)},
        "http_2xx": {"prober": "http", "timeout": timeout, "http": dict(ip4)},
        "tls": {
            "prober": "tcp",
            "timeout": timeout,
            "tcp": {**ip4, "tls": True, "tls_config": {"ca_file": str(cert)}},
        },
    }
    for i, name in enumerate(DNS_NAMES):
        modules[f"dns_{i}"] = {
            "prober": "dns",
            "timeout": timeout,
            "dns": {
                **ip4,
                "transport_protocol": "udp",
                "query_name": name,
                "query_type": "A",
                "valid_rcodes": ["NOERROR"],
                # like the agent's dns_no_answer: NOERROR without an address fails
                "validate_answer_rrs": {"fail_if_none_matches_regexp": [r".*\tA\t127\..*"]},
            },
        }
    path = workdir / "blackbox.yml"
    path.write_text(json.dumps({"modules": modules}, indent=2))
    return path


# ── the scraper (this process; not counted) ────────────────────────────────


class Scraper:
    """Requests /probe for every target once a second, concurrently, until stopped."""

    def __init__(self, port: int, items: list[Target]) -> None:
        self.port = port
        self.paths = [
            (t.module, f"/probe?module={t.module}&target={quote(t.bb_target, safe='')}")
            for t in items
        ]
        self.lock = threading.Lock()
        self.done = 0
        self.ok = 0
        self.failed: Counter[str] = Counter()
        self.late_rounds = 0  # rounds started late because the previous one had not finished
        self.stop = threading.Event()
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="scrape")
        self.thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def snapshot(self) -> tuple[int, int, Counter[str]]:
        with self.lock:
            return self.done, self.ok, Counter(self.failed)

    def _conn(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self.local, "conn", None)
        if conn is None:  # keep-alive, one connection per worker, as Prometheus does
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT_S + 2)
            self.local.conn = conn
        return conn

    def _one(self, module: str, path: str) -> None:
        good = False
        try:
            conn = self._conn()
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read()
            good = resp.status == 200 and b"\nprobe_success 1\n" in b"\n" + body
        except (OSError, http.client.HTTPException):
            with contextlib.suppress(Exception):
                self.local.conn.close()
            self.local.conn = None
        with self.lock:
            self.done += 1
            if good:
                self.ok += 1
            else:
                self.failed[module] += 1

    def _run(self) -> None:
        next_at = time.monotonic()
        pending: list[Any] = []
        while not self.stop.is_set():
            if any(not f.done() for f in pending):
                self.late_rounds += 1
            pending = [self.pool.submit(self._one, m, p) for m, p in self.paths]
            next_at += 1.0
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        self.pool.shutdown(wait=True, cancel_futures=True)


# ── sampling ───────────────────────────────────────────────────────────────


# ── what the collector received ────────────────────────────────────────────


def probe_windows(db: Path) -> dict[str, Any]:
    windows = []
    changes = []
    for _agent, _seq, kind, body in collector_rows(db):
        if kind == "probe_window":
            windows.append(json.loads(body))
        elif kind == "probe_change":
            changes.append(json.loads(body))
    rounds = len({w["ts"] for w in windows})
    sent = sum(int(w["sent"]) for w in windows)
    ok = sum(int(w["ok"]) for w in windows)
    by_type: dict[str, list[int]] = {}
    errors: Counter[str] = Counter()
    for w in windows:
        acc = by_type.setdefault(w["probe"], [0, 0])
        acc[0] += int(w["sent"])
        acc[1] += int(w["ok"])
        errors.update({str(k): int(v) for k, v in (w.get("errors") or {}).items()})
    window_s = float(windows[0]["window_s"]) if windows else 60.0
    return {
        "events": len(windows),
        "rounds": rounds,
        "targets": len({(w["probe"], w["target"]) for w in windows}),
        "sent": sent,
        "ok": ok,
        "per_s": sent / (rounds * window_s) if rounds else 0.0,
        "by_type": by_type,
        "errors": errors,
        "fail_changes": sum(1 for c in changes if c.get("state") == "fail"),
    }


# ── main ───────────────────────────────────────────────────────────────────


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextlib.contextmanager
def interrupts_as_keyboard() -> Iterator[None]:
    old = {
        s: signal.signal(s, _raise_interrupt)
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def progress(message: str, out: IO[str] = sys.stderr) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=out, flush=True)


def run(args: argparse.Namespace, work: Path, procs: Procs) -> int:
    cert = write_cert(work)
    ports = start_targets(procs, work)
    dns_port = start_dnsmasq(procs, work)
    items = targets(ports, dns_port, cert)
    assert len(items) == 20, len(items)
    counts = Counter(t.kind for t in items)
    progress("targets: " + ", ".join(f"{n} {k}" for k, n in counts.items()))

    bb_pid, bb_port = start_exporter(
        procs, work, "prometheus-blackbox-exporter",
        [f"--config.file={blackbox_config(work, cert)}"],
    )  # fmt: skip
    node_pid, _ = start_exporter(procs, work, "prometheus-node-exporter", [])

    collector = start_collector(work / "collector.db")
    try:
        token = create_token(work / "collector.db", terminal="T-1", store="S-1")
        config = write_config(
            work, collector.url, token, probe_list=[t.probe for t in items], **AGENT_SECTIONS
        )
        agent = start_agent(config)
        scraper = Scraper(bb_port, items)
        try:
            scraper.start()
            progress(
                f"agent pid {agent.proc.pid}, blackbox pid {bb_pid}: warm-up {args.warmup:g} s"
            )
            time.sleep(args.warmup)
            samplers = [
                Sampler("posmon-agent (20 probes, every 1 s)", agent.proc.pid),
                Sampler("prometheus-blackbox-exporter (20 targets scraped every 1 s)", bb_pid),
                Sampler("prometheus-node-exporter (idle, unscraped)", node_pid),
                Sampler("scraper: this bench process (not counted)", os.getpid()),
            ]
            scrape0 = scraper.snapshot()
            end = time.monotonic() + args.seconds
            next_report = time.monotonic() + 30
            while time.monotonic() < end:
                if agent.proc.poll() is not None:
                    raise RuntimeError(f"the agent exited ({agent.proc.returncode})")
                for s in samplers:
                    s.sample()
                if time.monotonic() >= next_report:
                    next_report += 30
                    left = end - time.monotonic()
                    progress(f"sampling, {left:.0f} s left")
                time.sleep(1)
            for s in samplers:
                s.finish()
            scrape1 = scraper.snapshot()
            measured = time.monotonic() - samplers[0].t0
        finally:
            scraper.close()
        # let the last complete window reach the collector (uplink every 5 s)
        time.sleep(AGENT_SECTIONS["uplink"]["interval_s"] + 2)
        agent.stop()
        seen = probe_windows(work / "collector.db")
        crashed = sum(1 for e in agent.log_events() if e.get("event") == "probe_crashed")
        unavailable = [e for e in agent.log_events() if e.get("event") == "probe_unavailable"]
    finally:
        collector.stop()

    agent_s, bb_s, node_s, _bench_s = samplers
    print()
    print(f"Measured {measured:.0f} s after a {args.warmup:g} s warm-up (not counted); "
          f"{len(agent_s.rss)} samples, one a second.")  # fmt: skip
    print()
    print("| process | CPU (% of a core) | RSS median | RSS peak |")
    print("|---|---|---|---|")
    for s in samplers:
        print(s.row())
    print()
    cpu_ratio = agent_s.cpu_pct / bb_s.cpu_pct if bb_s.cpu_pct else float("inf")
    rss_base = node_s.rss_median + bb_s.rss_median
    rss_ratio = agent_s.rss_median / rss_base
    peak_ratio = max(agent_s.rss) / (max(node_s.rss) + max(bb_s.rss))

    def verdict(x: float) -> str:
        return "PASS" if x <= 1.0 else "MISS"

    print("| check | ratio | target | result |")
    print("|---|---|---|---|")
    print(f"| agent CPU / blackbox_exporter CPU | {cpu_ratio:.2f} | ≤ 1.0 | {verdict(cpu_ratio)} |")
    print(
        f"| agent RSS / (node_exporter + blackbox_exporter RSS), medians | {rss_ratio:.2f} "
        f"| ≤ 1.0 | {verdict(rss_ratio)} |"
    )
    print(f"| same with peaks (for information) | {peak_ratio:.2f} | | |")
    print()
    done = scrape1[0] - scrape0[0]
    ok = scrape1[1] - scrape0[1]
    failed = scrape1[2] - scrape0[2]
    print(
        f"- blackbox: {done} probe scrapes in the measured period ({done / measured:.2f}/s), "
        f"{ok / done if done else 0:.4f} with `probe_success 1`"
        + (f"; failures by module: {dict(failed)}" if failed else "")
        + (f"; {scraper.late_rounds} late rounds" if scraper.late_rounds else "")
        + "."
    )
    by_type = ", ".join(
        f"{kind} {sent_ok[1]}/{sent_ok[0]}" for kind, sent_ok in sorted(seen["by_type"].items())
    )
    print(
        f"- agent: {seen['events']} probe_window events from {seen['targets']} targets in "
        f"{seen['rounds']} complete {AGENT_SECTIONS['probes']['window_s']:g} s windows; "
        f"sent {seen['sent']}, ok {seen['ok']} "
        f"(ok ratio {seen['ok'] / seen['sent'] if seen['sent'] else 0:.4f}); "
        f"{seen['per_s']:.2f} attempts/s; ok/sent by type: {by_type}"
        + (f"; errors: {dict(seen['errors'])}" if seen["errors"] else "")
        + f"; {seen['fail_changes']} probe_change to fail; {crashed} probe_crashed"
        + (f"; UNAVAILABLE: {[e.get('probe') for e in unavailable]}" if unavailable else "")
        + "."
    )
    if not seen["rounds"]:
        print("  (no window closed yet: the agent sends one per probe every 60 s; run longer)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300, help="measured period")
    parser.add_argument("--warmup", type=float, default=10, help="not measured")
    parser.add_argument("--serve-targets", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_targets is not None:
        return serve_targets(args.serve_targets)
    procs = Procs()
    with interrupts_as_keyboard(), tempfile.TemporaryDirectory(prefix="posmon-probes-") as tmp:
        try:
            return run(args, Path(tmp), procs)
        except KeyboardInterrupt:
            progress("interrupted: cleaning up")
            return 130
        finally:
            kill_leftovers()  # the agent, if still running
            stop_leftovers()  # the collector, if still running
            procs.stop_all()


if __name__ == "__main__":
    raise SystemExit(main())
