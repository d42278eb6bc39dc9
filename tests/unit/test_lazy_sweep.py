"""The lazy WebSocket sweep (a timing wheel, `ServerState.sweep`) against the per-tick one.

Real `WebSocketConnection`s on fake transports, no sockets: the server's sweep visits each
only at the ticks its session says something can happen there (`PusherSession.next_tick`).
A reference model, the per-tick state machine the server used to run on every connection
at every tick, gets the same random activity traces; both must ping and close at the very
same ticks, with the same codes.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import pytest

from pyserver.channels.app import App
from pyserver.cluster.local import LocalAdapter
from pyserver.config import AppConfig, HistoryRule, Settings
from pyserver.history.live import AppHistory, NodeHistory
from pyserver.history.memory import MemoryHistoryStore
from pyserver.protocol.history import RuleBook
from pyserver.protocol.members import SignedInUser
from pyserver.protocol.websocket import OP_PING, OP_PONG, FrameReader, encode_frame
from pyserver.server.flow import WriteBatcher
from pyserver.server.state import ServerState
from pyserver.server.websocket_connection import WebSocketConnection
from tests.wsframes import client_frame

TICK_SECONDS = 5.0
AUTH_TIMEOUT = 60.0
WS_PING = encode_frame(OP_PING, b"")
PONG = client_frame(OP_PONG, b"")


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


@dataclass
class PerTick:
    """The reference: the activity state machine as it ran on every connection at every
    tick (an `active` flag any bytes set, and a count of silent ticks)."""

    auth_deadline: float = 0.0
    active: bool = True
    idle: int = 0

    def tick(self, ping_after: int, close_after: int, now: float) -> str | None:
        if self.auth_deadline and now > self.auth_deadline:
            return "close 4009"
        if self.active:
            self.active = False
            self.idle = 0
            return None
        self.idle += 1
        if self.idle == ping_after:
            return "ping"
        if self.idle >= close_after:
            return "close 4201"
        return None


@dataclass
class Client:
    """One traced connection: how it behaves, and what each side did at which tick."""

    connection: WebSocketConnection
    transport: FakeTransport
    model: PerTick
    chatter: float
    """Chance of sending something between two ticks, pinged or not."""
    answers: float
    """Chance of answering a ping (a pong after `delay` ticks)."""
    delay: int
    signs_in_at: int | None
    pinged_at: int | None = None
    closed: bool = False
    lazy: list[tuple[int, str]] = field(default_factory=list)
    reference: list[tuple[int, str]] = field(default_factory=list)


def _close_code(frame: bytes) -> int:
    assert frame[0] == 0x88
    return int.from_bytes(frame[2:4], "big")


def _state() -> tuple[ServerState, asyncio.AbstractEventLoop]:
    plain = AppConfig(id="1", key="k", secret="s")
    authorized = AppConfig(id="2", key="a", secret="s", authorized_connections_timeout=AUTH_TIMEOUT)
    apps = {c.key: App(c, LocalAdapter()) for c in (plain, authorized)}
    settings = Settings(apps=[plain, authorized])
    state = ServerState(settings, apps, lambda r: None, LocalAdapter(), lambda: None)  # type: ignore[arg-type,return-value]
    loop = asyncio.new_event_loop()
    state.batcher = WriteBatcher(loop)
    return state, loop


def _connect(state: ServerState, rng: random.Random, now: float, ticks: int) -> Client:
    transport = FakeTransport()
    connection = WebSocketConnection(state, transport, FrameReader(10_000), False)  # type: ignore[arg-type]
    state.upgraded(object(), connection)  # type: ignore[arg-type]
    authorized = rng.random() < 0.25
    connection.open("a" if authorized else "k", "/app/k", {"protocol": "7"}, None)
    model = PerTick()
    if authorized:  # the deadline on the test's clock, the same for both sides
        connection.session.auth_deadline = model.auth_deadline = now + AUTH_TIMEOUT
    return Client(
        connection,
        transport,
        model,
        chatter=rng.choice([0.0, 0.0, 0.02, 0.1, 0.5, 0.95]),
        answers=rng.choice([0.0, 0.5, 0.9, 1.0]),
        delay=rng.choice([0, 0, 1, 2, 5]),
        signs_in_at=rng.randrange(ticks) if authorized and rng.random() < 0.7 else None,
    )


def _lazy_outcome(client: Client, written: int) -> str | None:
    """What the sweep made this connection do at the tick just swept."""
    if client.transport.closed:
        return f"close {_close_code(client.transport.written[-1])}"
    if WS_PING in client.transport.written[written:]:
        return "ping"
    return None


def _run(seed: int, timeouts: list[tuple[int, int]], ticks: int = 90) -> list[Client]:
    rng = random.Random(seed)
    state, loop = _state()
    clients: list[Client] = []
    ping_after, close_after = timeouts[0]
    state.revisit_all(ping_after)  # as the server does when it sets its tick counts
    change_at = rng.randrange(ticks) if len(timeouts) > 1 else -1
    for at in range(ticks):
        now = at * TICK_SECONDS
        # between tick at-1 and tick at: new connections, then what the clients send
        for _ in range(rng.choice([0, 0, 0, 1, 3]) if at else 40):
            clients.append(_connect(state, rng, now, ticks))
        if at == change_at:  # the tick counts change (an app's timeouts changed)
            ping_after, close_after = timeouts[1]
            state.revisit_all(ping_after)
        for client in clients:
            if client.closed:
                continue
            if client.signs_in_at == at:
                client.connection.session.signed_in(SignedInUser("u", {}, (), "{}"))
                client.model.auth_deadline = 0.0
            pong_due = client.pinged_at is not None and at - client.pinged_at == client.delay + 1
            if (pong_due and rng.random() < client.answers) or rng.random() < client.chatter:
                client.connection.data_received(PONG)
                client.model.active = True
        # tick number `at`
        before = [len(c.transport.written) for c in clients]
        state.sweep(ping_after, close_after, now)
        state.batcher.flush()
        for client, written in zip(clients, before, strict=True):
            if client.closed:
                continue
            lazy = _lazy_outcome(client, written)
            reference = client.model.tick(ping_after, close_after, now)
            if lazy is not None:
                client.lazy.append((at, lazy))
            if reference is not None:
                client.reference.append((at, reference))
            if reference == "ping":
                client.pinged_at = at
            client.closed = client.transport.closed
    loop.close()
    return clients


@pytest.mark.parametrize(
    "timeouts",
    [
        [(6, 12)],  # the defaults: activity_timeout 30 s, pong_timeout 30 s, 5 s ticks
        [(1, 2)],
        [(2, 10)],  # a pong timeout longer than the activity timeout
        [(3, 4)],
        [(6, 12), (2, 5)],  # the counts change mid-trace
        [(2, 3), (7, 20)],
    ],
)
@pytest.mark.parametrize("seed", range(8))
def test_the_lazy_sweep_pings_and_closes_at_the_ticks_of_the_per_tick_one(
    timeouts: list[tuple[int, int]], seed: int
) -> None:
    clients = _run(seed, timeouts)
    for number, client in enumerate(clients):
        assert client.lazy == client.reference, f"connection {number} (seed {seed})"
    outcomes = [outcome for client in clients for _, outcome in client.reference]
    assert "ping" in outcomes and "close 4201" in outcomes, "the traces exercise both"


def test_the_traces_exercise_sign_in_deadlines_and_pongs() -> None:
    clients = _run(0, [(6, 12)])
    outcomes = [outcome for client in clients for _, outcome in client.reference]
    assert "close 4009" in outcomes
    pings = [sum(outcome == "ping" for _, outcome in client.reference) for client in clients]
    assert max(pings) > 1, "some connection was pinged, answered and pinged again"


def test_an_idle_connection_is_visited_only_at_its_ping_and_its_close() -> None:
    state, loop = _state()
    transport = FakeTransport()
    connection = WebSocketConnection(state, transport, FrameReader(10_000), False)  # type: ignore[arg-type]
    state.upgraded(object(), connection)  # type: ignore[arg-type]
    connection.open("k", "/app/k", {"protocol": "7"}, None)
    visits = []
    for at in range(14):
        if state.tick in state.due:
            visits.append(at)
        state.sweep(6, 12, at * TICK_SECONDS)
    assert visits == [0, 6, 12], "its first tick, its ping, its close"
    assert not any(state.due.values()), "closed: dropped from the wheel"
    loop.close()


def test_an_idle_connection_that_answers_its_pings_is_visited_only_at_its_pings() -> None:
    """The pong moves it from its close's bucket to its next ping's: one visit per ping."""
    state, loop = _state()
    state.revisit_all(6)
    transport = FakeTransport()
    connection = WebSocketConnection(state, transport, FrameReader(10_000), False)  # type: ignore[arg-type]
    state.upgraded(object(), connection)  # type: ignore[arg-type]
    connection.open("k", "/app/k", {"protocol": "7"}, None)
    visits, pings = [], []
    for at in range(30):
        if connection in state.due.get(state.tick, ()):
            visits.append(at)
        written = len(transport.written)
        state.sweep(6, 12, at * TICK_SECONDS)
        state.batcher.flush()
        if WS_PING in transport.written[written:]:
            pings.append(at)
            connection.data_received(PONG)  # answered before the next tick
    assert pings == [6, 13, 20, 27]
    assert visits == [0, *pings], "no visit at a pong deadline that a pong already met"
    assert not transport.closed
    loop.close()


def test_a_connection_of_an_app_with_history_is_visited_at_every_tick() -> None:
    """History probes and `resume_failed` count ticks: such a connection never goes lazy (its
    history is attached at the handshake, before its first visit)."""
    config = AppConfig(id="3", key="h", secret="s")
    node = NodeHistory(MemoryHistoryStore(1 << 20))
    history = AppHistory(node, "3", RuleBook([HistoryRule(channels="chat-*", rewind=2)]))
    state = ServerState(
        Settings(apps=[config]),
        {"h": App(config, LocalAdapter(), history=history)},
        lambda r: None,  # type: ignore[arg-type,return-value]
        LocalAdapter(),
        lambda: None,
    )
    loop = asyncio.new_event_loop()
    state.batcher = WriteBatcher(loop)
    connection = WebSocketConnection(state, FakeTransport(), FrameReader(10_000), False)  # type: ignore[arg-type]
    state.upgraded(object(), connection)  # type: ignore[arg-type]
    connection.open("h", "/app/h", {"protocol": "7"}, None)
    assert connection.session.history is not None
    visits = []
    for at in range(8):
        if connection in state.due.get(state.tick, ()):
            visits.append(at)
        connection.data_received(PONG)  # busy all the time
        state.sweep(6, 12, at * TICK_SECONDS)
    assert visits == list(range(8))
    loop.close()


def test_a_lost_connection_leaves_the_wheel_at_once() -> None:
    """Churn must not keep closed connections alive until their next ping tick: the wheel
    drops one as soon as the server hears it is gone."""
    state, loop = _state()
    connections = [
        WebSocketConnection(state, FakeTransport(), FrameReader(10_000), False)  # type: ignore[arg-type]
        for _ in range(3)
    ]
    for connection in connections:
        state.upgraded(object(), connection)  # type: ignore[arg-type]
        connection.open("k", "/app/k", {"protocol": "7"}, None)
    state.sweep(6, 12, 0.0)  # first visit: all three now wait for their ping tick
    gone = connections.pop(1)
    assert gone in state.due[6]
    state.websocket_lost(gone)
    assert gone not in state.due[6] and gone.bucket is None
    assert set(state.due[6]) == set(connections)
    assert not any(gone in bucket for bucket in state.due.values()), "nothing holds it"
    state.sweep(6, 12, 5.0)
    assert [at for at, bucket in state.due.items() if bucket] == [6]
    loop.close()
