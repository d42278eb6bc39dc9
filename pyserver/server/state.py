"""What a connection may see of the server: a narrow, explicit `ServerState`.

Protocol objects (`server.http_connection`, `server.websocket_connection`) get this instead
of the `Server`, as uvicorn's protocols get its 4-field `ServerState`: the settings they
read, the app lookup, the API handler, the write batcher and the shared deflater, the
adapter's execution mode and the two connection sets the server sweeps and drains.

Invariants:
- Nothing here refers back to the `Server`; `server.server` builds one `ServerState` and
  owns its lifecycle.
- A TCP connection is in exactly one of `http_connections` and `websocket_connections`
  from `accepted` to `http_lost` or `websocket_lost`; `upgraded` moves it from the first
  to the second. These methods are the whole accept path: per-connection accounting
  (limits, admission) goes there, counted once per TCP connection, not per protocol object.
- `admission` counts every TCP connection from `accepted` to its `*_lost`; one accepted over
  capacity is in `over_capacity` (keyed by its HTTP object) until it upgrades, where it is
  told 4100, or it is lost or closed by the server's sweep.

The WebSocket sweep is a timing wheel: `tick` numbers the sweeps (the next one), and `due`
maps a tick number to the WebSocket connections to visit at it. Only those are visited
(`sweep`); each visit answers the next tick the connection needs (`PusherSession.next_tick`:
its ping or close, or every tick for a sign-in deadline or history probes), so an idle
connection costs one visit per ping interval instead of one per tick: a connection pinged
waits in the bucket of its close, and its client's answer moves it to the bucket of its next
ping (`answered`), so the close's visit only happens when no pong came.

- Every open WebSocket connection is in exactly one bucket of `due`, at a tick not yet
  swept; a new one at the next tick, like a per-tick sweep would first visit it.
- A lost connection leaves its bucket at once (`websocket_lost`, through the connection's
  `bucket`): a closed connection is not kept alive by the wheel, however much churn.
- When the tick counts of a ping or a close change (`revisit_all`), every connection is
  due at the next tick and reschedules from there.
- `answered` only ever moves a connection to a later tick, the one `next_tick` would name
  for a client heard at the next tick (`ping_after` ticks on), so it skips visits at which
  nothing could happen.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Container, Coroutine, Mapping
from typing import Any, Protocol

from pyserver.channels.app import App
from pyserver.cluster.adapter import Adapter
from pyserver.config import Settings
from pyserver.http import Request, Response, StreamingResponse
from pyserver.protocol.errors import PusherError
from pyserver.protocol.websocket import Deflater
from pyserver.server.capacity import Admission
from pyserver.server.flow import WriteBatcher
from pyserver.server.listener import Acceptor

log = logging.getLogger("pyserver")

OVER_CAPACITY_LOG_EVERY = 60.0
"""Seconds between two warnings that connections are refused over capacity."""

ApiHandler = Callable[[Request], Response | StreamingResponse | Coroutine[Any, Any, Response]]


class OpenHttp(Protocol):
    """What the server's sweep and shutdown need of an HTTP connection."""

    def http_tick(self, close_after: int) -> None: ...

    def close_idle(self) -> None: ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class OpenWebSocket(Protocol):
    """What the server's sweep and shutdown need of a WebSocket connection."""

    bucket: dict[OpenWebSocket, None] | None
    """The sweep's bucket it waits in (`ServerState.due`), None while being visited."""

    @property
    def app(self) -> App | None: ...

    def tick(self, ping_after: int, close_after: int, now: float, at: int) -> int | None: ...

    def report(self, error: PusherError) -> None: ...

    def abort(self) -> None: ...


class ServerState:
    __slots__ = (
        "_over_capacity_logged",
        "acceptor",
        "adapter",
        "admission",
        "apps_by_key",
        "batcher",
        "deflater",
        "draining",
        "due",
        "handle_api",
        "hint_tls",
        "http_connections",
        "missed_key",
        "over_capacity",
        "ping_after",
        "settings",
        "tick",
        "websocket_connections",
    )

    def __init__(
        self,
        settings: Settings,
        apps_by_key: Mapping[str, App],
        handle_api: ApiHandler,
        adapter: Adapter,
        hint_tls: Callable[[], None],
    ) -> None:
        self.settings = settings
        self.apps_by_key = apps_by_key
        self.handle_api = handle_api
        self.adapter = adapter
        """Read for `completes_synchronously` (how handler coroutines run) and for the
        connections other nodes hold (the `max_connections` check)."""
        self.missed_key: Callable[[str], None] | None = None
        """Told a handshake's unknown app key (the app store looks it up in the background)."""
        self.hint_tls = hint_tls
        """Called when a client speaks TLS to this plain port (rate-limited by the server)."""
        self.batcher: WriteBatcher
        """Assigned when the server starts (it needs the running loop)."""
        self.deflater = Deflater()
        self.draining = False
        """The server is shutting down: answers close their connection."""
        self.http_connections: dict[OpenHttp, None] = {}
        self.websocket_connections: dict[OpenWebSocket, None] = {}
        self.tick = 0
        """Number of the next sweep tick: a client's bytes count at it (`sweep`)."""
        self.ping_after = 0
        """Ticks of silence before a ping, as the server's sweep counts them (`answered`);
        0 until the server sets it, which only costs extra visits."""
        self.due: dict[int, dict[OpenWebSocket, None]] = {}
        """Sweep tick number → the WebSocket connections to visit at it (each connection's
        `bucket` is the one it is in, so a lost one leaves it at once)."""
        self.admission = Admission(capacity=1 << 30, overflow=0)
        """Replaced by the descriptor budget when the server starts (see `server.capacity`)."""
        self.acceptor: Acceptor | None = None
        """The server's own accept loop (`server.listener`), when it listens on host:port."""
        self.over_capacity: dict[OpenHttp, float] = {}
        """Connections accepted beyond capacity, with when: told 4100 at their upgrade."""
        self._over_capacity_logged = -math.inf

    # --- the accept path -------------------------------------------------------------------

    def accepted(self, connection: OpenHttp) -> None:
        """A TCP connection was accepted (it starts as HTTP)."""
        self.http_connections[connection] = None
        if self.acceptor is not None:
            self.acceptor.made()
        if not self.admission.opened():
            now = time.monotonic()
            self.over_capacity[connection] = now
            if now - self._over_capacity_logged > OVER_CAPACITY_LOG_EVERY:
                self._over_capacity_logged = now
                log.warning(
                    "at capacity (%d connections, see the descriptors line at start-up): "
                    "extra connections are told 4100 (over capacity) and closed",
                    self.admission.capacity,
                )

    def upgraded(self, http: OpenHttp, websocket: OpenWebSocket) -> None:
        """The same TCP connection now speaks WebSocket: `websocket` owns the transport.
        Not a close: the connection stays counted (an over-capacity one is told 4100 by the
        WebSocket, which the HTTP object checked before, and closes)."""
        self.http_connections.pop(http, None)
        self.over_capacity.pop(http, None)
        self.websocket_connections[websocket] = None
        self._visit(websocket, self.tick)

    def http_lost(self, connection: OpenHttp) -> None:
        """A TCP connection that still spoke HTTP is gone."""
        if connection not in self.http_connections:
            return
        del self.http_connections[connection]
        self.over_capacity.pop(connection, None)
        self._closed()

    def websocket_lost(self, connection: OpenWebSocket) -> None:
        """A TCP connection that had upgraded to WebSocket is gone."""
        if connection not in self.websocket_connections:
            return
        del self.websocket_connections[connection]
        bucket = connection.bucket
        if bucket is not None:  # out of the sweep's wheel now, not at its next visit
            bucket.pop(connection, None)
            connection.bucket = None
        self._closed()

    # --- the WebSocket sweep -----------------------------------------------------------------

    def sweep(self, ping_after: int, close_after: int, now: float) -> None:
        """One sweep tick: visit the WebSocket connections due at it, each rescheduled at
        the next tick it needs (closing ones are dropped)."""
        at = self.tick
        self.tick = at + 1
        bucket = self.due.pop(at, None)
        while bucket:  # one lost meanwhile leaves `bucket` (`websocket_lost`): not visited
            websocket, _ = bucket.popitem()
            websocket.bucket = None
            try:
                after = websocket.tick(ping_after, close_after, now, at)
            except Exception:  # a bug must not drop it (or the rest of its bucket) for good
                log.exception("the sweep failed on a WebSocket connection")
                after = at + 1
            if after is not None and websocket in self.websocket_connections:
                self._visit(websocket, after)

    def answered(self, websocket: OpenWebSocket) -> None:
        """`websocket`'s client spoke after a ping (usually the pong): its next visit is
        its next ping, `ping_after` ticks after the next tick, no longer its pong deadline."""
        bucket = websocket.bucket
        if bucket is None:  # being visited, or no longer swept
            return
        del bucket[websocket]
        self._visit(websocket, self.tick + self.ping_after)

    def revisit_all(self, ping_after: int) -> None:
        """The tick counts of a ping or a close changed: every WebSocket connection is
        visited at the next tick and reschedules from there."""
        self.ping_after = ping_after
        due, self.due = self.due, {}
        for bucket in due.values():
            for websocket in bucket:
                self._visit(websocket, self.tick)

    def _visit(self, websocket: OpenWebSocket, at: int) -> None:
        bucket = self.due.get(at)
        if bucket is None:
            bucket = self.due[at] = {}
        bucket[websocket] = None
        websocket.bucket = bucket

    def _closed(self) -> None:
        self.admission.closed()
        if self.acceptor is not None:
            self.acceptor.connection_closed()


def new_socket_id(taken: Container[str]) -> str:
    """A fresh socket id (`^\\d+\\.\\d+$`) that is not in `taken`."""
    while True:
        socket_id = f"{random.randrange(10**9)}.{random.randrange(10**9)}"
        if socket_id not in taken:
            return socket_id
