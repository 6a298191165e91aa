"""A POS application's day of payments, posted to a real agent's local API.

::

    python -m tests.e2e.pos_sim --url http://127.0.0.1:PORT --timeout-s 2 \\
        --payments 200 --seed 1 --truth truth.json [--open-signal-after 80]

It posts what a till posts: starts, ends, both in one call, declines and
technical failures, payments whose end never comes, ends that come after the
agent's timeout, the POS's own timeouts, resolutions of payments in doubt,
and retries of the same post. Like a careful POS it retries a post until it
gets an answer (the agent may be restarting) and, for a resolution the agent
answers "still open", until the timeout has been recorded.

When it is done it writes its ground truth to ``--truth``: for every payment
the ``txn`` events the agent must have recorded, in order, computed from what
it posted and when — its own model of the rules, written independently of
``agent.payments``. Whether an end was late depends on the time between the
agent's receipt of the start and of the end; the simulator knows both up to
the time a post took; for an end sent while the agent died (stored before
the deadline, or only after the restart?) it writes both possible histories,
and the test accepts exactly one of them.

It prints ``ready`` when it starts, ``open TXN_ID`` once (the first payment
left open after ``--open-signal-after`` payments: the moment for a test to
SIGKILL the agent) and ``done`` at the end.
"""

from __future__ import annotations

import argparse
import heapq
import http.client
import json
import random
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

TECHNICAL = ("68", "91", "96", "98")
SETTLED = ("approved", "declined")
#: Scripts and how often a day has them (out of 100).
SCRIPTS = {
    "ok": 45,
    "one_call": 15,
    "declined": 8,
    "technical": 6,
    "no_end": 5,
    "late_settle": 6,
    "late_error": 3,
    "resolved": 6,
    "pos_timeout": 3,
    "one_call_timeout": 3,
}
RETRY_FOR_S = 60.0


class SimError(Exception):
    """The agent answered something a POS could not accept."""


@dataclass
class Payment:
    txn_id: str
    script: str
    start_values: dict[str, Any]
    #: (kind of post, outcome/resolution, body) in the order posted
    posts: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    #: sim clock when the start was first sent and when its 202 came
    start_sent: float | None = None
    start_done: float | None = None
    #: for each end: sim clock when first sent, when its 202 came, outcome, response code
    ends: list[tuple[float, float, str, str | None]] = field(default_factory=list)
    resolution: str | None = None


class Api:
    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.posts = 0
        self.retries = 0

    def post(
        self, path: str, body: dict[str, Any], *, until_not_open: bool = False
    ) -> tuple[str, bool]:
        """POST until the agent answers 202; returns its result and whether it took
        more than one try (then the first may have been stored: a duplicate is fine)."""
        tries = 0
        data = json.dumps(body).encode()
        end = time.monotonic() + RETRY_FOR_S
        while True:
            self.posts += 1
            tries += 1
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=10)
                try:
                    conn.request("POST", path, data, {"Content-Type": "application/json"})
                    resp = conn.getresponse()
                    status, answer = resp.status, json.loads(resp.read() or b"{}")
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                status, answer = 0, {}
            if status == 202:
                return str(answer["result"]), tries > 1
            retry = status == 0 or status >= 500
            if status == 409 and until_not_open and "still open" in answer.get("error", ""):
                retry = True
            if not retry:
                raise SimError(f"{path} {body}: {status} {answer}")
            if time.monotonic() > end:
                raise SimError(f"{path} {body}: no answer for {RETRY_FOR_S} s (last {status})")
            self.retries += 1
            time.sleep(0.1)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


class Day:
    def __init__(self, args: argparse.Namespace) -> None:
        self.rng = random.Random(args.seed)
        self.timeout_s: float = args.timeout_s
        self.api = Api(args.url)
        self.payments: list[Payment] = []
        self.heap: list[tuple[float, int, str, Payment, dict[str, Any]]] = []
        self.order = 0
        self.open_signal_after: int = args.open_signal_after
        self.signalled = False

    def plan(self, count: int, t0: float) -> None:
        scripts = list(SCRIPTS)
        weights = [SCRIPTS[s] for s in scripts]
        for i in range(count):
            script = self.rng.choices(scripts, weights)[0]
            txn_id = f"POS-{i:05d}"
            values: dict[str, Any] = {
                "txn_id": txn_id,
                "kind": self.rng.choice(("sale",) * 8 + ("refund", "void")),
                "acquirer": self.rng.choice(("acq-a", "acq-b")),
                "amount_minor": self.rng.randint(50, 25_000),
                "currency": "EUR",
                "stan": f"{i + 1:06d}",
            }
            payment = Payment(txn_id, script, values)
            self.payments.append(payment)
            at = t0 + i * 0.05
            T = self.timeout_s
            if script in ("one_call", "one_call_timeout"):
                outcome = "timeout" if script == "one_call_timeout" else self._settled()
                self._at(at, "end", payment, self._end(payment, outcome, with_start=True))
                continue
            self._at(at, "start", payment, values)
            if script == "ok":
                self._at(
                    at + self.rng.uniform(0.05, 0.3), "end", payment, self._end(payment, "approved")
                )
            elif script == "declined":
                self._at(
                    at + 0.1,
                    "end",
                    payment,
                    self._end(payment, "declined", code=self.rng.choice(("05", "51"))),
                )
            elif script == "technical":
                outcome = self.rng.choice(("declined", "error"))
                self._at(
                    at + 0.1,
                    "end",
                    payment,
                    self._end(payment, outcome, code=self.rng.choice(TECHNICAL)),
                )
            elif script == "late_settle":
                self._at(at + T + 1.5, "end", payment, self._end(payment, self._settled()))
            elif script == "late_error":
                self._at(at + T + 1.5, "end", payment, self._end(payment, "error", code="96"))
                self._at(at + T + 2.0, "resolve", payment, {"resolution": "not_charged"})
            elif script == "resolved":
                resolution = self.rng.choice(("reversed", "charged", "not_charged"))
                self._at(at + T + 1.0, "resolve", payment, {"resolution": resolution})
            elif script == "pos_timeout":
                self._at(at + 0.2, "end", payment, self._end(payment, "timeout"))
                self._at(at + T + 1.0, "end", payment, self._end(payment, "approved", code="00"))
            # no_end: nothing more

    def _settled(self) -> str:
        return self.rng.choice(("approved", "approved", "declined"))

    def _end(self, payment: Payment, outcome: str, *, code: str | None = None,
             with_start: bool = False) -> dict[str, Any]:  # fmt: skip
        body: dict[str, Any] = {"txn_id": payment.txn_id, "outcome": outcome}
        if with_start:
            body.update(payment.start_values)
        if code is None:
            code = {"approved": "00", "declined": "05"}.get(outcome)
        if code is not None:
            body["response_code"] = code
        if outcome == "approved":
            body["auth_code"] = f"A{self.rng.randint(0, 99999):05d}"
            body["rrn"] = f"{self.rng.randint(0, 10**12 - 1):012d}"
        if self.rng.random() < 0.3:
            body["message"] = self.rng.choice(("host answered", "PIN OK", "Verbindung getrennt"))
        return body

    def _at(self, t: float, kind: str, payment: Payment, body: dict[str, Any]) -> None:
        self.order += 1
        heapq.heappush(self.heap, (t, self.order, kind, payment, body))

    def run(self) -> None:
        while self.heap:
            t, _, kind, payment, body = heapq.heappop(self.heap)
            delay = t - time.time()
            if delay > 0:
                time.sleep(delay)
            self._do(kind, payment, body)

    def _do(self, kind: str, payment: Payment, body: dict[str, Any]) -> None:
        twice = self.rng.random() < 0.1  # the POS retries a post it already made
        if kind == "start":
            if self.rng.random() < 0.3:
                body = {**body, "started_at": iso(time.time())}
            payment.start_sent = time.time()
            result, retried = self.api.post("/v1/txn", body)
            payment.start_done = time.time()
            _expect(result, "started", body, retried)
            payment.posts.append(("start", "", body))
            if (
                payment.script == "no_end"
                and len(self.payments) > 0
                and int(payment.txn_id[4:]) >= self.open_signal_after
                and not self.signalled
            ):
                self.signalled = True
                print(f"open {payment.txn_id}", flush=True)
        elif kind == "end":
            sent = time.time()
            result, retried = self.api.post("/v1/txn", body)
            payment.ends.append((sent, time.time(), body["outcome"], body.get("response_code")))
            payment.posts.append(("end", body["outcome"], body))
            if result not in ("ended", "late_end") and not (retried and result == "duplicate"):
                raise SimError(f"end of {payment.txn_id}: {result}")
        else:
            body = {"txn_id": payment.txn_id, **body}
            result, retried = self.api.post("/v1/txn/resolution", body, until_not_open=True)
            _expect(result, "resolved", body, retried)
            payment.resolution = body["resolution"]
            payment.posts.append(("resolve", body["resolution"], body))
        if twice:
            path = "/v1/txn/resolution" if kind == "resolve" else "/v1/txn"
            _expect(self.api.post(path, body)[0], "duplicate", body)

    # -- the ground truth -------------------------------------------------

    def truth(self) -> dict[str, Any]:
        expected = {p.txn_id: self._alternatives(p) for p in self.payments}
        return {
            "timeout_s": self.timeout_s,
            "payments": expected,
            "ambiguous": sorted(t for t, alts in expected.items() if len(alts) > 1),
            "posts": self.api.posts,
            "retries": self.api.retries,
        }

    def _alternatives(self, p: Payment) -> list[dict[str, Any]]:
        """The events the rules call for, from what was posted and when: one list —
        or two, when an end was sent while the agent died and the simulator cannot
        know whether the agent stored it before the deadline."""
        T = self.timeout_s
        out: list[dict[str, Any]] = []
        started = p.start_sent is not None and p.start_done is not None

        def ev(outcome: str, code: str | None, *, in_doubt: bool, late: bool = False,
               resolution: str | None = None) -> dict[str, Any]:  # fmt: skip
            return {
                "outcome": outcome,
                "in_doubt": in_doubt,
                "late": late,
                "resolution": resolution,
                "technical": outcome in ("declined", "error") and code in TECHNICAL,
            }

        def walk(i: int, events: list[dict[str, Any]], timed_out: bool, settled: bool,
                 last: str | None, code: str | None) -> None:  # fmt: skip
            if i == len(p.ends):
                if started and not p.ends:
                    events = [*events, ev("timeout", code, in_doubt=True)]
                    timed_out, last = True, "timeout"
                if p.resolution is not None:
                    events = [*events, ev(str(last), code, in_doubt=False, resolution=p.resolution)]
                    settled = True
                out.append({"events": events, "in_doubt": timed_out and not settled})
                return
            sent, done, outcome, end_code = p.ends[i]
            choices = [False]  # was the deadline seen to pass before this end?
            if started and not timed_out:
                assert p.start_sent is not None and p.start_done is not None
                shortest, longest = sent - p.start_done, done - p.start_sent
                if shortest >= T:
                    choices = [True]
                elif longest >= T:
                    choices = [False, True]
            for deadline_passed in choices:
                evs, t_out, sett, c = list(events), timed_out, settled, code
                if deadline_passed:
                    evs.append(ev("timeout", c, in_doubt=True))
                    t_out = True
                if end_code is not None:
                    c = end_code
                if t_out:
                    evs.append(
                        ev(outcome, c, in_doubt=outcome not in SETTLED and not sett, late=True)
                    )
                    sett = sett or outcome in SETTLED
                else:
                    evs.append(ev(outcome, c, in_doubt=outcome == "timeout"))
                    t_out = outcome == "timeout"
                walk(i + 1, evs, t_out, sett, outcome, c)

        walk(0, [], False, False, None, None)
        return out


def _expect(result: str, wanted: str, body: dict[str, Any], retried: bool = False) -> None:
    if result != wanted and not (retried and result == "duplicate"):
        raise SimError(f"{body}: expected {wanted}, got {result}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pos_sim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="the agent's local API")
    parser.add_argument("--timeout-s", type=float, required=True, help="the agent's timeout_s")
    parser.add_argument("--payments", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--truth", required=True, help="where to write the ground truth (JSON)")
    parser.add_argument("--open-signal-after", type=int, default=10**9)
    args = parser.parse_args(argv)
    day = Day(args)
    day.plan(args.payments, time.time() + 0.2)
    print("ready", flush=True)
    try:
        day.run()
    except SimError as err:
        print(f"pos_sim: {err}", file=sys.stderr, flush=True)
        return 1
    with open(args.truth, "w") as f:
        json.dump(day.truth(), f, indent=1)
    print("done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
