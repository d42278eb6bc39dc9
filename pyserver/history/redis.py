"""The Redis history store (redis adapter): every node reads and writes one order per channel.

Per (app, channel), two keys sharing the hash tag `{app:channel}`, so that every script
touches one hash slot (Redis Cluster):

- `<prefix>:history:{<app>:<channel>}:stream`, a Stream of the channel's events. Entry ids are
  `<stamp>-<serial>`: the store clock in ms (never decreasing per channel) and the event's
  serial (consecutive per epoch). Fields: `p` the payload, `t` the publish time (ms).
  Capped exactly at the rule's `limit` (`MAXLEN =`), trimmed of entries older than `ttl` on
  every append (`XTRIM MINID`), and expiring whole `ttl` after its last append.
- `<prefix>:history:{<app>:<channel>}:meta`, a hash: `e` the epoch, `n` the newest serial,
  `m` the newest stamp. It lives much longer than the events (`META_TTL`, refreshed on every
  append): it is what lets a returning subscriber learn whether anything was lost.

Invariants:
- Appends go through one Lua script (`APPEND`): it creates the epoch when the meta hash is
  missing (deleting any stream left without one: its positions belonged to a lost epoch),
  assigns the next serial, adds, trims, refreshes both expiries and returns the position. So
  positions are assigned by Redis, identical on every node, and an event is readable on every
  node when `append` returns. The server's appends also publish the live event from the same
  script, so the cluster bus carries a channel's events in position order.
- Reads go through one Lua script (`READ`) that returns the meta hash and the entries in one
  atomic view; it too creates the epoch when the meta hash is missing (with the short
  `ttl` of a channel that stored nothing), so a head read before any event still names the
  epoch that the first event will get.
- Whenever Redis loses the meta hash (restart without persistence, flush, eviction) the
  channel gets a new epoch: positions from before are answered `Loss.EPOCH` / 409, never
  mis-served. A stream that expired or was evicted while the meta survived leaves the serials
  in place, so gaps reaching into it are `Loss.TTL`.
- Entries older than `ttl` by the caller's clock are never returned, trimmed or not.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio import Redis

from pyserver.config import HistoryRule
from pyserver.history.live import Drop
from pyserver.history.store import (
    CatchUp,
    Direction,
    Entry,
    Head,
    Page,
    Replay,
    catch_up,
    check_position,
    page,
)
from pyserver.protocol.history import BadPosition, Position, decode_position, new_epoch

META_TTL_MS = 30 * 86_400 * 1000
"""How long a channel's epoch and newest serial outlive its last event (at least 2 x ttl)."""

APPEND = """
local meta, stream = KEYS[1], KEYS[2]
local now, limit, ttl = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local state = redis.call('HMGET', meta, 'e', 'n', 'm')
local epoch, serial, stamp = state[1], tonumber(state[2]), tonumber(state[3])
if not epoch then
  redis.call('DEL', stream)
  epoch, serial, stamp = ARGV[7], 0, 0
end
serial = serial + 1
if now > stamp then stamp = now end
redis.call('XADD', stream, 'MAXLEN', '=', limit, string.format('%d-%d', stamp, serial),
  'p', ARGV[1], 't', ARGV[2])
redis.call('XTRIM', stream, 'MINID', '=', string.format('%d-0', now - ttl + 1))
redis.call('HSET', meta, 'e', epoch, 'n', serial, 'm', stamp)
redis.call('PEXPIRE', stream, ttl)
redis.call('PEXPIRE', meta, ARGV[6])
if ARGV[8] then
  redis.call('PUBLISH', ARGV[8], ARGV[9] .. '\0' .. epoch .. ':' .. string.format('%d', serial)
    .. ':' .. string.format('%d', stamp) .. '\0' .. ARGV[10])
end
return {epoch, serial, stamp}
"""
"""KEYS: meta, stream. ARGV: payload, time_ms, now_ms, limit, ttl_ms, meta_ttl_ms, a new epoch,
and optionally a pub/sub channel, a message head and a WebSocket frame: then the script also
publishes head + the position tag (`pyserver.history.live.tag`) + frame, so that the order on
the bus is the order of the positions. Returns the position: {epoch, serial, stamp}."""

READ = """
local meta, stream = KEYS[1], KEYS[2]
local state = redis.call('HMGET', meta, 'e', 'n', 'm')
local epoch, serial, stamp = state[1], tonumber(state[2]), tonumber(state[3])
if not epoch then
  redis.call('DEL', stream)
  epoch, serial, stamp = ARGV[1], 0, 0
  redis.call('HSET', meta, 'e', epoch, 'n', 0, 'm', 0)
end
if serial == 0 then redis.call('PEXPIRE', meta, ARGV[2]) end
local entries = {}
if ARGV[3] == 'fwd' then
  entries = redis.call('XRANGE', stream, ARGV[4], ARGV[5], 'COUNT', ARGV[6])
elseif ARGV[3] == 'rev' then
  entries = redis.call('XREVRANGE', stream, ARGV[5], ARGV[4], 'COUNT', ARGV[6])
end
return {epoch, serial, stamp, entries}
"""
"""KEYS: meta, stream. ARGV: a new epoch, the ttl (ms) of a meta hash with no event yet,
`none`/`fwd`/`rev`, the lowest id, the highest id, count. Returns {epoch, serial, stamp,
entries}; `rev` lists newest first."""


class RedisHistoryStore:
    completes_synchronously = False

    def __init__(
        self, redis: Redis, prefix: str = "pyserver", clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.clock = clock
        self._append = redis.register_script(APPEND)
        self._read = redis.register_script(READ)
        self._nonce = secrets.randbits(32)
        self.events_stored_total = 0
        """Events this node appended (for /metrics)."""

    @classmethod
    def from_url(
        cls, url: str, prefix: str = "pyserver", clock: Callable[[], float] = time.time
    ) -> RedisHistoryStore:
        return cls(Redis.from_url(url), prefix, clock)

    def keys(self, app_id: str, channel: str) -> list[str]:
        base = f"{self.prefix}:history:{{{app_id}:{channel}}}"
        return [f"{base}:meta", f"{base}:stream"]

    def _epoch_candidate(self) -> str:
        self._nonce += 1
        return new_epoch(int(self.clock() * 1_000_000), self._nonce)

    # --- writing -------------------------------------------------------------------------

    async def append(
        self,
        app_id: str,
        channel: str,
        rule: HistoryRule,
        payload: bytes,
        time_ms: int,
        publish: tuple[bytes, bytes, bytes] | None = None,
    ) -> Position:
        """`publish` (pub/sub channel, message head, frame): publish the live event from the
        same script, tagged with its position (the cluster bus of the Redis adapter)."""
        ttl_ms = rule.ttl * 1000
        extra = list(publish) if publish is not None else []
        epoch, serial, stamp = await self._append(
            keys=self.keys(app_id, channel),
            args=[
                payload,
                time_ms,
                int(self.clock() * 1000),
                rule.limit,
                ttl_ms,
                max(META_TTL_MS, 2 * ttl_ms),
                self._epoch_candidate(),
                *extra,
            ],
        )
        self.events_stored_total += 1
        return Position(epoch.decode(), int(serial), int(stamp))

    # --- reading -------------------------------------------------------------------------

    async def _query(
        self,
        app_id: str,
        channel: str,
        rule: HistoryRule,
        mode: str = "none",
        low: str = "-",
        high: str = "+",
        count: int = 0,
    ) -> tuple[Head, list[Entry]]:
        """One atomic read: the head, and the live entries between `low` and `high` (ids,
        `(` for exclusive) in `mode` order, at most `count`."""
        now_ms = int(self.clock() * 1000)
        floor = now_ms - rule.ttl * 1000 + 1
        if mode != "none":
            low = _max_low(low, floor)
        epoch_raw, serial, stamp, raw = await self._read(
            keys=self.keys(app_id, channel),
            args=[self._epoch_candidate(), rule.ttl * 1000, mode, low, high, count],
        )
        epoch = epoch_raw.decode()
        head = Head(Position(epoch, int(serial), int(stamp)))
        entries = [_entry(epoch, entry_id, fields) for entry_id, fields in raw]
        return head, [e for e in entries if e.position.stamp >= floor]

    async def head(self, app_id: str, channel: str, rule: HistoryRule) -> Head:
        return (await self._query(app_id, channel, rule))[0]

    async def last(self, app_id: str, channel: str, rule: HistoryRule, count: int) -> Replay:
        if count <= 0:
            return Replay(await self.head(app_id, channel, rule), ())
        head, entries = await self._query(app_id, channel, rule, "rev", count=count)
        entries.reverse()
        return Replay(head, entries)

    async def since(self, app_id: str, channel: str, rule: HistoryRule, after: Position) -> CatchUp:
        head, entries = await self._query(
            app_id, channel, rule, "fwd", low=_exclusive(after), count=rule.limit
        )
        alive = [e for e in entries if e.position.serial > after.serial]
        return catch_up(after, head, alive, rule)

    async def read(
        self,
        app_id: str,
        channel: str,
        rule: HistoryRule,
        limit: int,
        direction: Direction,
        after: Position | None = None,
        before: Position | None = None,
    ) -> Page:
        mode = "none" if limit <= 0 else "fwd" if direction is Direction.FORWARD else "rev"
        if before is not None and before.serial == 0:
            mode = "none"  # nothing is older than the start (and `(0-0` is no range end)
        head, entries = await self._query(
            app_id,
            channel,
            rule,
            mode,
            low=_exclusive(after) if after is not None else "-",
            high=_exclusive(before) if before is not None else "+",
            count=limit + 1,
        )
        check_position(after, head)
        check_position(before, head)
        if after is not None:
            entries = [e for e in entries if e.position.serial > after.serial]
        if before is not None:
            entries = [e for e in entries if e.position.serial < before.serial]
        return page(head, entries, limit)

    async def close(self) -> None:
        await self.redis.aclose()


def _exclusive(position: Position) -> str:
    return f"({position.stamp}-{position.serial}"


def _max_low(low: str, floor: int) -> str:
    """The higher of a range's lower bound and the ttl floor (`<floor>-0`, inclusive)."""
    if low == "-":
        return f"{floor}-0"
    stamp = int(low.lstrip("(").partition("-")[0])
    return low if stamp >= floor else f"{floor}-0"


def _entry(epoch: str, entry_id: bytes, fields: Sequence[Any]) -> Entry:
    stamp, _, serial = entry_id.partition(b"-")
    values = dict(zip(fields[::2], fields[1::2], strict=True))
    return Entry(Position(epoch, int(serial), int(stamp)), int(values[b"t"]), values[b"p"])


TAKE_DROP = """
local now = tonumber(ARGV[1])
local alive = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local expires = tonumber(string.match(member, '|(%d+)|'))
  if expires and expires > now then
    table.insert(alive, member)
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
if #alive == 0 then return false end
redis.call('ZREM', KEYS[1], alive[#alive])
return alive[1]
"""
"""KEYS: a user's drops of one channel (a sorted set by serial of `position|expires_ms|n`).
ARGV: now (ms). Drops what expired, uses up the latest drop and returns the earliest."""

TAKE_TOKEN = """
local found = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return found
"""

MAX_DROPS_PER_USER = 100
"""Dropped subscriptions kept per user and channel (the earliest ones stay)."""

STAND = f"""
local standing, dropped = '|s' .. ARGV[1], '|d' .. ARGV[1]
local length = string.len(standing)
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local tail = string.sub(member, -length)
  if tail == standing or tail == dropped then
    redis.call('ZREM', KEYS[1], member)
  end
end
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  redis.call('ZREMRANGEBYRANK', KEYS[1], {MAX_DROPS_PER_USER}, -1)
  local ttl = tonumber(ARGV[4])
  if redis.call('PTTL', KEYS[1]) < ttl then
    redis.call('PEXPIRE', KEYS[1], ttl)
  end
end
return 0
"""
"""KEYS: a user's drops of one channel. ARGV: the subscription's socket id, the member to
put in place of that subscription's (`|s<socket id>` or `|d<socket id>` at its end; '' to
only remove it), its score (the serial) and the key's lifetime in ms (only ever extended).
One subscription has at most one member: its standing drop while it lives, its drop once
its connection closed."""


class RedisMarks:
    """Dropped subscriptions and resume tokens in Redis (`pyserver.history.live.RecoveryMarks`),
    so that a user or page coming back to any node recovers.

    Keys: `<prefix>:history:{<app>:<channel>}:drops:<user>`, a sorted set (score: the serial)
    of `<position>|<expires ms>|<s or d><socket id>` (one per subscription: its standing
    drop `s` while it lives, replaced by its drop `d` at close; `|<n>` for a drop of no
    known connection),
    expiring with the rule's `recovery_window` (plus the ping interval for standing drops); and
    `<prefix>:history:token:<token>`, a hash of channel → `<expires ms>|<position>` plus
    `" app"` (no channel name has a space), taken (read and deleted) atomically, so a token
    is good once.
    """

    def __init__(
        self, redis: Redis, prefix: str = "pyserver", clock: Callable[[], float] = time.time
    ) -> None:
        self.redis = redis
        self.prefix = prefix
        self.clock = clock
        self._take_drop = redis.register_script(TAKE_DROP)
        self._take_token = redis.register_script(TAKE_TOKEN)
        self._stand = redis.register_script(STAND)
        self._serial = secrets.randbits(32)

    def drops_key(self, app_id: str, channel: str, user_id: str) -> str:
        return f"{self.prefix}:history:{{{app_id}:{channel}}}:drops:{user_id}"

    def token_key(self, token: str) -> str:
        return f"{self.prefix}:history:token:{token}"

    standing = True

    async def keep(
        self, app_id: str, drops: list[Drop], token: str, marks: dict[str, tuple[int, Position]]
    ) -> None:
        now_ms = int(self.clock() * 1000)
        await self._replace(app_id, [drop for drop in drops if drop.socket_id], "d")
        async with self.redis.pipeline(transaction=False) as pipe:
            for drop in drops:
                if drop.socket_id:
                    continue
                self._serial += 1
                key = self.drops_key(app_id, drop.channel, drop.user_id)
                expires = now_ms + drop.window * 1000
                member = f"{drop.position.encode()}|{expires}|{self._serial}"
                pipe.zadd(key, {member: drop.position.serial})
                pipe.zremrangebyrank(key, MAX_DROPS_PER_USER, -1)
                pipe.pexpire(key, drop.window * 1000)
            fields: dict[str | bytes, str | bytes] = {" app": app_id}
            for channel, (window, position) in marks.items():
                fields[channel] = f"{now_ms + window * 1000}|{position.encode()}"
            key = self.token_key(token)
            pipe.hset(key, mapping=fields)  # type: ignore[arg-type]
            pipe.pexpire(key, max(window for window, _ in marks.values()) * 1000)
            await pipe.execute()

    async def stand(self, app_id: str, drops: list[Drop]) -> None:
        await self._replace(app_id, drops, "s")

    async def _replace(self, app_id: str, drops: list[Drop], kind: str) -> None:
        """Put each drop in place of its subscription's member: `s` standing, `d` dropped."""
        now_ms = int(self.clock() * 1000)
        await asyncio.gather(
            *(
                self._stand(
                    keys=[self.drops_key(app_id, drop.channel, drop.user_id)],
                    args=[
                        drop.socket_id,
                        f"{drop.position.encode()}|{now_ms + drop.window * 1000}|"
                        f"{kind}{drop.socket_id}",
                        drop.position.serial,
                        drop.window * 1000,
                    ],
                )
                for drop in drops
            )
        )

    async def withdraw(self, app_id: str, subscriptions: list[tuple[str, str, str]]) -> None:
        await asyncio.gather(
            *(
                self._stand(
                    keys=[self.drops_key(app_id, channel, user_id)],
                    args=[socket_id, "", 0, 0],
                )
                for user_id, channel, socket_id in subscriptions
            )
        )

    async def take_drop(self, app_id: str, user_id: str, channel: str) -> Position | None:
        found = await self.take(app_id, user_id, channel)
        return None if found is None else found[0]

    async def take(self, app_id: str, user_id: str, channel: str) -> tuple[Position, bool] | None:
        found = await self._take_drop(
            keys=[self.drops_key(app_id, channel, user_id)], args=[int(self.clock() * 1000)]
        )
        if not found:
            return None
        position = _position(found.split(b"|", 1)[0])
        if position is None:
            return None
        return position, found.rsplit(b"|", 1)[1].startswith(b"s")

    async def take_token(self, token: str, app_id: str) -> dict[str, Position] | None:
        raw = await self._take_token(keys=[self.token_key(token)])
        found = {k.decode(): v.decode() for k, v in zip(raw[::2], raw[1::2], strict=True)}
        if found.pop(" app", None) != app_id:
            return None
        now_ms = int(self.clock() * 1000)
        alive: dict[str, Position] = {}
        for channel, value in found.items():
            expires, _, text = value.partition("|")
            position = _position(text.encode())
            if int(expires) > now_ms and position is not None:
                alive[channel] = position
        return alive or None

    def purge(self) -> None:
        return None  # Redis expires the keys


def _position(raw: bytes) -> Position | None:
    try:
        return decode_position(raw.decode())
    except BadPosition:
        return None
