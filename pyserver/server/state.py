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
"""

from __future__ import annotations

import random
from collections.abc import Callable, Container, Coroutine, Mapping
from typing import Any, Protocol

from pyserver.channels.app import App
from pyserver.cluster.adapter import Adapter
from pyserver.config import Settings
from pyserver.http import Request, Response, StreamingResponse
from pyserver.protocol.errors import PusherError
from pyserver.protocol.websocket import Deflater
from pyserver.server.flow import WriteBatcher

ApiHandler = Callable[[Request], Response | StreamingResponse | Coroutine[Any, Any, Response]]


class OpenHttp(Protocol):
    """What the server's sweep and shutdown need of an HTTP connection."""

    def http_tick(self, close_after: int) -> None: ...

    def close_idle(self) -> None: ...

    def abort(self) -> None: ...


class OpenWebSocket(Protocol):
    """What the server's sweep and shutdown need of a WebSocket connection."""

    @property
    def app(self) -> App | None: ...

    def tick(self, ping_after: int, close_after: int, now: float) -> None: ...

    def report(self, error: PusherError) -> None: ...

    def abort(self) -> None: ...


class ServerState:
    __slots__ = (
        "adapter",
        "apps_by_key",
        "batcher",
        "deflater",
        "draining",
        "handle_api",
        "hint_tls",
        "http_connections",
        "settings",
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
        self.hint_tls = hint_tls
        """Called when a client speaks TLS to this plain port (rate-limited by the server)."""
        self.batcher: WriteBatcher
        """Assigned when the server starts (it needs the running loop)."""
        self.deflater = Deflater()
        self.draining = False
        """The server is shutting down: answers close their connection."""
        self.http_connections: dict[OpenHttp, None] = {}
        self.websocket_connections: dict[OpenWebSocket, None] = {}

    # --- the accept path -------------------------------------------------------------------

    def accepted(self, connection: OpenHttp) -> None:
        """A TCP connection was accepted (it starts as HTTP)."""
        self.http_connections[connection] = None

    def upgraded(self, http: OpenHttp, websocket: OpenWebSocket) -> None:
        """The same TCP connection now speaks WebSocket: `websocket` owns the transport."""
        self.http_connections.pop(http, None)
        self.websocket_connections[websocket] = None

    def http_lost(self, connection: OpenHttp) -> None:
        """A TCP connection that still spoke HTTP is gone."""
        self.http_connections.pop(connection, None)

    def websocket_lost(self, connection: OpenWebSocket) -> None:
        """A TCP connection that had upgraded to WebSocket is gone."""
        self.websocket_connections.pop(connection, None)


def new_socket_id(taken: Container[str]) -> str:
    """A fresh socket id (`^\\d+\\.\\d+$`) that is not in `taken`."""
    while True:
        socket_id = f"{random.randrange(10**9)}.{random.randrange(10**9)}"
        if socket_id not in taken:
            return socket_id
