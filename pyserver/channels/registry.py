"""Node-local channel state of one app: which local connections are subscribed where.

This is the fan-out table of the hot path. A broadcast arrives as one already-built
WebSocket frame (`bytes`) and is written to every local subscriber; nothing is parsed or
encoded per recipient.

Invariants:
- A channel exists here only while it has at least one local subscriber.
- `subscribers` keeps subscription order (a dict used as an ordered set).
- Cluster-wide facts (counts on other nodes, presence members) are not kept here; they go
  through the Adapter (`pyserver.cluster`).
- A frame whose first byte is 0 is an event of a history channel tagged with its position
  (`pyserver.history.live`): the tag is stripped and the position becomes the channel's
  `last` before the subscribers get the plain frame.
- While a subscription of a channel waits for its history replay (the channel is a key of
  `held`), every frame broadcast to the channel is also appended to its hold list, with its
  position when it has one, so the replay can send what it did not contain.
- A subscriber with a floor on a channel (`floors`) gets none of its history events up to
  that position (its replay from Redis had them, they were still on the bus); only channels
  with floors pay for the per-subscriber check.
"""

from __future__ import annotations

from typing import Protocol

from pyserver.protocol.history import Position, untag
from pyserver.protocol.names import ChannelType, channel_type
from pyserver.stats import AppStats


class Socket(Protocol):
    """What a channel needs of a connection."""

    socket_id: str

    def send(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame for this connection."""


class LocalChannel:
    __slots__ = ("last", "name", "subscribers", "type")

    def __init__(self, name: str) -> None:
        self.name = name
        self.type: ChannelType = channel_type(name)
        self.subscribers: dict[Socket, None] = {}
        self.last: Position | None = None
        """History channels: the position of the newest event written to the subscribers."""


Held = dict[str, list[tuple[Position | None, bytes, str | None]]]
"""channel → (position or None, frame, except_socket_id) of each frame broadcast to it while
a subscription waits for its replay."""


class ChannelRegistry:
    """The local channels of one app."""

    __slots__ = ("channels", "floors", "held", "stats")

    def __init__(self, stats: AppStats | None = None) -> None:
        self.channels: dict[str, LocalChannel] = {}
        self.stats = stats or AppStats()
        self.held: Held | None = None
        """The app's hold lists (`AppHistory.holds`), None for apps without history."""
        self.floors: dict[str, dict[Socket, Position]] = {}
        """channel → subscribers that must not get history events up to a position: their
        replay (from Redis) contained events that may still be on the bus to this node. A
        subscriber's floor goes once a later event passed (the bus keeps position order)."""

    def add(self, name: str, socket: Socket) -> bool:
        """Subscribe `socket`; True when it was not subscribed yet."""
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = LocalChannel(name)
        if socket in channel.subscribers:
            return False
        channel.subscribers[socket] = None
        return True

    def remove(self, name: str, socket: Socket) -> bool:
        """Unsubscribe `socket`; True when it was subscribed."""
        channel = self.channels.get(name)
        if channel is None or socket not in channel.subscribers:
            return False
        del channel.subscribers[socket]
        floors = self.floors.get(name)
        if floors is not None:
            floors.pop(socket, None)
            if not floors:
                del self.floors[name]
        if not channel.subscribers:
            del self.channels[name]
        return True

    def count(self, name: str) -> int:
        channel = self.channels.get(name)
        return len(channel.subscribers) if channel is not None else 0

    def subscribers(self, name: str) -> list[Socket]:
        channel = self.channels.get(name)
        return list(channel.subscribers) if channel is not None else []

    def broadcast(self, name: str, frame: bytes, except_socket_id: str | None = None) -> int:
        """Write `frame` to every local subscriber of `name` but the excluded one (a tagged
        frame of a history channel without its tag; see the module docstring).

        Returns how many connections were written to.
        """
        if not frame[0] or self.held:  # a history event, or a replay is pending somewhere
            return self._history_broadcast(name, frame, except_socket_id)
        channel = self.channels.get(name)
        if channel is None:
            return 0
        return self._fanout(channel, frame, except_socket_id)

    def _history_broadcast(self, name: str, frame: bytes, except_socket_id: str | None) -> int:
        position = None
        if not frame[0]:
            position, frame = untag(frame)
        held = self.held
        if held and name in held:
            held[name].append((position, frame, except_socket_id))
        channel = self.channels.get(name)
        if channel is None:
            return 0
        if position is not None:
            channel.last = position
            if self.floors and name in self.floors:
                return self._above_floors(channel, position, frame, except_socket_id)
        return self._fanout(channel, frame, except_socket_id)

    def _fanout(self, channel: LocalChannel, frame: bytes, except_socket_id: str | None) -> int:
        """Send `frame` to the channel's subscribers but one, and count it (every broadcast)."""
        subscribers = channel.subscribers
        if except_socket_id is None:
            for socket in subscribers:
                socket.send(frame)
            sent = len(subscribers)
        else:
            sent = 0
            for socket in subscribers:
                if socket.socket_id != except_socket_id:
                    socket.send(frame)
                    sent += 1
        stats = self.stats
        stats.ws_messages_sent_total += sent
        stats.socket_transmitted_bytes += sent * len(frame)
        return sent

    def _above_floors(
        self, channel: LocalChannel, position: Position, frame: bytes, except_socket_id: str | None
    ) -> int:
        """A history event while some subscribers have a floor (see `floors`)."""
        floors = self.floors[channel.name]
        sent = 0
        for socket in channel.subscribers:
            if socket.socket_id == except_socket_id:
                continue
            floor = floors.get(socket)
            if floor is not None and floor.epoch == position.epoch:
                if position.serial <= floor.serial:
                    continue  # it had it in its replay
                del floors[socket]
            socket.send(frame)
            sent += 1
        if not floors:
            del self.floors[channel.name]
        self.stats.ws_messages_sent_total += sent
        self.stats.socket_transmitted_bytes += sent * len(frame)
        return sent

    def last(self, name: str) -> Position | None:
        """The newest history position written to `name`'s local subscribers."""
        channel = self.channels.get(name)
        return channel.last if channel is not None else None
