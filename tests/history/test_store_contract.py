"""The history store contract (pyserver/history/store.py), run on both stores: the in-memory
one and the Redis one against a real redis-server. Time moves by hand (`Clock`)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from pyserver.config import HistoryRule
from pyserver.history.store import Direction, Loss, OtherEpoch, PositionAhead
from pyserver.protocol import frames
from pyserver.protocol.history import Position
from tests.history.conftest import Clock, StoreFactory

RULE = HistoryRule(channels="chat-*", limit=10, ttl=60, rewind=3)


def run(new_store: StoreFactory, scenario: Callable[[Any], Awaitable[None]]) -> None:
    async def main() -> None:
        store = new_store()
        try:
            await scenario(store)
        finally:
            await store.close()

    asyncio.run(main())


def payload(n: int, channel: str = "chat-1", user_id: str | None = None) -> bytes:
    return frames.channel_event("message", channel, f'{{"n":{n}}}', user_id)


async def publish(
    store: Any, count: int, channel: str = "chat-1", rule: HistoryRule = RULE, start: int = 1
) -> list[Position]:
    return [
        await store.append("app", channel, rule, payload(n, channel), 1_000 + n)
        for n in range(start, start + count)
    ]


def numbers(entries: Any) -> list[int]:
    return [int(e.fields().data.split(":")[1].rstrip("}")) for e in entries]


def test_positions_are_consecutive_and_the_head_follows(new_store: StoreFactory) -> None:
    async def scenario(store: Any) -> None:
        before = await store.head("app", "chat-1", RULE)
        assert before.position.serial == 0
        positions = await publish(store, 3)
        assert [p.serial for p in positions] == [1, 2, 3]
        assert {p.epoch for p in positions} == {before.epoch}, "the head named the first epoch"
        assert all(b.follows(a) for a, b in itertools.pairwise(positions))
        head = await store.head("app", "chat-1", RULE)
        assert head.position == positions[-1]
        other = await store.head("app", "chat-2", RULE)
        assert other.position.serial == 0

    run(new_store, scenario)


def test_an_entry_keeps_its_payload_event_data_user_and_time(new_store: StoreFactory) -> None:
    async def scenario(store: Any) -> None:
        frame = frames.channel_event("client-typing", "chat-1", '{"a":1}', "u7")
        position = await store.append("app", "chat-1", RULE, frame, 1_733_300_000_123)
        (entry,) = (await store.last("app", "chat-1", RULE, 5)).entries
        assert entry.position == position and entry.payload == frame
        assert entry.time_ms == 1_733_300_000_123
        fields = entry.fields()
        assert (fields.event, fields.data, fields.user_id) == ("client-typing", '{"a":1}', "u7")

    run(new_store, scenario)


def test_limit_keeps_the_newest(new_store: StoreFactory) -> None:
    async def scenario(store: Any) -> None:
        positions = await publish(store, 15)
        page = await store.read("app", "chat-1", RULE, 100, Direction.FORWARD)
        assert numbers(page.entries) == list(range(6, 16)) and page.next is None
        kept = await store.since("app", "chat-1", RULE, positions[4])
        assert kept.lost is None and numbers(kept.entries) == list(range(6, 16))
        lost = await store.since("app", "chat-1", RULE, positions[3])
        assert lost.lost is Loss.LIMIT and not lost.entries

    run(new_store, scenario)


def test_ttl_hides_and_purges_expired_events(new_store: StoreFactory, clock: Clock) -> None:
    async def scenario(store: Any) -> None:
        start = await store.head("app", "chat-1", RULE)
        first = await publish(store, 2)
        clock.advance(40)
        await publish(store, 2, start=3)
        assert numbers((await store.last("app", "chat-1", RULE, 10)).entries) == [1, 2, 3, 4]
        clock.advance(25)  # 1 and 2 are 65 s old, 3 and 4 are 25 s old
        assert numbers((await store.last("app", "chat-1", RULE, 10)).entries) == [3, 4]
        page = await store.read("app", "chat-1", RULE, 10, Direction.BACKWARD)
        assert numbers(page.entries) == [4, 3]
        assert (await store.since("app", "chat-1", RULE, start.position)).lost is Loss.TTL
        assert (await store.since("app", "chat-1", RULE, first[0])).lost is Loss.TTL
        exact = await store.since("app", "chat-1", RULE, first[1])
        assert exact.lost is None and numbers(exact.entries) == [3, 4]
        clock.advance(60)
        assert not (await store.last("app", "chat-1", RULE, 10)).entries
        head = await store.head("app", "chat-1", RULE)
        assert head.position.serial == 4, "the serials survive the events"
        later = await store.append("app", "chat-1", RULE, payload(5), 5)
        assert later.serial == 5 and later.epoch == start.epoch

    run(new_store, scenario)


def test_rewind_selects_the_last_n_in_publish_order(new_store: StoreFactory) -> None:
    async def scenario(store: Any) -> None:
        empty = await store.last("app", "chat-1", RULE, 3)
        assert not empty.entries and empty.head.position.serial == 0
        await publish(store, 2)
        assert numbers((await store.last("app", "chat-1", RULE, 3)).entries) == [1, 2]
        positions = await publish(store, 5, start=3)
        replay = await store.last("app", "chat-1", RULE, 3)
        assert numbers(replay.entries) == [5, 6, 7]
        assert replay.head.position == positions[-1]
        assert not (await store.last("app", "chat-1", RULE, 0)).entries

    run(new_store, scenario)


def test_since_is_exact_and_never_partial(new_store: StoreFactory) -> None:
    async def scenario(store: Any) -> None:
        start = await store.head("app", "chat-1", RULE)
        positions = await publish(store, 6)
        whole = await store.since("app", "chat-1", RULE, start.position)
        assert whole.lost is None and numbers(whole.entries) == [1, 2, 3, 4, 5, 6]
        tail = await store.since("app", "chat-1", RULE, positions[3])
        assert tail.lost is None and [e.position for e in tail.entries] == positions[4:]
        none = await store.since("app", "chat-1", RULE, positions[-1])
        assert none.lost is None and not none.entries

    run(new_store, scenario)


def test_positions_of_another_epoch_or_never_issued(new_store: StoreFactory) -> None:
    async def scenario(store: Any) -> None:
        positions = await publish(store, 2)
        epoch = positions[0].epoch
        stranger = Position("zz" if epoch != "zz" else "zy", 1)
        caught = await store.since("app", "chat-1", RULE, stranger)
        assert caught.lost is Loss.EPOCH and caught.head.epoch == epoch
        ahead = Position(epoch, 9, positions[-1].stamp)
        assert (await store.since("app", "chat-1", RULE, ahead)).lost is Loss.EPOCH
        with pytest.raises(OtherEpoch) as other:
            await store.read("app", "chat-1", RULE, 10, Direction.FORWARD, after=stranger)
        assert other.value.head.epoch == epoch
        with pytest.raises(PositionAhead):
            await store.read("app", "chat-1", RULE, 10, Direction.BACKWARD, before=ahead)

    run(new_store, scenario)


def test_paging_backward_and_forward(new_store: StoreFactory) -> None:
    rule = HistoryRule(channels="*", limit=100, ttl=60)

    async def scenario(store: Any) -> None:
        positions = await publish(store, 25, rule=rule)
        seen: list[int] = []
        before = None
        for expected in ([25, 16], [15, 6], [5, 1]):
            page = await store.read("app", "chat-1", rule, 10, Direction.BACKWARD, before=before)
            got = numbers(page.entries)
            assert (got[0], got[-1]) == tuple(expected)
            seen += got
            before = page.next
        assert before is None and seen == list(range(25, 0, -1))
        after, seen = None, []
        while True:
            page = await store.read("app", "chat-1", rule, 7, Direction.FORWARD, after=after)
            seen += numbers(page.entries)
            if page.next is None:
                break
            assert page.next == page.entries[-1].position
            after = page.next
        assert seen == list(range(1, 26))
        window = await store.read(
            "app", "chat-1", rule, 100, Direction.FORWARD, after=positions[4], before=positions[9]
        )
        assert numbers(window.entries) == [6, 7, 8, 9]
        backward = await store.read(
            "app", "chat-1", rule, 2, Direction.BACKWARD, after=positions[4], before=positions[9]
        )
        assert numbers(backward.entries) == [9, 8] and backward.next == positions[7]
        exact = await store.read("app", "chat-1", rule, 25, Direction.FORWARD)
        assert len(exact.entries) == 25 and exact.next is None
        empty = await store.read("app", "chat-1", rule, 5, Direction.FORWARD, after=positions[-1])
        assert not empty.entries and empty.next is None

    run(new_store, scenario)


def test_limit_zero_is_the_head(new_store: StoreFactory) -> None:
    async def scenario(store: Any) -> None:
        empty = await store.read("app", "chat-1", RULE, 0, Direction.BACKWARD)
        assert not empty.entries and empty.head.position.serial == 0
        positions = await publish(store, 3)
        head = await store.read("app", "chat-1", RULE, 0, Direction.BACKWARD)
        assert not head.entries and head.next is None and head.head.position == positions[-1]
        assert head.head.epoch == empty.head.epoch

    run(new_store, scenario)


def test_channels_and_apps_are_separate(new_store: StoreFactory) -> None:
    async def scenario(store: Any) -> None:
        await publish(store, 3, channel="chat-a")
        await store.append("other", "chat-a", RULE, payload(9, "chat-a"), 9)
        await publish(store, 1, channel="chat-b", start=7)
        assert numbers((await store.last("app", "chat-a", RULE, 10)).entries) == [1, 2, 3]
        assert numbers((await store.last("other", "chat-a", RULE, 10)).entries) == [9]
        assert numbers((await store.last("app", "chat-b", RULE, 10)).entries) == [7]

    run(new_store, scenario)
