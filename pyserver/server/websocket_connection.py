"""One Pusher WebSocket connection: the thin asyncio side of a `PusherSession`.

The HTTP protocol (`server.http_connection`) answers the upgrade, builds this object and
hands it the transport with `transport.set_protocol`, as uvicorn does; from then on this
object reads WebSocket frames (`protocol.websocket.FrameReader`), feeds text messages to the
session (`protocol.session`) and dispatches the commands it returns to the app
(`channels.app`). Writing, corking and the slow-consumer cap live in
`server.flow.CorkedWriter`.

Invariants:
- No HTTP state: the request is gone once this object exists.
- No Task per connection (design rule 5): everything runs from transport callbacks, the
  server's sweep (`tick`) and, with an asynchronous Adapter, the handler Tasks of
  `pyserver.tasks`.
- Reading stamps the session with the number of the server's next sweep tick
  (`PusherSession.heard`), no clock read; `tick` answers when the sweep must visit next
  (None once closing: a closing connection sends nothing more, so it needs no visits).
- `pinged` is True from a ping sent while the sweep visits this connection only at its
  ping and its close, until the client's next bytes; those move it to the wheel's bucket of
  its next ping (`ServerState.answered`), so an idle client costs one visit per ping.
- A client's messages are handled in order; the session holds the later ones while a
  handler runs, and this object drains them when it finishes (`_handler_done`).
- Errors are reported only through `report`, which sends `frames.for_error` and closes when
  the error says so.
- `socket_id` is a copy of the session's, set once when it opens (the fan-out loop reads it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from pyserver import tasks
from pyserver.channels.app import App
from pyserver.logs import SocketLog, socket_log
from pyserver.protocol import frames
from pyserver.protocol.commands import (
    ClientEvent,
    Command,
    Ping,
    Pong,
    Resume,
    Signin,
    Subscribe,
    Unsubscribe,
)
from pyserver.protocol.errors import BadMessage, OverCapacity, PusherError, SlowConsumer
from pyserver.protocol.session import PusherSession, State, Tick, handshake
from pyserver.protocol.websocket import (
    CLOSE_NORMAL,
    CLOSE_PROTOCOL_ERROR,
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    WebSocketError,
    close_code_allowed,
    close_frame,
    encode_frame,
    parse_close,
    text_frame,
)
from pyserver.server.flow import CorkedWriter
from pyserver.server.state import OpenWebSocket, ServerState, new_socket_id

log = logging.getLogger("pyserver.connection")

PONG_MESSAGE = text_frame(frames.PONG_FRAME)
WS_PING = encode_frame(OP_PING, b"")
CLOSE_FLUSH_SECONDS = 2.0

Action = Callable[[], Coroutine[Any, Any, None] | None]


class WebSocketConnection(CorkedWriter):
    __slots__ = ("app", "bucket", "log", "pinged", "reader", "session", "socket_id", "state")

    def __init__(
        self,
        state: ServerState,
        transport: asyncio.Transport,
        reader: FrameReader,
        deflate: bool,
    ) -> None:
        settings = state.settings
        super().__init__(
            transport,
            state.batcher,
            settings.write_buffer_cap,
            state.deflater if deflate else None,
        )
        self.state = state
        self.bucket: dict[OpenWebSocket, None] | None = None
        """The sweep bucket it waits in (`ServerState.due`)."""
        self.reader = reader
        self.session = PusherSession(state.tick)
        self.app: App | None = None
        self.socket_id = ""
        self.log: SocketLog | None = None
        """This connection's debug logger; None unless `pyserver` logs at DEBUG."""
        self.pinged = False

    # --- accept path: the HTTP protocol hands the transport over after the 101 -------------
    # (`ServerState.upgraded`); `connection_made` is not called again for the same TCP
    # connection.

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.out = None
        self.state.websocket_lost(self)
        session = self.session
        session.lost()
        if self.log is not None:
            self.log.debug("connection lost%s", f" ({exc})" if exc else "")
        if self.app is not None and not session.busy:
            self._leave_app()
        # else: a handler is still running; _handler_done leaves after it, in order

    # --- the Pusher handshake --------------------------------------------------------------

    def open(
        self,
        key: str | None,
        path: str,
        query: dict[str, str],
        origin: str | None,
        over_capacity: bool = False,
    ) -> None:
        """Check the Pusher handshake; send `connection_established` or close with the error
        (4100 first if the connection was accepted over this process's capacity)."""
        app = None if key is None else self.state.apps_by_key.get(key)
        if app is None and key is not None and self.state.missed_key is not None:
            self.state.missed_key(key)  # never awaited: this answer is 4001 either way
        refused: PusherError | None
        if over_capacity:
            refused = OverCapacity()
        else:
            connections = 0
            if app is not None and app.config.max_connections:
                connections = len(app.clients) + app.adapter.connections_elsewhere(app.id)
            refused = handshake(
                key, path, query, origin, None if app is None else app.config, connections
            )
        if refused is not None:
            if log.isEnabledFor(logging.DEBUG):
                log.debug(
                    "handshake refused with %s (%s): %s",
                    refused.code,
                    type(refused).__name__,
                    refused.message,
                )
            self.report(refused)
            return
        assert app is not None
        settings = self.state.settings
        socket_id = new_socket_id(app.clients)
        established = self.session.open(
            socket_id,
            settings.activity_timeout,
            time.monotonic(),
            app.config.authorized_connections_timeout,
        )
        self.socket_id = socket_id
        self.app = app
        self.log = socket_log(log, socket_id)
        app.connected(self)
        if self.log is not None:
            self.log.debug("handshake accepted: app %s, path %s", app.id, path[:200])
        self.send_message(established)
        if app.history is not None:  # the resume snippet's token (docs/history.md)
            self.send_message(app.history.new_connection(self.session))

    # --- asyncio.Protocol ------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        session = self.session
        session.heard = self.state.tick  # activity, counted at the next sweep tick
        app = self.app
        if app is not None:
            app.stats.socket_received_bytes += len(data)
        if self.pinged:  # never with history: those sessions are visited at every tick
            self.pinged = False
            self.state.answered(self)
            if self.reader.lone_empty_pong(data):
                return  # the keepalive's answer: activity is all it means
        try:
            messages = self.reader.feed(data)
        except WebSocketError as exc:
            self.close(exc.close_code, exc.reason)
            return
        for opcode, payload in messages:
            if self.closing:
                return
            if opcode == OP_TEXT:
                self._message(payload)
            elif opcode == OP_PING:
                self.send(encode_frame(OP_PONG, payload))
            elif opcode == OP_CLOSE:
                code, _ = parse_close(payload)
                if code is not None and not close_code_allowed(code):
                    self.close(CLOSE_PROTOCOL_ERROR, "Invalid close code")
                else:
                    self.close(code if code is not None and code < 4000 else CLOSE_NORMAL)
            elif opcode == OP_BINARY:
                self.report(BadMessage("Binary frames are not supported; send JSON text frames"))
            elif opcode == OP_PONG and session.history is not None:
                # confirms what history delivered (and refreshes it in Redis, for a node
                # that dies without seeing the connection close)
                history = app.history if app is not None else None
                if session.history.ponged(payload) and history is not None:
                    history.confirmed(session)
            # other OP_PONG: activity is all it means

    def eof_received(self) -> bool | None:
        return None  # close the transport

    # --- writing ---------------------------------------------------------------------------

    def send_message(self, payload: bytes) -> None:
        """Queue one message for this client alone (broadcasts go through the registry)."""
        frame = text_frame(payload)
        app = self.app
        if app is not None:
            app.stats.ws_messages_sent_total += 1
            app.stats.socket_transmitted_bytes += len(frame)
        self.send(frame)

    def slow_consumer(self) -> None:
        slow = SlowConsumer()
        log.info("socket %s: %s", self.socket_id, slow.message)
        self.close(slow.code or CLOSE_NORMAL, slow.message)

    def report(self, error: PusherError) -> None:
        """Tell the client about `error`; close the connection when the error closes."""
        if self.closing:
            return
        if self.log is not None:
            code = "-" if error.code is None else error.code
            self.log.debug("error %s (%s): %s", code, type(error).__name__, error.message)
        for message in frames.for_error(error):
            self.send_message(message)
        if error.closes:
            self.close(error.code or CLOSE_NORMAL, error.message)

    def close(self, code: int, reason: str = "") -> None:
        """Send a close frame after anything pending, then end the connection.

        A peer that does not read would keep the unsent bytes (and this connection) alive
        forever, so whatever is still unsent after `CLOSE_FLUSH_SECONDS` is dropped.
        """
        if self.closing:
            return
        self.flush()
        if self.closing:  # the flush found a slow consumer and closed with 4100 itself
            return
        self.closing = True
        self.session.close()
        if self.log is not None:
            self.log.debug("closing with %s%s", code, f" ({reason})" if reason else "")
        transport = self.transport
        transport.write(close_frame(code, reason))
        transport.close()
        if transport.get_write_buffer_size():
            asyncio.get_running_loop().call_later(CLOSE_FLUSH_SECONDS, _drop, transport)

    def abort(self) -> None:
        self.transport.abort()

    # --- activity (driven by the server's sweep) -------------------------------------------

    def tick(self, ping_after: int, close_after: int, now: float, at: int) -> int | None:
        """Sweep tick number `at`: ping or close as the session says. Returns the next tick
        at which this connection needs a visit, or None once it is closing."""
        if self.closing:
            return None
        session = self.session
        outcome = session.tick(ping_after, close_after, now, at)
        if outcome is Tick.PING:
            history, app = session.history, self.app
            if history is not None and history.marks and app is not None:
                self.send(encode_frame(OP_PING, history.start_probe(app.latest)))
            elif self.out is None and not self.paused:
                self.transport.write(WS_PING)  # nothing to cork it with: the sweep's tick
            else:
                self.send(WS_PING)
            after = session.next_tick(ping_after, close_after, at)
            self.pinged = after > at + 1
            return after
        if isinstance(outcome, PusherError):
            self.report(outcome)
            if self.closing:
                return None
        return session.next_tick(ping_after, close_after, at)

    # --- messages, in order ----------------------------------------------------------------

    def _message(self, payload: bytes) -> None:
        try:
            command = self.session.receive(payload)
        except PusherError as exc:
            self._count_received()
            self.report(exc)
            return
        if command is not None:
            app = self.app
            assert app is not None
            app.stats.ws_messages_received_total += 1
            self._dispatch(command)

    def _count_received(self) -> None:
        app = self.app
        assert app is not None
        app.stats.ws_messages_received_total += 1

    def _held_message(self, payload: bytes) -> None:
        self._count_received()
        try:
            command = self.session.parse(payload)
        except PusherError as exc:
            self.report(exc)
            return
        self._dispatch(command)

    def _dispatch(self, command: Command) -> None:
        app = self.app
        assert app is not None
        try:
            match command:
                case ClientEvent():
                    result = app.client_event(self, command)
                case Ping():
                    self.send(PONG_MESSAGE)
                    return
                case Subscribe():
                    if self.log is not None:
                        self.log.debug("subscribe %s", command.channel[:200])
                    result = app.subscribe(self, command)
                case Signin():
                    result = app.signin(self, command)
                case Unsubscribe():
                    result = app.unsubscribe(self, command)
                case Resume():
                    result = app.resume(self, command)
                case Pong():
                    return
        except PusherError as exc:
            self.report(exc)
            return
        except Exception:  # a bug must cost one message, never the connection or the process
            log.exception("message from socket %s failed", self.socket_id)
            self.report(BadMessage("Internal error while handling this message"))
            return
        if result is not None:
            self._run(result)

    def _run(self, work: Coroutine[Any, Any, None]) -> None:
        """Run a handler's coroutine; hold this client's next messages until it is done."""
        synchronous = self.state.adapter.completes_synchronously
        if not tasks.run(work, synchronous, self._handler_failed, self._handler_done):
            self.session.handler_started()

    def _handler_failed(self, exc: BaseException) -> None:
        if isinstance(exc, PusherError):
            self.report(exc)
        else:
            log.error("handler failed for socket %s", self.socket_id, exc_info=exc)

    def _handler_done(self) -> None:
        session = self.session
        session.handler_finished()
        if session.state is State.CLOSED:  # the connection closed meanwhile
            session.backlog = None
            if self.app is not None:
                self._leave_app()
            return
        while not self.closing:
            item = session.next_held()
            if item is None:
                return
            if isinstance(item, bytes):
                self._held_message(item)
            else:
                self._run_action(item)  # type: ignore[arg-type]

    def run_when_idle(self, action: Action) -> None:
        """Run `action` as this client's next message would run (see `Client`)."""
        session = self.session
        if session.must_wait():
            session.hold(action)
            return
        if self.closing:
            return
        self._run_action(action)

    def _run_action(self, action: Action) -> None:
        work = action()
        if work is not None:
            self._run(work)

    def _leave_app(self) -> None:
        app = self.app
        assert app is not None
        leaving = app.disconnected(self)
        self.app = None
        if leaving is not None:
            synchronous = self.state.adapter.completes_synchronously
            tasks.run(leaving, synchronous, self._handler_failed)


def _drop(transport: asyncio.Transport) -> None:
    """Abort a transport whose peer never read its last bytes (no-op once it is gone)."""
    with contextlib.suppress(Exception):
        transport.abort()
