"""The Pusher session without sockets: handshake refusals, ordering, activity and close codes,
and the slow-consumer cap of the transport side, all with plain function calls."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import orjson
import pytest

from pyserver.channels.app import App
from pyserver.cluster.local import LocalAdapter
from pyserver.config import AppConfig, Settings
from pyserver.protocol.commands import Ping, Subscribe
from pyserver.protocol.errors import (
    AppDisabled,
    AppNotFound,
    BadMessage,
    ConnectionUnauthorized,
    InvalidVersionFormat,
    NoProtocolVersion,
    OriginNotAllowed,
    OverConnectionQuota,
    PathNotFound,
    PongNotReceived,
    UnsupportedProtocol,
)
from pyserver.protocol.history import ConnectionHistory
from pyserver.protocol.members import SignedInUser
from pyserver.protocol.session import PusherSession, State, Tick, handshake
from pyserver.protocol.websocket import OP_BINARY, OP_CLOSE, OP_TEXT, FrameReader
from pyserver.server.flow import WriteBatcher
from pyserver.server.state import ServerState
from pyserver.server.websocket_connection import WebSocketConnection
from tests.wsframes import client_frame


@dataclass(frozen=True)
class Policy:
    enabled: bool = True
    allowed_origins: tuple[str, ...] = ()
    max_connections: int = 0


def _open(socket_id: str = "1.2", auth_timeout: float = 0.0) -> PusherSession:
    session = PusherSession()
    session.open(socket_id, 120, now=100.0, auth_timeout=auth_timeout)
    return session


def _message(event: str, data: object) -> bytes:
    return orjson.dumps({"event": event, "data": data})


# --- handshake ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "query", "origin", "app", "connections", "refusal", "code"),
    [
        (None, {"protocol": "7"}, None, Policy(), 0, PathNotFound, 4005),
        ("k", {"protocol": "7"}, None, None, 0, AppNotFound, 4001),
        ("k", {"protocol": "7"}, None, Policy(enabled=False), 0, AppDisabled, 4003),
        (
            "k",
            {"protocol": "7"},
            "https://evil.test",
            Policy(allowed_origins=("good.test",)),
            0,
            OriginNotAllowed,
            4009,
        ),
        ("k", {}, None, Policy(), 0, NoProtocolVersion, 4008),
        ("k", {"protocol": "seven"}, None, Policy(), 0, InvalidVersionFormat, 4006),
        ("k", {"protocol": "8"}, None, Policy(), 0, UnsupportedProtocol, 4007),
        ("k", {"protocol": "3"}, None, Policy(), 0, UnsupportedProtocol, 4007),
        ("k", {"protocol": "7"}, None, Policy(max_connections=2), 2, OverConnectionQuota, 4004),
    ],
)
def test_handshake_refusals_carry_their_close_code(
    key: str | None,
    query: dict[str, str],
    origin: str | None,
    app: Policy | None,
    connections: int,
    refusal: type,
    code: int,
) -> None:
    error = handshake(key, "/wrong", query, origin, app, connections)
    assert isinstance(error, refusal)
    assert error.code == code and error.closes


def test_handshake_accepts_and_open_moves_to_open() -> None:
    policy = Policy(allowed_origins=("good.test",), max_connections=2)
    assert handshake("k", "/app/k", {"protocol": "7"}, "https://good.test", policy, 1) is None
    assert handshake("k", "/app/k", {"protocol": "4"}, None, Policy(), 0) is None
    session = PusherSession()
    assert session.state is State.CONNECTING
    established = orjson.loads(session.open("12.34", 120, now=5.0, auth_timeout=0.0))
    assert established["event"] == "pusher:connection_established"
    assert orjson.loads(established["data"]) == {"socket_id": "12.34", "activity_timeout": 120}
    assert session.state is State.OPEN and session.socket_id == "12.34"
    assert session.auth_deadline == 0.0


def test_session_is_small() -> None:
    session = _open()
    assert not hasattr(session, "__dict__")
    assert session.backlog is None and session.pending is None and session.client_events is None


# --- ordering -------------------------------------------------------------------------------


def test_messages_wait_while_a_handler_runs_and_come_out_in_order() -> None:
    session = _open()
    first = session.receive(_message("pusher:subscribe", {"channel": "a"}))
    assert first == Subscribe("a", None, None)
    session.handler_started()  # the subscribe waits for the cluster
    assert session.receive(_message("pusher:subscribe", {"channel": "b"})) is None
    kick = object()
    session.hold(kick)  # an action (a kick) queued like a message
    assert session.receive(_message("pusher:ping", {})) is None
    assert session.next_held() is None, "nothing comes out while the handler runs"
    session.handler_finished()
    second = session.next_held()
    assert isinstance(second, bytes) and session.parse(second) == Subscribe("b", None, None)
    session.handler_started()  # that one goes on asynchronously too
    assert session.next_held() is None
    assert session.must_wait()
    session.handler_finished()
    assert session.next_held() is kick
    third = session.next_held()
    assert isinstance(third, bytes) and session.parse(third) == Ping()
    assert session.next_held() is None and session.backlog is None
    assert not session.must_wait()


def test_a_message_arriving_while_others_wait_queues_behind_them() -> None:
    session = _open()
    session.handler_started()
    session.receive(b'{"event":"pusher:ping","data":{}}')
    session.handler_finished()
    # a held message is still waiting: a new one must not overtake it
    assert session.receive(_message("pusher:subscribe", {"channel": "x"})) is None
    assert session.parse(session.next_held()) == Ping()  # type: ignore[arg-type]
    assert session.parse(session.next_held()) == Subscribe("x", None, None)  # type: ignore[arg-type]


def test_nothing_is_handed_out_once_closing() -> None:
    session = _open()
    session.handler_started()
    session.receive(_message("pusher:ping", {}))
    session.close()
    session.handler_finished()
    assert session.state is State.CLOSING
    assert session.next_held() is None
    assert session.receive(_message("pusher:ping", {})) is None
    session.lost()
    assert session.state is State.CLOSED


def test_a_bad_message_raises_the_error_to_report() -> None:
    with pytest.raises(BadMessage):
        _open().receive(b"not json")


# --- subscriptions, user and client events -------------------------------------------------


def test_subscriptions_are_pending_until_joined() -> None:
    session = _open()
    session.subscribing("presence-room", "u1")
    session.subscribing("news", None)
    assert session.is_pending("presence-room") and session.is_pending("news")
    session.joined("news")
    assert not session.is_pending("news") and session.is_pending("presence-room")
    assert session.member_of("presence-room", "u1") and not session.member_of("news", "u1")
    assert session.leave("presence-room") == "u1"
    assert session.pending is None
    assert session.channels == {"news": None}
    session.signed_in(SignedInUser("u2", {}, (), "{}"))
    assert session.member_of("news", "u2")


def test_client_event_allowance_refills_with_the_injected_clock() -> None:
    session = _open()
    assert all(session.take_client_event_token(3, now=10.0) for _ in range(3))
    assert not session.take_client_event_token(3, now=10.0)
    assert session.take_client_event_token(3, now=10.34)  # one third of a second: one token
    assert not session.take_client_event_token(3, now=10.34)
    assert session.take_client_event_token(0, now=10.34), "0 means no limit"


# --- activity and close codes ---------------------------------------------------------------


def test_silence_pings_then_closes_with_4201() -> None:
    session = _open()  # created before tick 0: active since the handshake
    assert session.tick(2, 4, now=0.0, at=0) is Tick.NOTHING
    assert not session.active
    assert session.tick(2, 4, now=0.0, at=1) is Tick.NOTHING
    assert session.tick(2, 4, now=0.0, at=2) is Tick.PING
    assert session.tick(2, 4, now=0.0, at=3) is Tick.NOTHING
    closing = session.tick(2, 4, now=0.0, at=4)
    assert isinstance(closing, PongNotReceived) and closing.code == 4201
    session.heard = 5  # any bytes from the client, before tick 5
    assert session.active
    assert session.tick(2, 4, now=0.0, at=5) is Tick.NOTHING


def test_the_next_tick_is_the_ping_then_the_close_or_an_earlier_ping() -> None:
    session = _open()
    assert session.next_tick(6, 12, at=0) == 6  # heard at 0: pinged at 6
    session.heard = 4
    assert session.next_tick(6, 12, at=5) == 10, "bytes postpone the ping"
    assert session.next_tick(6, 12, at=10) == 16, "pinged: closed at 16 without a pong"
    assert session.next_tick(2, 10, at=6) == 9, "a pong right after 6 brings a ping at 9"
    assert session.next_tick(2, 4, at=8) == 9, "past its close: every tick"
    session.history = ConnectionHistory("t")
    assert session.next_tick(6, 12, at=5) == 6, "history probes count every tick"


def test_an_authorized_connection_must_sign_in_before_its_deadline() -> None:
    session = _open(auth_timeout=30.0)
    assert session.auth_deadline == 130.0
    assert session.next_tick(2, 4, at=0) == 1, "a deadline on the clock: every tick"
    assert session.tick(2, 4, now=129.0, at=0) is Tick.NOTHING
    late = session.tick(2, 4, now=131.0, at=1)
    assert isinstance(late, ConnectionUnauthorized) and late.code == 4009
    signed = _open(auth_timeout=30.0)
    signed.signed_in(SignedInUser("u", {}, (), "{}"))
    assert signed.tick(2, 4, now=131.0, at=0) is Tick.NOTHING
    assert signed.next_tick(2, 4, at=0) == 2
    joined = _open(auth_timeout=30.0)
    joined.authorized()  # it joined a private channel
    assert joined.tick(2, 4, now=131.0, at=0) is Tick.NOTHING


# --- the transport side, still without a socket ---------------------------------------------


class FakeTransport:
    """Records writes; reports a write buffer of `buffered` bytes."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.buffered = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _connection(
    config: AppConfig | None = None,
) -> tuple[WebSocketConnection, FakeTransport, asyncio.AbstractEventLoop]:
    config = config or AppConfig(id="1", key="k", secret="s")
    settings = Settings(apps=[config], write_buffer_cap=65_536)
    app = App(config, LocalAdapter())
    state = ServerState(settings, {"k": app}, lambda r: None, app.adapter, lambda: None)  # type: ignore[arg-type,return-value]
    loop = asyncio.new_event_loop()
    state.batcher = WriteBatcher(loop)
    transport = FakeTransport()
    connection = WebSocketConnection(state, transport, FrameReader(10_000), False)  # type: ignore[arg-type]
    connection.open("k", "/app/k", {"protocol": "7"}, None)
    connection.flush()
    return connection, transport, loop


def _close_code(frame: bytes) -> int:
    assert frame[0] == 0x88
    return int.from_bytes(frame[2:4], "big")


def test_a_slow_consumer_is_closed_with_4100() -> None:
    async def scenario() -> None:  # the close schedules dropping what the peer never reads
        connection, transport, loop = _connection()
        assert b"pusher:connection_established" in transport.written[0]
        connection.pause_writing()  # asyncio: over the high-water mark
        transport.buffered = 65_536
        connection.send(b"\x81\x01x")
        connection.flush()
        assert not transport.closed, "under the cap: still served"
        transport.buffered = 65_537
        connection.send(b"\x81\x01y")
        connection.flush()
        assert transport.closed and _close_code(transport.written[-1]) == 4100
        connection.send(b"\x81\x01z")
        assert connection.out is None, "nothing is queued once closing"
        loop.close()

    asyncio.run(scenario())


def test_refused_handshake_closes_with_its_code() -> None:
    connection, transport, loop = _connection(AppConfig(id="1", key="k", secret="s", enabled=False))
    assert connection.app is None and connection.session.state is State.CLOSING
    assert b'"code":4003' in transport.written[0]
    assert _close_code(transport.written[-1]) == 4003
    loop.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(OP_CLOSE, (4500).to_bytes(2, "big")), 1000),  # 4xxx: answered with 1000
        (client_frame(OP_CLOSE, (1001).to_bytes(2, "big")), 1001),
        (client_frame(OP_CLOSE, (1005).to_bytes(2, "big")), 1002),  # never sent on the wire
        (client_frame(OP_TEXT, b"x", masked=False), 1002),
    ],
)
def test_close_codes_from_the_client_side(frame: bytes, code: int) -> None:
    connection, transport, loop = _connection()
    connection.data_received(frame)
    assert transport.closed and _close_code(transport.written[-1]) == code
    assert connection.session.state is State.CLOSING
    loop.close()


def test_binary_frames_get_an_error_and_the_connection_stays() -> None:
    connection, transport, loop = _connection()
    connection.data_received(client_frame(OP_BINARY, b"\x00"))
    connection.flush()
    assert b"pusher:error" in transport.written[-1] and not transport.closed
    loop.close()


def test_client_events_are_relayed_in_order_to_the_other_subscriber() -> None:
    config = AppConfig(id="1", key="k", secret="s", client_events=True)
    sender, _, loop = _connection(config)
    app = sender.app
    assert app is not None
    receiver = WebSocketConnection(sender.state, FakeTransport(), FrameReader(10_000), False)  # type: ignore[arg-type]
    receiver.open("k", "/app/k", {"protocol": "7"}, None)
    for connection in (sender, receiver):
        connection.session.subscribing("private-c", None)
        connection.session.joined("private-c")
        app.registry.add("private-c", connection)
    for n in range(3):
        event = {"event": "client-n", "channel": "private-c", "data": str(n)}
        sender.data_received(client_frame(OP_TEXT, orjson.dumps(event)))
    assert receiver.out is not None
    relayed = [orjson.loads(frame[2:]) for frame in receiver.out[1:]]
    assert [m["data"] for m in relayed] == ["0", "1", "2"]
    assert all(m["channel"] == "private-c" for m in relayed)
    loop.close()
