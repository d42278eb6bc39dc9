"""Admission against the descriptor budget (`pyserver.server.capacity`): pure bookkeeping."""

from __future__ import annotations

import resource

import pytest

from pyserver.cluster.redis_connect import CLUSTER_POOL_SIZE, POOL_SIZE
from pyserver.server.capacity import (
    RESERVED_BASE,
    Admission,
    Board,
    Budget,
    raise_descriptor_limit,
)


def fill(admission: Admission, n: int) -> list[bool]:
    """Accept and open `n` connections as the listener would; what `opened` said to each."""
    said = []
    for _ in range(n):
        assert admission.budget() > 0
        said.append(admission.opened())
    return said


def test_the_budget_keeps_back_what_the_process_needs_besides_connections() -> None:
    # One Redis server: its link's pool (`RedisLink.most_connections()`).
    budget = Budget.compute(
        limit=20_000, baseline=25, webhook_concurrency=16, redis_connections=POOL_SIZE
    )
    assert budget.reserved == RESERVED_BASE + POOL_SIZE + 16
    assert budget.overflow == 200
    assert budget.capacity == 20_000 - 25 - budget.reserved - 200
    assert "capacity 19,663 connections per process" in budget.describe(1)
    assert "5 workers: 98,315 per host" in budget.describe(5)
    # A Redis Cluster of 6 shards and 2 subscribers: 6 pools and 12 subscriber connections.
    sharded = Budget.compute(
        limit=20_000, baseline=25, redis_connections=6 * (CLUSTER_POOL_SIZE + 2)
    )
    assert sharded.reserved == RESERVED_BASE + 780
    # Without Redis (the local adapter) nothing is kept for it.
    tiny = Budget.compute(limit=300, baseline=20)
    assert tiny.overflow == 8 and tiny.capacity == 300 - 20 - RESERVED_BASE - 8


def test_alone_it_admits_up_to_capacity_then_takes_the_overflow_only_to_refuse() -> None:
    admission = Admission(capacity=100, overflow=10)
    assert admission.resume == 5
    assert fill(admission, 100) == [True] * 100
    assert admission.budget() == 10
    assert fill(admission, 10) == [False] * 10  # these are told 4100
    assert admission.budget() == 0 and admission.paused
    for _ in range(4):  # 4100s went out and closed: still paused (hysteresis)
        admission.closed()
        assert admission.budget() == 0
    admission.closed()
    assert admission.budget() == 5, "105 open: at the low-water mark"
    assert not admission.paused


def test_the_overflow_band_reopens_within_itself() -> None:
    """Capacity 1000 resumes 50 below a limit, but the band is only 20 wide: waiting for 50
    to close would strand the clients queued behind it (they would time out)."""
    admission = Admission(capacity=1000, overflow=20)
    fill(admission, 1020)
    assert admission.budget() == 0
    for _ in range(10):
        admission.closed()
    assert admission.budget() == 10


def test_a_closed_admitted_connection_makes_room_for_an_admitted_one() -> None:
    admission = Admission(capacity=4, overflow=2)
    fill(admission, 4)
    admission.closed()
    assert admission.opened() is True
    assert admission.opened() is False


def test_the_count_includes_accepted_connections_not_made_yet() -> None:
    admission = Admission(capacity=100, overflow=0)
    fill(admission, 60)
    assert admission.budget(pending=40) == 0
    assert admission.budget(pending=39) == 0, "paused until below the low-water mark"
    assert admission.budget(pending=35) == 5


class TwoWorkers:
    def __init__(self, capacity: int, overflow: int) -> None:
        shared = Board.create(2)
        self.boards = [Board.attach(shared.fd, 0), Board.attach(shared.fd, 1)]
        self.shared = shared
        self.a = Admission(capacity, overflow, self.boards[0])
        self.b = Admission(capacity, overflow, self.boards[1])


@pytest.fixture
def pair() -> TwoWorkers:
    return TwoWorkers(capacity=100, overflow=5)


def test_a_full_worker_steps_aside_while_another_has_room(pair: TwoWorkers) -> None:
    assert fill(pair.a, 100) == [True] * 100
    assert pair.a.budget() == 0, "no overflow while b has room: b takes them"
    assert pair.b.others_have_room() is False
    assert pair.b.budget() == 105  # b alone has room: its own overflow band is open


def test_when_every_worker_is_full_each_takes_its_overflow_to_refuse(pair: TwoWorkers) -> None:
    fill(pair.a, 100)
    assert pair.a.budget() == 0 and pair.a.paused
    fill(pair.b, 100)
    assert pair.a.budget() == 5, "b is full too: a's next re-check opens the overflow band"
    assert pair.a.opened() is False


def test_a_full_worker_resumes_below_its_low_water_mark(pair: TwoWorkers) -> None:
    fill(pair.a, 100)
    assert pair.a.budget() == 0
    for _ in range(4):
        pair.a.closed()
    assert pair.a.budget() == 0, "96 open: still above 100 - 5"
    pair.a.closed()
    assert pair.a.budget() == 5
    assert pair.boards[0]._map[0] == 0, "not full any more on the board"


def test_the_board_says_who_is_full(pair: TwoWorkers) -> None:
    fill(pair.b, 100)
    assert pair.boards[1]._map[1] == 1
    pair.b.closed()
    assert pair.boards[1]._map[1] == 0
    pair.boards[1].set_full(True)
    pair.shared.clear(1)
    assert pair.a.others_have_room()
    with pytest.raises(ValueError):
        Board.attach(pair.shared.fd, 2)


def test_the_soft_descriptor_limit_rises_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 256), hard))
        before, after = raise_descriptor_limit()
        assert before == min(soft, 256)
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == after
        assert after == hard or hard == resource.RLIM_INFINITY
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
