"""The spool knows its depth without counting: each batch says how many events stay behind.

The in-memory count (:attr:`Spool.queued`) must equal ``SELECT count(*)``
after whatever the agent does to the spool: append, ack, quarantine, the age
and size bounds, a restart.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.spool import Spool
from tests.agent.test_spool import host, open_spool, state, txn


def check(spool: Spool) -> None:
    depth = spool.depth()
    assert spool.queued == depth
    for limit in (1, 3, 1000):
        batch = spool.peek(limit, 1 << 30)
        assert batch.remaining == depth - len(batch)


def test_batches_say_how_many_events_stay_behind(tmp_path: Path) -> None:
    spool = open_spool(tmp_path / "s.db", max_age_s=3600)
    assert spool.peek(10, 1 << 20).remaining == 0  # empty
    spool.append([host(i) for i in range(7)])
    batch = spool.peek(3, 1 << 20)
    assert (len(batch), batch.remaining) == (3, 4)
    spool.ack(batch.seqs)
    assert spool.peek(3, 1 << 20).remaining == 1
    assert spool.peek(10, 1 << 20).remaining == 0  # the whole rest fits in one batch
    check(spool)


def test_the_count_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = open_spool(path, max_age_s=3600)
    spool.append([txn(i) for i in range(12)])
    spool.ack([1, 2])
    spool.quarantine([3], status=400, reason="bad")
    spool.close()
    spool = open_spool(path, max_age_s=3600)
    assert spool.queued == 9
    check(spool)


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(min_value=1, max_value=40)),
        st.tuples(st.just("ack"), st.integers(min_value=0, max_value=30)),
        st.tuples(st.just("quarantine"), st.integers(min_value=0, max_value=5)),
        st.tuples(st.just("age"), st.integers(min_value=0, max_value=150)),
        st.tuples(st.just("bound"), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0)),
    ),
    max_size=25,
)


@given(ops=OPS)
@settings(max_examples=60, deadline=None)
def test_the_in_memory_count_never_drifts(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]]
) -> None:
    path = tmp_path_factory.mktemp("spool") / "s.db"
    now = [1_000_000.0]
    kw = {"max_bytes": 6_000, "max_age_s": 100, "clock": lambda: now[0]}
    spool = open_spool(path, **kw)
    makers = (host, txn, state)
    n = 0
    for op, arg in ops:
        if op == "append":
            spool.append([makers[(n + i) % 3](n + i) for i in range(arg)])
            n += arg
        elif op == "ack":
            seqs = spool.peek(arg, 1 << 30).seqs if arg else ()
            spool.ack([*seqs[::2], 10**9])  # some of a batch, and one seq long gone
        elif op == "quarantine":
            seqs = spool.peek(max(arg, 1), 1 << 30).seqs
            spool.quarantine([*seqs, *seqs[:1]], status=400, reason="x")  # repeats too
        elif op == "age":
            now[0] += arg
            spool.enforce_bounds()
        elif op == "bound":
            spool.enforce_bounds()
        else:
            spool.close()
            spool = open_spool(path, **kw)
        check(spool)
    spool.close()
