"""The replay pump (`pyserver.history.pump`) without sockets: a fake clock and a hand-turned
loop. First the pump alone (budget per turn, order, cancelled jobs), then with an app's
history and its registry: live events published between the slices of a replay arrive after
it, once and in order; a subscriber leaving or closing mid-replay is handled; what a replay
wrote counts as delivered only once a later ping is answered."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import orjson

from pyserver.channels.registry import ChannelRegistry
from pyserver.config import HistoryRule
from pyserver.history.live import AppHistory, NodeHistory
from pyserver.history.memory import MemoryHistoryStore
from pyserver.history.pump import CHECK_EVERY, ReplayPump
from pyserver.protocol.history import ConnectionHistory, RuleBook
from pyserver.protocol.session import PusherSession
from pyserver.protocol.websocket import text_frame


class Loop:
    """A hand-turned event loop: `call_soon` queues, `turn` runs what was queued."""

    def __init__(self) -> None:
        self.ready: list[Callable[[], None]] = []
        self.now = 0.0

    def call_soon(self, callback: Callable[[], None]) -> None:
        self.ready.append(callback)

    def clock(self) -> float:
        return self.now

    def turn(self) -> None:
        ready, self.ready = self.ready, []
        for callback in ready:
            callback()


class Frames:
    """A pump job writing `count` frames that cost `cost` seconds each on the loop's clock."""

    def __init__(self, loop: Loop, name: str, count: int, cost: float, log: list[str]) -> None:
        self.loop, self.name, self.count, self.cost, self.log = loop, name, count, cost, log
        self.sent = 0
        self.cancelled = False
        self.done = False

    def step(self, frames: int) -> bool:
        n = min(frames, self.count - self.sent)
        self.sent += n
        self.loop.now += n * self.cost
        self.log.extend([self.name] * n)
        if self.sent < self.count:
            return False
        self.done = True
        return True


def test_an_idle_pump_writes_a_short_replay_at_once_and_then_schedules_nothing() -> None:
    loop = Loop()
    pump = ReplayPump(0.002, loop.clock, loop.call_soon)
    log: list[str] = []
    job = Frames(loop, "a", 10, 1e-6, log)
    pump.submit(job)
    assert job.done and log == ["a"] * 10 and pump.pending == 0
    loop.turn()  # closes the turn's budget
    loop.turn()
    assert loop.ready == []


def test_a_burst_is_spread_over_loop_turns_within_the_budget_first_come_first_served() -> None:
    loop = Loop()
    pump = ReplayPump(0.002, loop.clock, loop.call_soon)
    log: list[str] = []
    jobs = [Frames(loop, str(n), 1000, 1.5e-6, log) for n in range(20)]
    for job in jobs:  # one batch of subscribes, one loop iteration
        pump.submit(job)
    first = len(log)
    per_turn = [first]
    while loop.ready:
        before = len(log)
        loop.turn()
        per_turn.append(len(log) - before)
    assert all(job.done for job in jobs)
    assert log == [str(n) for n in range(20) for _ in range(1000)]  # in order, each one whole
    most = int(0.002 / 1.5e-6) + CHECK_EVERY
    assert max(per_turn) <= most, per_turn
    assert len(per_turn) >= 20_000 // most


def test_a_cancelled_job_is_not_stepped_again() -> None:
    loop = Loop()
    pump = ReplayPump(0.002, loop.clock, loop.call_soon)
    log: list[str] = []
    big, other = Frames(loop, "big", 5000, 1e-6, log), Frames(loop, "other", 5, 1e-6, log)
    pump.submit(big)
    pump.submit(other)
    sent = big.sent
    assert 0 < sent < 5000 and not other.done
    big.cancelled = True
    while loop.ready:
        loop.turn()
    assert big.sent == sent and other.done and log[-5:] == ["other"] * 5


# --- with an app's history -----------------------------------------------------------------

RULE = HistoryRule(channels="chat-*", limit=1000, recovery_window=60)
CHANNEL = "chat-1"


class Client:
    def __init__(self, socket_id: str) -> None:
        self.socket_id = socket_id
        self.session = PusherSession()
        self.session.socket_id = socket_id
        self.session.history = ConnectionHistory(f"token-{socket_id}")
        self.got: list[bytes] = []

    def send(self, frame: bytes) -> None:
        self.got.append(frame)

    def send_message(self, payload: bytes) -> None:
        self.got.append(text_frame(payload))

    def data(self) -> list[str]:
        return [orjson.loads(f[2:])["data"] for f in self.got]


def done(work: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine of the in-memory store, which never suspends."""
    try:
        work.send(None)
    except StopIteration as stop:
        return stop.value
    raise AssertionError("suspended")


class World:
    def __init__(self) -> None:
        self.loop = Loop()
        node = NodeHistory(MemoryHistoryStore(1 << 24))
        node.pump = ReplayPump(0.002, self.loop.clock, self.loop.call_soon)
        self.node = node
        self.history = AppHistory(node, "app", RuleBook([RULE]))
        self.registry = ChannelRegistry()
        self.registry.held = self.history.holds
        self.published = 0

    def publish(self, count: int = 1) -> None:
        for _ in range(count):
            n = self.published
            self.published += 1
            payload = f'{{"event":"m","channel":"{CHANNEL}","data":"{n}"}}'.encode()
            self.loop.now += 1e-6  # what writing a frame costs, as the pump's clock sees it
            self.history.record(CHANNEL, RULE, payload, None, self._broadcast)

    def _broadcast(self, channel: str, frame: bytes, except_socket_id: str | None) -> None:
        self.registry.broadcast(channel, frame, except_socket_id)

    def join(self, client: Client) -> None:
        def add() -> None:
            self.registry.add(CHANNEL, client)

        class Costly:  # every frame the replay writes moves the clock on
            def __init__(self, inner: Client, loop: Loop) -> None:
                self.inner, self.loop = inner, loop
                self.socket_id, self.session = inner.socket_id, inner.session

            def send(self, frame: bytes) -> None:
                self.loop.now += 1.5e-6
                self.inner.send(frame)

            def send_message(self, payload: bytes) -> None:
                self.loop.now += 1.5e-6
                self.inner.send_message(payload)

        done(self.history.join(Costly(client, self.loop), CHANNEL, RULE, None, add))


def catching_up(world: World, count: int, seen: int = 0) -> list[Client]:
    """`count` clients whose resume tokens say they saw events up to `seen`; the rest of
    1000 follow."""
    world.publish(1000)
    start = done(world.node.store.last("app", CHANNEL, RULE, 1000)).entries[seen].position
    clients = [Client(f"{n}.1") for n in range(count)]
    for client in clients:
        assert client.session.history is not None
        client.session.history.resume = {CHANNEL: start}
    return clients


def test_live_events_published_mid_replay_follow_it_once_in_order() -> None:
    world = World()
    clients = catching_up(world, 10)
    for client in clients:
        world.join(client)
    assert world.node.pump.pending  # not all of it in one loop iteration
    turns = 0
    while world.loop.ready:
        world.publish(3)  # live, between two slices
        world.loop.turn()
        turns += 1
    world.publish(2)  # live, once everyone is in the fan-out
    assert turns > 5
    assert world.history.holds == {} and world.history.replays == {}
    for client in clients:
        assert client.data() == [str(n) for n in range(1, world.published)]
        assert client in world.registry.channels[CHANNEL].subscribers


def test_a_subscriber_that_leaves_mid_replay_gets_no_more_and_unpins_the_hold_list() -> None:
    world = World()
    first, leaving = catching_up(world, 2)
    world.join(first)
    world.join(leaving)
    while not leaving.got:
        world.publish(1)
        world.loop.turn()
    world.history.left(leaving.socket_id, CHANNEL)
    got = len(leaving.got)
    while world.loop.ready:
        world.publish(1)
        world.loop.turn()
    assert len(leaving.got) == got < 999
    assert leaving not in world.registry.channels[CHANNEL].subscribers
    assert world.history.holds == {} and world.history.replays == {}
    assert first.data() == [str(n) for n in range(1, world.published)]


def returning_after(world: World, closing: Client) -> Client:
    """`closing`'s connection drops; a new one resumes with its token and replays to the end."""
    remembering = world.history.dropped(closing.session)
    assert remembering is not None
    done(remembering)
    world.history.left(closing.socket_id, CHANNEL)
    world.registry.remove(CHANNEL, closing)
    returning = Client("9.9")
    assert returning.session.history is not None
    returning.session.history.resume = done(
        world.node.marks.take_token("token-" + closing.socket_id, "app")
    )
    world.join(returning)
    while world.loop.ready:
        world.loop.turn()
    return returning


def test_a_connection_closed_mid_replay_is_remembered_where_the_replay_started() -> None:
    world = World()
    first, closing = catching_up(world, 2)
    world.join(first)
    world.join(closing)
    while not closing.got:
        world.loop.turn()
    last = orjson.loads(closing.got[-1][2:])["data"]
    assert last != "999"  # mid-replay
    # Written is not received: the return gets the whole catch-up again, never a gap.
    returning = returning_after(world, closing)
    assert returning.data() == [str(n) for n in range(1, 1000)]
    assert closing.data() == returning.data()[: len(closing.got)]


def test_what_a_replay_wrote_counts_as_delivered_only_once_a_later_ping_is_answered() -> None:
    world = World()
    first, client = catching_up(world, 2, seen=100)  # the live events below stay in limit
    history = client.session.history
    assert history is not None and history.resume is not None
    start = history.resume[CHANNEL]
    world.join(first)
    world.join(client)
    assert world.node.pump.pending  # queued behind the first one
    early = history.start_probe(world.registry.last)  # a ping written mid-replay
    while world.loop.ready:
        world.publish(1)  # held, then written in the replay's last step, then live
        world.loop.turn()
    assert client.data() == [str(n) for n in range(101, world.published)]
    history.ponged(early)  # answers a ping written before most of the replay
    assert history.delivered() == {CHANNEL: start}
    # The client drops again before a later ping is answered (a phone losing its network
    # during a big catch-up): its return gets everything after the catch-up's start again.
    returning = returning_after(world, client)
    assert returning.data() == [str(n) for n in range(101, world.published)]


def test_a_later_ping_confirms_the_replay_up_to_what_it_wrote() -> None:
    world = World()
    (client,) = catching_up(world, 1)
    history = client.session.history
    assert history is not None
    world.join(client)
    while world.loop.ready:
        world.loop.turn()
    assert world.registry.last(CHANNEL) is None  # nothing live: only the replay knows its end
    history.ponged(history.start_probe(world.registry.last))
    newest = done(world.node.store.last("app", CHANNEL, RULE, 1)).entries[0].position
    assert history.delivered() == {CHANNEL: newest}
    world.publish(3)
    returning = returning_after(world, client)
    assert returning.data() == ["1000", "1001", "1002"]


def test_subscribing_again_while_the_first_replay_is_queued_replaces_it() -> None:
    world = World()
    first, again = catching_up(world, 2)
    world.join(first)
    world.join(again)
    world.history.left(again.socket_id, CHANNEL)  # unsubscribe …
    again.got.clear()
    assert again.session.history is not None
    again.session.history.resume = None
    world.join(again)  # … and subscribe again (a rewind of 0 now)
    while world.loop.ready:
        world.publish(1)
        world.loop.turn()
    assert again.data() == [str(n) for n in range(1000, world.published)]
    assert world.history.holds == {} and world.history.replays == {}
