"""Cluster-wide state behind one Adapter interface (`adapter.py`), with two drivers:
`local` (one process is the whole cluster) and `redis` (N nodes sharing a Redis).

The layer sits above protocol/auth/config and below channels: it never imports
`pyserver.channels`. What it needs of an app is the narrow `LocalFanout` (the app's
node-local fan-out table) and `AppPeer` (callbacks, and the node's own state for a rebuild),
both Protocols in `adapter.py`.

Engine-neutral parts, reused by every distributed engine:
- `bus.py`: the bus codec, typed messages (broadcast, terminate, kick, user announcements)
  to and from versioned bytes;
- `membership.py`: heartbeats, liveness, claiming and reaping dead nodes;
- `recovery.py`: outage detection, local answers meanwhile, and the rebuild that reads the
  node's state from its owners;
- `leaves.py`: the leave debounce ("a page reload sends nothing"), its key and timers.

Adding an engine (NATS, Redis Cluster's sharded pub/sub, ...): write its transport (carry
`bus.encode` bytes to every node and hand received bytes to `bus.decode`), its state store
(an atomic decision per transition; NATS has no scripts, so it needs a store beside it,
e.g. NATS KV with compare-and-set revisions), a `MembershipStore` (`membership.py`), a
`LeaveMarkers` (`leaves.py`) and a `rejoin` for `Recovery`; then an Adapter that composes
them, as `redis/adapter.py` does. Only the transport and the stores are engine code.
"""
