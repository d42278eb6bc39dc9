"""The Redis engine of the cluster: Redis data structures and Lua scripts for the state,
Redis pub/sub for the bus.

One module per job:
- `connection.py`: `connect(settings)`, the package's way to a `RedisLink` (a single
  server, Sentinel or Cluster: `pyserver.cluster.redis_connect`), and `is_outage` (which
  failures mean "unreachable");
- `keys.py`: every key name (`RedisKeys`);
- `scripts.py`: the data model and the Lua scripts, each touching only its KEYS;
- `transport.py`: the bus over pub/sub, sharded on a cluster (the outbox writer and the
  listener);
- `state.py`: subscriptions, presence, users, cache channels and queries, with their local
  answers while Redis is away;
- `leaves.py`: the pending-leave markers and the journal of leaves a node's timers hold;
- `reaping.py`: the node's share (heartbeat records, reaping a dead node, the rebuild);
- `adapter.py`: `RedisAdapter`, which composes them with the engine-neutral parts.
"""

from pyserver.cluster.redis.adapter import RedisAdapter

__all__ = ["RedisAdapter"]
