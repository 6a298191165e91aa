"""A POS application's payment log, written by its own process on command.

Run as ``python -m tests.e2e.log_writer PATH SEED``; it reads one command a
line from stdin and answers ``ok ...`` on stdout when the command is done:

- ``burst N``: N log lines — payment starts, ends of started payments, and
  noise — each in one ``write()`` (lines are whole), paced slightly so a
  reader is mid-file while it runs;
- ``rename``: the file is renamed to ``PATH.<k>`` and the writer keeps
  writing to it until ``reopen`` (as an application does until logrotate's
  HUP); ``create`` makes the new, empty file meanwhile;
- ``reopen``: the writer opens PATH again (new lines go to the new file);
- ``copytruncate``: PATH is copied to ``PATH.<k>`` and truncated in place;
- ``finish``: every started payment gets its end line;
- ``truth``: one JSON line: every ended payment with the fields its lines
  carried, so a test can compare the collector with it.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

T0 = datetime(2026, 11, 21, 8, 0, tzinfo=UTC)
RESULTS = {"OK": "approved", "DECL": "declined", "TMO": "timeout", "ERR": "error"}

#: The [[logfile.rule]] tables that read these lines.
RULES = r"""
[[logfile.rule]]
pattern = '^(?P<started_at>\S+) INFO  pay START txn=(?P<txn_id>\S+) amount=(?P<amount_minor>\d+) cur=(?P<currency>[A-Z]{3}) acq=(?P<acquirer>\S+)'
set = { kind = "sale" }

[[logfile.rule]]
pattern = '^(?P<ended_at>\S+) INFO  pay END   txn=(?P<txn_id>\S+) result=(?P<outcome>[A-Z]+) rc=(?P<response_code>\d\d) stan=(?P<stan>\d{6})'
outcome_map = { OK = "approved", DECL = "declined", TMO = "timeout", ERR = "error" }
"""  # noqa: E501 (a log rule is one long regex)


class Writer:
    def __init__(self, path: Path, seed: int) -> None:
        self.path = path
        self.rng = random.Random(seed)
        self.fd = self._open()
        self.rotations = 0
        self.next_id = 0
        self.clock = T0
        self.open: dict[str, dict[str, Any]] = {}
        self.ended: dict[str, dict[str, Any]] = {}

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)

    def _tick(self) -> str:
        self.clock += timedelta(milliseconds=self.rng.randint(1, 900))
        return self.clock.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"

    def line(self) -> bytes:
        roll = self.rng.random()
        ts = self._tick()
        if roll < 0.3 or (roll < 0.6 and not self.open):
            self.next_id += 1
            txn = f"POS-{self.next_id:06d}"
            amount = self.rng.randint(50, 50_000)
            acq = self.rng.choice(["acq-a", "acq-b"])
            self.open[txn] = {"started_at": ts, "amount_minor": amount, "acquirer": acq}
            return f"{ts} INFO  pay START txn={txn} amount={amount} cur=EUR acq={acq}\n".encode()
        if roll < 0.6:
            return self._end(self.rng.choice(sorted(self.open)), ts)
        if roll < 0.65:
            return f"{ts} WARN  ui  display glitch \xa0\n".encode("latin-1")  # not UTF-8
        screen, key = self.rng.randrange(40), self.rng.randrange(99)
        return f"{ts} DEBUG ui  screen={screen} key={key}\n".encode()

    def _end(self, txn: str, ts: str) -> bytes:
        word = self.rng.choice(["OK"] * 6 + ["DECL", "TMO", "ERR"])
        rc = {"OK": "00", "DECL": "05", "TMO": "91", "ERR": "96"}[word]
        stan = f"{self.rng.randrange(10**6):06d}"
        fields = self.open.pop(txn)
        fields.update(ended_at=ts, outcome=RESULTS[word], response_code=rc, stan=stan)
        self.ended[txn] = fields
        return f"{ts} INFO  pay END   txn={txn} result={word} rc={rc} stan={stan}\n".encode()

    def burst(self, n: int) -> None:
        for i in range(n):
            os.write(self.fd, self.line())
            if i % 10 == 9:
                time.sleep(0.01)

    def finish(self) -> None:
        for txn in sorted(self.open):
            os.write(self.fd, self._end(txn, self._tick()))

    def rotated_name(self) -> Path:
        self.rotations += 1
        return self.path.with_name(f"{self.path.name}.{self.rotations}")

    def command(self, words: list[str]) -> str:
        match words:
            case ["burst", n]:
                self.burst(int(n))
                return f"ok burst {self.next_id}"
            case ["rename"]:
                self.path.rename(self.rotated_name())
            case ["create"]:
                self.path.touch()
            case ["reopen"]:
                os.close(self.fd)
                self.fd = self._open()
            case ["copytruncate"]:
                shutil.copyfile(self.path, self.rotated_name())
                os.truncate(self.path, 0)
            case ["finish"]:
                self.finish()
            case ["truth"]:
                return "ok " + json.dumps(self.ended, sort_keys=True)
            case _:
                return f"error unknown command {words}"
        return f"ok {words[0]}"


def main() -> None:
    writer = Writer(Path(sys.argv[1]), int(sys.argv[2]))
    for line in sys.stdin:
        print(writer.command(line.split()), flush=True)


if __name__ == "__main__":
    main()
