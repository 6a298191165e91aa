"""A process that reports payments with checkpoints as fast as it can, until killed.

``python -m tests.agent.payments.kill_writer SPOOL`` — used by
test_spool_payments.py, which SIGKILLs it and then checks that the spool's
checkpoint and the stored payments agree. Report ``i`` carries the
checkpoint ``{"logtail:/x": str(i)}``; every fifth one repeats an earlier
payment (a duplicate: only its checkpoint is stored). Started again, it goes
on after the checkpoint, as the log tailer does.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from agent.pan_guard import PanGuard
from agent.payments import Payments
from agent.payments.settings import PaymentsSettings
from agent.spool import Spool

T = TypeVar("T")
KEY = "logtail:/x"
BATCH = 20


def is_duplicate(i: int) -> bool:
    return i % 5 == 4


def report(i: int) -> dict[str, object]:
    n = i - 2 if is_duplicate(i) else i  # the duplicate repeats a new payment's report
    return {"txn_id": f"p{n}", "outcome": "approved", "amount_minor": n, "acquirer": "acq"}


async def main(path: Path) -> None:
    spool = Spool(path, max_bytes=1 << 30, max_age_s=86400)
    executor = ThreadPoolExecutor(max_workers=1)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(executor, spool.open)

    async def call(fn: Callable[[Spool], T]) -> T:
        return await loop.run_in_executor(executor, fn, spool)

    payments = Payments(PaymentsSettings(), call, guard=PanGuard())
    await payments.load()
    done = await call(lambda s: s.get_meta(KEY))
    start = i = 0 if done is None else int(done) + 1
    while True:
        await asyncio.gather(
            *(
                payments.submit(report(j), source="log:/x", checkpoint={KEY: str(j)})
                for j in range(i, i + BATCH)
            )
        )
        i += BATCH
        if i == start + 200:
            print("ready", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
