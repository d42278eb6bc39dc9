"""One Pusher connection as pure state: the handshake checks, who it is, what it joined,
whether it is alive, and the order its messages are handled in.

This is the sans-I/O half of a WebSocket connection (in the mould of websockets' `Protocol`
and h11's `_state.py`). The asyncio half (`pyserver.server.websocket_connection`) moves
bytes: it feeds the session the messages it read and writes what the session and the app
answer. Nothing
here awaits, reads a clock (`now` is always passed in) or touches a socket, so every rule
below is unit-tested with plain function calls (`tests/unit/test_session.py`).

Theory of operation:

    CONNECTING --open()--> OPEN --close()--> CLOSING --lost()--> CLOSED
         |                                      ^
         +--- handshake refused (close) --------+

- `handshake()` checks a WebSocket upgrade before any Pusher message (`spec/protocol.md` §3):
  the path names an app key, the app exists and is enabled, the origin is allowed, the
  protocol version is 4 to 7 and the app is under its connection quota. It returns the error
  to close with, or None; `open()` then takes the socket id and moves to OPEN.
- Subscriptions: `channels` maps each channel the client asked for to the presence user id
  it joins as (None for other channels), from the subscribe until the leave. A channel is
  *pending* (in `pending`) until the cluster counted it and `subscription_succeeded` went out;
  only then is the client in the app's fan-out registry.
- Ordering: messages are handled one at a time, in the order they arrived. When a handler
  goes on asynchronously (`handler_started`), later messages and queued actions (a kick) are
  held in `backlog` and come back out of `next_held()`, in order, once `handler_finished()`.
- Activity, counted in sweep ticks (numbered by the server; no clock): any bytes from the
  client set `heard` to the number of the next tick, and the client is idle for
  `at - heard` ticks at tick `at`. The sweep calls `tick(…, at)`, which answers what the
  transport should do at that tick: nothing, ping (idle exactly `ping_after` ticks), or
  close (4201, idle `close_after` ticks or more), and enforces the sign-in deadline of
  authorized connections (4009). A connection of an app with history (`history`, a
  `ConnectionHistory`) is pinged every `ping_after` ticks even while active, so that the
  pongs keep confirming what its history subscriptions received.
- Lazy visits: `next_tick(…, at)` is the first tick after `at` at which `tick` can do
  anything, so the sweep may skip the ticks between. Bytes from the client only ever
  postpone a ping or a close, so skipping is safe whatever the client sends meanwhile:
  a silent client is due at its ping (`heard + ping_after`), a pinged one at the earlier of
  its close and the first tick a ping could follow an immediate pong
  (`at + 1 + ping_after`). A session with a sign-in deadline (on the clock) or with
  `history` (whose probes and `resume_failed` count every tick) is due at every tick.

Invariants:
- `state` only moves forward; once CLOSING no message is handed out any more.
- `pending` is a subset of `channels`; `pending` is None when empty (no set per idle client).
- `backlog` is None when nothing is held (no deque per idle client); held items keep arrival
  order and nothing held is handed out while `busy`.
- `auth_deadline` is 0.0 when the connection need not (or no longer needs to) authorize.
- `auth_deadline` and `history` are only ever set by `open` and right after it, before the
  first tick (the server visits a new connection at the next tick): a session never needs
  per-tick visits after `next_tick` said it does not.
- `tick` gives the same answer at tick `at` whether or not it was called at the ticks
  before, as long as `next_tick` said nothing could happen there.
- Slotted: about 200 bytes per idle connection with its empty `channels` dict.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from typing import Protocol

from pyserver.auth.origins import origin_allowed
from pyserver.protocol import frames
from pyserver.protocol.commands import Command, parse_command
from pyserver.protocol.errors import (
    AppDisabled,
    AppNotFound,
    ConnectionUnauthorized,
    InvalidVersionFormat,
    NoProtocolVersion,
    OriginNotAllowed,
    OverConnectionQuota,
    PathNotFound,
    PongNotReceived,
    PusherError,
    UnsupportedProtocol,
)
from pyserver.protocol.history import ConnectionHistory
from pyserver.protocol.members import SignedInUser
from pyserver.ratelimit import TokenBucket

SUPPORTED_PROTOCOLS = range(4, 8)
"""Pusher protocol versions served (§3): 4 to 7."""


class State(enum.IntEnum):
    """Where a Pusher connection is; it only moves forward."""

    CONNECTING = 0
    """Upgraded to WebSocket; the Pusher handshake is not accepted yet."""
    OPEN = 1
    """`connection_established` went out; messages are handled."""
    CLOSING = 2
    """A close is decided (or sent); nothing more is handled."""
    CLOSED = 3
    """The transport is gone; only the leave of what it joined remains."""


_OPEN = State.OPEN  # a module constant: cheaper than the enum attribute on the hot path


class Tick(enum.IntEnum):
    """What the transport must do after a sweep tick."""

    NOTHING = 0
    PING = 1
    """Send a WebSocket ping: the client was silent for `ping_after` ticks."""


class AppPolicy(Protocol):
    """What the handshake needs to know of an app (an `AppConfig` satisfies it)."""

    @property
    def enabled(self) -> bool: ...

    @property
    def allowed_origins(self) -> tuple[str, ...]: ...

    @property
    def max_connections(self) -> int: ...


def handshake(
    key: str | None,
    path: str,
    query: Mapping[str, str],
    origin: str | None,
    app: AppPolicy | None,
    connections: int,
) -> PusherError | None:
    """The error a WebSocket upgrade is refused with (the connection then closes with its
    code), or None when the Pusher session may open.

    Args:
        key: the app key from the path `/app/{key}`; None for any other path.
        path: the path as sent (quoted in the 4005 message).
        query: the upgrade's query parameters (`protocol`).
        origin: the `Origin` header, if any.
        app: the app with that key, None when there is none.
        connections: the app's open connections, cluster-wide (for `max_connections`).
    """
    if key is None:
        return PathNotFound(f"No WebSocket endpoint at {path[:200]}; use /app/{{key}}")
    if app is None:
        return AppNotFound(f"Application with key '{key[:100]}' does not exist")
    if not app.enabled:
        return AppDisabled()
    if not origin_allowed(origin, app.allowed_origins):
        return OriginNotAllowed(f"Origin {str(origin)[:200]!r} is not allowed for this app")
    protocol = query.get("protocol")
    if protocol is None:
        return NoProtocolVersion()
    if not (protocol.isascii() and protocol.isdigit() and len(protocol) <= 3):
        return InvalidVersionFormat(f"Invalid protocol version '{protocol[:20]}'")
    if int(protocol) not in SUPPORTED_PROTOCOLS:
        return UnsupportedProtocol(
            f"Unsupported protocol version {protocol[:20]}; supported: 4 to 7"
        )
    limit = app.max_connections
    if limit and connections >= limit:
        return OverConnectionQuota()
    return None


class PusherSession:
    """The protocol state of one Pusher connection (see the module docstring).

    Calling contract: the transport calls `receive` for each text message and handles the
    command it returns; when that handling goes on asynchronously it calls
    `handler_started`, and `handler_finished` when it is done, then drains `next_held()`.
    """

    __slots__ = (
        "auth_deadline",
        "backlog",
        "busy",
        "channels",
        "client_events",
        "heard",
        "history",
        "pending",
        "socket_id",
        "state",
        "user",
        "visited",
    )

    def __init__(self, tick: int = 0) -> None:
        self.state = State.CONNECTING
        self.socket_id = ""
        self.channels: dict[str, str | None] = {}
        """channel → presence user id joined as (None for other kinds), pending or joined."""
        self.pending: set[str] | None = None
        """Channels subscribed but not yet counted by the cluster (None when none)."""
        self.user: SignedInUser | None = None
        self.auth_deadline = 0.0
        """Monotonic time by which the connection must sign in or join a private or presence
        channel (authorized connections, §8.6); 0 when it need not or already did."""
        self.heard = tick
        """Number of the sweep tick at which the client's latest bytes count (the next tick
        when they arrive; the transport stores it, one store per read); `tick` when created,
        the number of the next tick then."""
        self.visited = -1
        """Number of the last tick `tick` was called at; -1 before the first."""
        self.busy = False
        """A handler of this client is still running (asynchronously)."""
        self.backlog: deque[object] | None = None
        """Messages (bytes) and actions held while busy, in arrival order."""
        self.client_events: TokenBucket | None = None
        """Created on the first client event only, so idle connections carry none."""
        self.history: ConnectionHistory | None = None
        """Recovery marks, ping probe and resume token; only on apps with history rules."""

    # --- handshake -------------------------------------------------------------------------

    def open(self, socket_id: str, activity_timeout: int, now: float, auth_timeout: float) -> bytes:
        """Accept the handshake: CONNECTING → OPEN. Returns `connection_established`."""
        assert self.state is State.CONNECTING, self.state
        self.state = State.OPEN
        self.socket_id = socket_id
        if auth_timeout:
            self.auth_deadline = now + auth_timeout
        return frames.connection_established(socket_id, activity_timeout)

    def close(self) -> None:
        """A close is decided: nothing more is handed out."""
        if self.state < State.CLOSING:
            self.state = State.CLOSING

    def lost(self) -> None:
        """The transport is gone."""
        self.state = State.CLOSED

    # --- messages and their order ----------------------------------------------------------

    def receive(self, payload: bytes) -> Command | None:
        """A text message arrived: the command to handle now, or None when it is held (a
        handler is running, or messages wait before it) or the session is closing.

        Raises:
            PusherError: the message is no valid Pusher command (`BadMessage`).
        """
        if self.busy or self.backlog is not None:
            self.hold(payload)
            return None
        if self.state is not _OPEN:
            return None
        return parse_command(payload)

    def hold(self, item: object) -> None:
        """Queue a message or an action behind the ones held already."""
        if self.backlog is None:
            self.backlog = deque()
        self.backlog.append(item)

    def must_wait(self) -> bool:
        """Whether an action must be held (a handler runs or messages wait)."""
        return self.busy or self.backlog is not None

    def handler_started(self) -> None:
        """The message just handled goes on asynchronously: hold what comes next."""
        self.busy = True

    def handler_finished(self) -> None:
        self.busy = False

    def next_held(self) -> object | None:
        """The next held message (bytes) or action to handle now, or None: nothing is held,
        a handler is running, or the session is no longer OPEN."""
        backlog = self.backlog
        if backlog is None or self.busy or self.state is not _OPEN:
            return None
        item = backlog.popleft()
        if not backlog:
            self.backlog = None
        return item

    @staticmethod
    def parse(payload: bytes) -> Command:
        """Parse a held message (see `receive`)."""
        return parse_command(payload)

    # --- subscriptions and the user --------------------------------------------------------

    def subscribing(self, channel: str, user_id: str | None) -> None:
        """A subscribe passed its checks: the channel is pending until `joined`."""
        self.channels[channel] = user_id
        if self.pending is None:
            self.pending = {channel}
        else:
            self.pending.add(channel)

    def joined(self, channel: str) -> None:
        """The cluster counted the subscription; `subscription_succeeded` goes out."""
        pending = self.pending
        if pending is not None:
            pending.discard(channel)
            if not pending:
                self.pending = None

    def is_pending(self, channel: str) -> bool:
        return self.pending is not None and channel in self.pending

    def leave(self, channel: str) -> str | None:
        """Forget a subscription (pending or joined); returns the presence user id."""
        if self.pending is not None:
            self.joined(channel)
        if self.history is not None:
            self.history.untrack(channel)
        return self.channels.pop(channel)

    def signed_in(self, user: SignedInUser) -> None:
        self.user = user
        self.auth_deadline = 0.0

    def authorized(self) -> None:
        """It joined a private or presence channel: the sign-in deadline no longer applies."""
        self.auth_deadline = 0.0

    def member_of(self, channel: str, user_id: str | None) -> bool:
        """Whether this client is in `channel` as `user_id`: its presence member id there,
        else the user it signed in as."""
        if channel not in self.channels:
            return False
        member = self.channels[channel]
        if member is not None:
            return member == user_id
        return self.user is not None and self.user.user_id == user_id

    # --- client events ---------------------------------------------------------------------

    def take_client_event_token(self, per_second: int, now: float) -> bool:
        """Spend one of the client's client-event allowance; False when over the limit."""
        if per_second <= 0:
            return True
        bucket = self.client_events
        if bucket is None or bucket.rate != per_second:
            bucket = self.client_events = TokenBucket(per_second, now)
        return bucket.take(1.0, now)

    # --- activity --------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        """Bytes arrived since the last tick (the first tick counts the handshake's)."""
        return self.heard > self.visited

    def tick(self, ping_after: int, close_after: int, now: float, at: int) -> Tick | PusherError:
        """Sweep tick number `at`: what the transport must do (send a ping, or report the
        closing error). Ticks are numbered upwards by the server, one per sweep."""
        self.visited = at
        if self.auth_deadline and now > self.auth_deadline:
            return ConnectionUnauthorized()
        history = self.history
        if history is not None and history.resume_failed:
            history.resume_failed -= 1  # it applies to the re-subscribes that follow it
        idle = at - self.heard
        if idle == ping_after:
            return Tick.PING
        if idle >= close_after:
            return PongNotReceived()
        return self._probe_due(ping_after)

    def next_tick(self, ping_after: int, close_after: int, at: int) -> int:
        """After the tick at `at`: the first later tick at which `tick` may answer anything
        but `Tick.NOTHING`, whatever the client sends meanwhile (see the module docstring)."""
        if self.auth_deadline or self.history is not None:
            return at + 1  # a deadline on the clock; probes and resume_failed count ticks
        heard = self.heard
        idle = at - heard
        if idle < ping_after:
            return heard + ping_after  # its ping; bytes before it only postpone it
        if idle < close_after:
            # Pinged: its close, unless a pong right after this tick brings the next ping
            # before it (possible when the pong timeout is longer than the activity timeout).
            return min(heard + close_after, at + 1 + ping_after)
        return at + 1  # past its close (the transport is closing it)

    def _probe_due(self, ping_after: int) -> Tick:
        """A history connection is also pinged every `ping_after` ticks while it is active:
        the pong confirms what it received (`ConnectionHistory`)."""
        history = self.history
        if history is not None and history.probe_due(ping_after):
            return Tick.PING
        return Tick.NOTHING
