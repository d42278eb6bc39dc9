"""Every Redis key name of the cluster, in one place (the data model: `scripts.py`).

Invariants:
- Every key starts with the configured prefix, so several clusters can share one Redis.
- Every key of one app carries the hash tag `{app}`, and every key of one node the tag
  `{node}`: a script touches keys of one app (or of one node) only, so on Redis Cluster each
  script runs in one hash slot. (An app's keys therefore share one slot: a Redis Cluster
  spreads apps over its shards, not the channels of one app.)
- A key's name is a pure function of its arguments; nothing else in the package formats a
  key name, and Lua scripts receive every key they touch in KEYS (Redis Cluster needs to
  know them to route the call).
"""

from __future__ import annotations

from dataclasses import dataclass

from pyserver.cluster.leaves import LeaveKey


@dataclass(frozen=True, slots=True)
class RedisKeys:
    prefix: str

    # --- per app and channel -----------------------------------------------------------

    def subs(self, app: str, channel: str) -> str:
        """Hash: node id → that node's subscriptions to the channel."""
        return f"{self.prefix}:subs:{{{app}}}:{channel}"

    def channels(self, app: str) -> str:
        """Set: the app's occupied channels."""
        return f"{self.prefix}:channels:{{{app}}}"

    def pconns(self, app: str, channel: str) -> str:
        """Hash: `{node}|{socket}` → user id, per presence connection."""
        return f"{self.prefix}:pconns:{{{app}}}:{channel}"

    def pmembers(self, app: str, channel: str) -> str:
        """Hash: user id → `user_info` JSON (the first one kept)."""
        return f"{self.prefix}:pmembers:{{{app}}}:{channel}"

    def user(self, app: str, user: str) -> str:
        """Hash: `{node}|{socket}` → "1", per signed-in connection."""
        return f"{self.prefix}:users:{{{app}}}:{user}"

    def pending(self, key: LeaveKey) -> str:
        """String with a TTL: a pending leave (`pyserver.cluster.leaves`)."""
        kind, app, *rest = key.parts()
        return f"{self.prefix}:pending:{kind}:{{{app}}}:" + ":".join(rest)

    def cache(self, app: str, channel: str) -> str:
        """String with a TTL: a cache channel's last event."""
        return f"{self.prefix}:cache:{{{app}}}:{channel}"

    # --- per node ------------------------------------------------------------------------

    def nodes(self) -> str:
        """Set: every node of the cluster."""
        return f"{self.prefix}:nodes"

    def alive(self, node: str) -> str:
        """String with a TTL: the node's heartbeat."""
        return f"{self.prefix}:alive:{{{node}}}"

    def conns(self, node: str) -> str:
        """String with a TTL: the node's connections per app (JSON)."""
        return f"{self.prefix}:conns:{{{node}}}"

    def index(self, app: str, node: str) -> str:
        """Set: the app's keys the node has fields in, as JSON entries (for reaping)."""
        return f"{self.prefix}:index:{{{app}}}:{node}"

    def apps(self, node: str) -> str:
        """Set: the apps the node has an index for."""
        return f"{self.prefix}:apps:{{{node}}}"

    def leaving(self, node: str) -> str:
        """Sorted set: the leaves whose webhooks the node's debounce timers hold."""
        return f"{self.prefix}:leaving:{{{node}}}"

    def reaping(self, node: str) -> str:
        """String with a TTL: held by whoever is removing the node's state."""
        return f"{self.prefix}:reaping:{{{node}}}"

    def bus(self) -> bytes:
        """The pub/sub channel of the cluster bus on one server or behind Sentinel (on a
        Redis Cluster the bus is sharded: `RedisLink.bus_channels` names every channel)."""
        return f"{self.prefix}:bus".encode()


def field(node: str, socket_id: str) -> str:
    """A connection's field in `pconns` and `user` hashes."""
    return f"{node}|{socket_id}"
