"""History in the running server (docs/history.md): storing published events, rewind and
catch-up on subscribe, the drops and resume tokens catch-up starts from.

`NodeHistory` is one per server: the store (in memory with the local adapter, Redis with the
Redis adapter), the resume tokens of closed connections and the counters for /metrics.
`AppHistory` is one per app with history rules: the rule book, the live events held for
subscriptions waiting for their replay, and the recovery marks of dropped subscriptions of
known users.

How a live event of a history channel travels: it is appended to the store first, then
published as a *tagged frame*: `b"\\0<epoch>:<serial>:<stamp>\\0"` followed by the WebSocket
frame. No WebSocket frame starts with a zero byte, so the app's registry recognises a tagged
frame by its first byte, strips the tag, notes the position as the channel's newest on this
node and appends the event to the channel's hold list (while a replay is pending) before the
fan-out. With Redis the append script itself publishes the tagged frame on the cluster bus
(with an origin that is no node's id, so every node, the triggering one included, delivers
it from the bus): the bus then carries one channel's events in position order, the same on
every node.

Invariants:
- An event of a history channel is stored before it is published, so a replay's head covers
  every live event published before it was read.
- A subscription waiting for its replay is not in the registry: live events of its channel
  are appended once per channel to a hold list while any replay of it is pending, and each
  replay sends, after the stored events, exactly the held events it did not replay. No event
  is both replayed and live; none published after the subscription is missing.
- Replays are written by the node's `ReplayPump`, in slices across loop turns when they are
  long or many (a burst of catch-ups must not stall other clients). A subscription's held
  events and its entry into the fan-out come in the same step as its last replayed event;
  its hold list stays pinned until then. A subscription that ends first (`left`) has its
  replay cancelled and unpinned; a connection that closes mid-replay is remembered where
  the replay started (`ReplayJob.start`).
- What a replay wrote, and the held events after it, count as delivered only once the pong
  to a ping sent after them came back, exactly like live events (`ConnectionHistory`).
- When the app's rules change, the new `AppHistory` takes over the hold lists and pending
  replays of the old one (`take_over`): a replay queued before the change still gets every
  live event broadcast until its end, and a leave still cancels it.
- Catch-up is all of the gap or nothing: `pusher:recovery_failed` then the rewind.
- Drops and tokens are bounded by time (`recovery_window`) and count. With shared marks
  (Redis), a known user's live history subscription also has a *standing* drop there, kept
  in advance at its confirmed position and refreshed at most once per ping interval (after
  an answered probe), that lives `recovery_window` + the ping interval: when its node dies
  without closing it, the standing drop is the drop the user's return catches up from. A
  drop written at close replaces it; an unsubscribe withdraws it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from redis.exceptions import RedisError

from pyserver import tasks
from pyserver.config import HistoryRule
from pyserver.history.memory import MemoryHistoryStore
from pyserver.history.pump import ReplayPump
from pyserver.history.store import Entry, Head, HistoryStore
from pyserver.protocol import frames
from pyserver.protocol.history import ConnectionHistory, Position, RuleBook, newer, tag
from pyserver.protocol.session import PusherSession
from pyserver.protocol.websocket import text_frame

MAX_DROPS = 100_000
"""Recovery marks (dropped subscriptions) an app keeps on one node; the oldest go first."""
MAX_TOKENS = 100_000
"""Resume tokens of closed connections one node keeps; the oldest go first."""
RESUME_FAILED_TICKS = 2
"""Sweep ticks after a `pusher:resume` with an unknown token during which history subscribes
(the re-subscribes that follow it) are told `pusher:recovery_failed`: at least one full tick."""
PURGE_EVERY = 1.0
"""Seconds between two purges of the in-memory store on the server's sweep."""

Publish = Callable[[str, bytes, str | None], None]
"""`publish(channel, tagged_frame, except_socket_id)`: hand a tagged frame to the adapter."""


log = logging.getLogger("pyserver.history")
T = TypeVar("T")

STORE_FAILURES: tuple[type[BaseException], ...] = (RedisError, OSError)
"""What a history store in Redis raises when it cannot answer."""


@dataclass(frozen=True, slots=True)
class HistoryBus:
    """How the Redis store's events reach every node's subscribers."""

    route: Callable[[str, str, str | None], tuple[bytes, bytes]]
    """`(app id, channel, except_socket_id)` → the bus channel and the head of a broadcast
    message from an origin that is no node's id; the tag and the frame follow the head."""
    publish: Callable[[bytes, bytes], Awaitable[None]] | None = None
    """None: the append script publishes (bus order is position order). Otherwise (sharded
    pub/sub on a Redis Cluster, out of the script's reach) the event is published with this
    right after its append."""


class Replayed(Protocol):
    """What a replay needs of a client."""

    socket_id: str

    @property
    def session(self) -> PusherSession: ...

    def send(self, frame: bytes) -> None: ...

    def send_message(self, payload: bytes) -> None: ...


class NodeHistory:
    """This node's history: the store, resume tokens and counters."""

    def __init__(
        self,
        store: HistoryStore,
        bus: HistoryBus | None = None,
        clock: Callable[[], float] = time.monotonic,
        marks: RecoveryMarks | None = None,
        owns_store: bool = True,
        ping_interval: int = 120,
    ) -> None:
        self.store = store
        self.bus = bus
        """The Redis adapter's bus, where live events of the Redis store go."""
        self.owns_store = owns_store
        """False when the store runs on a connection someone else closes (the adapter's)."""
        self.memory = store if isinstance(store, MemoryHistoryStore) else None
        self.marks: RecoveryMarks = marks if marks is not None else MemoryMarks(clock)
        """Dropped subscriptions and resume tokens (in Redis with the Redis store)."""
        self._purged = -PURGE_EVERY
        self.clock = clock
        self.pump = ReplayPump()
        """Writes every app's replays in slices (`pyserver.history.pump`)."""
        self.catch_ups_total = 0
        self.recovery_failed_total = 0
        self.ping_interval = ping_interval
        """Seconds between two delivery probes of a connection (`activity_timeout`): how much
        longer than `recovery_window` a standing drop lives, as it is refreshed that often."""

    def for_app(self, app_id: str, rules: tuple[HistoryRule, ...]) -> AppHistory | None:
        return AppHistory(self, app_id, RuleBook(rules)) if rules else None

    def new_token(self) -> str:
        return secrets.token_urlsafe(18)

    def tick(self) -> None:
        """The server's sweep: purge expired history, drops and tokens (once a second)."""
        now = self.clock()
        if now - self._purged < PURGE_EVERY:
            return
        self._purged = now
        if self.memory is not None:
            self.memory.purge()
        self.marks.purge()

    async def close(self) -> None:
        if self.owns_store:
            await self.store.close()


class AppHistory:
    """One app's history at run time."""

    def __init__(self, node: NodeHistory, app_id: str, rules: RuleBook[HistoryRule]) -> None:
        self.node = node
        self.store = node.store
        self.app_id = app_id
        self.rules = rules
        self.holds: dict[str, list[tuple[Position | None, bytes, str | None]]] = {}
        """channel → every frame broadcast to it (position if it is a history event, frame,
        excluded socket) while replays of it are pending; the app's registry appends to it.
        The key exists exactly while a replay of the channel is pending."""
        self._reads: dict[tuple[Any, ...], tuple[asyncio.Future[Any], int]] = {}
        """Store reads in flight, by what they read, with where the hold list stood when
        each was issued (merged, see `_shared`)."""
        self._hold_base: dict[str, int] = {}
        """channel → how many frames were trimmed from the front of its hold list."""
        self.replays: dict[tuple[str, str], ReplayJob] = {}
        """(socket id, channel) → its replay handed to the pump and not finished yet."""
        self._hold_starts: dict[str, dict[int, int]] = {}
        """channel → where each pending replay starts in the hold list (counted from the
        first frame ever held while the list existed), with how many start there: the front
        no pending replay needs is trimmed, so a steady stream of joins cannot grow it."""

    def rule_for(self, channel: str) -> HistoryRule | None:
        return self.rules.rule_for(channel)

    def take_over(self, previous: AppHistory) -> None:
        """The app's rules changed: from now on this object serves them, and the replays
        `previous` has under way (reads in flight, jobs queued in the pump) finish on state
        both share, so the registry's appends, `left` and `dropped` reach them here. Only
        the merged reads stay apart: a read under the old rules (another rewind count) must
        not answer a subscription under the new ones."""
        self.holds = previous.holds
        self._hold_base = previous._hold_base
        self._hold_starts = previous._hold_starts
        self.replays = previous.replays

    # --- storing -------------------------------------------------------------------------

    def record(
        self,
        channel: str,
        rule: HistoryRule,
        payload: bytes,
        except_socket_id: str | None,
        publish: Publish,
        best_effort: bool = False,
    ) -> Coroutine[Any, Any, None] | None:
        """Store an event and publish it, tagged with its position. In memory both happen
        now (None); with Redis the returned coroutine appends and publishes in one script,
        and raises when Redis cannot be reached, unless `best_effort` (client events): then
        the event is published without being stored, and a warning logged."""
        time_ms = int(time.time() * 1000)
        memory = self.node.memory
        if memory is not None:
            position = memory.append_now(self.app_id, channel, rule, payload, time_ms)
            publish(channel, tag(position, text_frame(payload)), except_socket_id)
            return None
        work = self._append_published(channel, rule, payload, except_socket_id, time_ms)
        if best_effort:
            return self._or_live(work, channel, payload, except_socket_id, publish)
        return work

    async def _or_live(
        self,
        work: Coroutine[Any, Any, None],
        channel: str,
        payload: bytes,
        except_socket_id: str | None,
        publish: Publish,
    ) -> None:
        try:
            await work
        except STORE_FAILURES as exc:
            log.warning("history: a client event on %s was not stored (%s)", channel, exc)
            publish(channel, text_frame(payload), except_socket_id)

    async def _append_published(
        self,
        channel: str,
        rule: HistoryRule,
        payload: bytes,
        except_socket_id: str | None,
        time_ms: int,
    ) -> None:
        bus = self.node.bus
        assert bus is not None
        bus_channel, head = bus.route(self.app_id, channel, except_socket_id)
        frame = text_frame(payload)
        if bus.publish is None:
            await self.store.append(  # type: ignore[call-arg]
                self.app_id, channel, rule, payload, time_ms, publish=(bus_channel, head, frame)
            )
            return
        position = await self.store.append(self.app_id, channel, rule, payload, time_ms)
        await bus.publish(bus_channel, head + tag(position, frame))

    # --- subscribing: rewind or catch-up -------------------------------------------------

    async def join(
        self,
        client: Replayed,
        channel: str,
        rule: HistoryRule,
        user_id: str | None,
        add: Callable[[], None],
        silent: Callable[[], Position | None] = lambda: None,
        floor: Callable[[Position], None] = lambda _: None,
        announce: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Read the replay, then `announce()` the subscription (`subscription_succeeded`:
        whatever the client publishes once it saw that comes after the head the read
        found), and hand the replay to the node's pump (`pyserver.history.pump`). It sends
        the replay, in slices when it is long or others wait, then the live events held
        meanwhile that it did not contain, then `add()`s the client to the fan-out: when
        this returns, that may not have happened yet (`left` cancels it).
        `silent()`: the confirmed position of the same user's subscription to the channel
        on a connection that stopped answering pings, if any (it may be this user's
        previous connection, not given up yet). `floor(position)`: live history events up
        to `position` must not reach the client any more (they were replayed)."""
        hold = self.holds.setdefault(channel, [])
        base = self._hold_base.setdefault(channel, 0)
        mine = [base + len(hold)]
        """Where this replay's share of the hold list starts (more than one start when it
        joins a store read issued before it: it then needs what was held since that read)."""
        self._pin(channel, mine[0])

        def pin(index: int) -> None:
            self._pin(channel, index)
            mine.append(index)

        handed = False
        try:
            try:
                entries, head, after, failed = await self._replay(
                    client, channel, rule, user_id, silent, pin
                )
            except STORE_FAILURES as exc:
                log.warning("history: no replay on %s, the store is unavailable (%s)", channel, exc)
                if announce is not None:
                    await announce()
                client.send_message(frames.recovery_failed(channel, "unavailable"))
                # Counted for every subscription told so: with the store unreachable there is
                # no telling a returning subscriber from a new one.
                self.node.recovery_failed_total += 1
                add()
                return
            if announce is not None:
                await announce()
            if failed is not None:
                client.send_message(frames.recovery_failed(channel, failed))
            job = ReplayJob(self, client, channel, rule, entries, head, after, mine, add, floor)
            if user_id is not None and rule.recovery_window and self.node.marks.standing:
                # Where a return catches up from if this node dies before it sees the
                # connection close: confirmed by later pongs (`confirmed`), replaced at close.
                self._stand([self._drop(user_id, channel, rule, job.start(), client.socket_id)])
            key = (client.socket_id, channel)
            previous = self.replays.get(key)
            if previous is not None:  # left and subscribed again while it was queued
                self._cancel(previous)
            self.replays[key] = job
            handed = True
            self.node.pump.submit(job)
        finally:
            if not handed:
                for start in mine:
                    self._release(channel, start)

    def _finish(self, job: ReplayJob) -> None:
        """A replay's tail, in the step that wrote its last stored event: the held live
        events it did not contain, then the fan-out."""
        client, channel = job.client, job.channel
        if self.replays.get((client.socket_id, channel)) is job:
            del self.replays[client.socket_id, channel]
        try:
            # The subscription starts at the head its read returned: what is older is history
            # (the rewind or catch-up just sent), what is newer is live, from the hold list.
            newest = end = job.head.position
            hold = self.holds[channel]
            for position, frame, except_id in hold[min(job.mine) - self._hold_base[channel] :]:
                if position is not None:  # a history event (others: members, counts, …)
                    if position.epoch == end.epoch and position.serial <= end.serial:
                        continue  # replayed, or older than the subscription
                    newest = newer(position, newest)
                if except_id != client.socket_id:
                    client.send(frame)
            job.add()
            if newest == end and end.serial and self.node.memory is None:
                job.floor(newest)  # the newest replayed event may still be on the bus to here
            history = client.session.history
            if history is not None and job.rule.recovery_window:
                # Written is not received: what the replay and the held events wrote counts
                # as delivered once the pong to a later ping confirms it, as live events do.
                history.track(channel, job.start(), newest)
        finally:
            for start in job.mine:
                self._release(channel, start)

    def left(self, socket_id: str, channel: str) -> None:
        """A subscription ended (unsubscribe, kick, closed connection): a replay of it
        still queued is dropped, and what it held released."""
        job = self.replays.pop((socket_id, channel), None)
        if job is not None:
            self._cancel(job)

    def unsubscribed(self, session: PusherSession, channel: str) -> None:
        """A subscription ended while its connection stays (unsubscribe, kick): its standing
        drop is withdrawn, so no return catches up from it."""
        history = session.history
        if history is None or channel not in history.marks or not self.node.marks.standing:
            return
        user_id = _user_of(session, channel)
        if user_id is not None:
            withdraw = self.node.marks.withdraw(
                self.app_id, [(user_id, channel, session.socket_id)]
            )
            tasks.run(withdraw, False)

    def confirmed(self, session: PusherSession) -> None:
        """A pong confirmed the connection's history subscriptions (at most once per ping
        interval): refresh the standing drops of those of known users."""
        history = session.history
        if history is None or not self.node.marks.standing:
            return
        drops: list[Drop] = []
        for channel, mark in history.marks.items():
            rule = self.rules.rule_for(channel)
            user_id = _user_of(session, channel)
            if rule is not None and rule.recovery_window and user_id is not None:
                drops.append(self._drop(user_id, channel, rule, mark.confirmed, session.socket_id))
        if drops:
            self._stand(drops)

    def _drop(
        self, user_id: str, channel: str, rule: HistoryRule, position: Position, socket_id: str
    ) -> Drop:
        """A standing drop: it outlives the window by the ping interval it is refreshed in."""
        window = rule.recovery_window + self.node.ping_interval
        return Drop(user_id, channel, window, position, socket_id)

    def _stand(self, drops: list[Drop]) -> None:
        tasks.run(self.node.marks.stand(self.app_id, drops), False)

    def _cancel(self, job: ReplayJob) -> None:
        if job.cancelled:
            return
        job.cancelled = True
        for start in job.mine:
            self._release(job.channel, start)

    def _pin(self, channel: str, start: int) -> None:
        starts = self._hold_starts.setdefault(channel, {})
        starts[start] = starts.get(start, 0) + 1

    def _release(self, channel: str, start: int) -> None:
        """A replay is done: trim what no pending replay still needs."""
        starts = self._hold_starts[channel]
        if starts[start] > 1:
            starts[start] -= 1
            return
        del starts[start]
        if not starts:
            del self._hold_starts[channel], self._hold_base[channel], self.holds[channel]
            return
        earliest = min(starts)
        base = self._hold_base[channel]
        if earliest > base:
            del self.holds[channel][: earliest - base]
            self._hold_base[channel] = earliest

    async def _replay(
        self,
        client: Replayed,
        channel: str,
        rule: HistoryRule,
        user_id: str | None,
        silent: Callable[[], Position | None],
        pin: Callable[[int], None],
    ) -> tuple[list[Entry], Head, Position | None, str | None]:
        """What to send first: the entries, the head they end at, where a recovered
        catch-up starts (None for a rewind), and why a catch-up was not recovered (then the
        entries are the rewind)."""
        history = client.session.history
        after: Position | None = None
        failed: str | None = None
        standing = False
        if history is not None and rule.recovery_window:
            if history.resume is not None and channel in history.resume:
                after = history.resume.pop(channel)
            elif history.resume_failed:
                failed = "window"
        if after is None and failed is None and user_id is not None and rule.recovery_window:
            taken = await self.node.marks.take(self.app_id, user_id, channel)
            if taken is not None:
                after, standing = taken
            else:
                after = silent()
        if after is not None:
            caught = await self._shared(
                ("since", channel, after), self.store.since, rule, after, pin
            )
            if caught.lost is None:
                self.node.catch_ups_total += 1
                if standing and len(caught.entries) < rule.rewind:
                    # A standing drop: a return from a node that died, or a second tab of
                    # a user still connected elsewhere. Either way no less than the rewind.
                    replay = await self._shared(
                        ("last", channel), self.store.last, rule, rule.rewind, pin
                    )
                    if _covers(replay.entries, after):
                        return list(replay.entries), replay.head, after, None
                return list(caught.entries), caught.head, after, None
            failed = caught.lost.value
        if failed is not None:
            self.node.recovery_failed_total += 1
        replay = await self._shared(("last", channel), self.store.last, rule, rule.rewind, pin)
        return list(replay.entries), replay.head, None, failed

    async def _shared(
        self,
        key: tuple[Any, ...],
        read: Callable[..., Awaitable[T]],
        rule: HistoryRule,
        arg: Any,
        pin: Callable[[int], None],
    ) -> T:
        """`read(app, channel, rule, arg)`, merged with an identical read still in flight: a
        thousand subscribers returning at once to one channel cost one store read, not a
        thousand. (The in-memory store answers without suspending: nothing to merge.)

        A read issued before this replay's hold list started may miss events held since
        the read was issued: joining it `pin`s the hold list from there, so those come from
        the hold list (events the read did contain are recognised by their position)."""
        channel = key[1]
        if self.node.memory is not None:
            return await read(self.app_id, channel, rule, arg)
        pending = self._reads.get(key)
        if pending is not None:
            future_pending, issued_at = pending
            pin(issued_at)
            return cast(T, await asyncio.shield(future_pending))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        hold = self.holds[channel]
        self._reads[key] = (future, self._hold_base[channel] + len(hold))
        try:
            result = await read(self.app_id, channel, rule, arg)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(result)
            return result
        finally:
            del self._reads[key]

    # --- drops ---------------------------------------------------------------------------

    def dropped(self, session: PusherSession) -> Coroutine[Any, Any, None] | None:
        """A connection closed (not unsubscribed): remember what each of its history
        subscriptions received, for its user's return and for its resume token."""
        history = session.history
        if history is None:
            return None
        delivered = history.delivered()
        if self.replays:  # a replay cut short: nothing it wrote was confirmed
            for (socket_id, channel), job in self.replays.items():
                if socket_id == session.socket_id:
                    delivered[channel] = job.start()
        if not delivered:
            return None
        marks: dict[str, tuple[int, Position]] = {}
        drops: list[Drop] = []
        for channel, position in delivered.items():
            rule = self.rules.rule_for(channel)
            if rule is None or not rule.recovery_window:
                continue
            marks[channel] = (rule.recovery_window, position)
            user_id = _user_of(session, channel)
            if user_id is not None:
                drop = Drop(user_id, channel, rule.recovery_window, position, session.socket_id)
                drops.append(drop)
        if not marks:
            return None
        return self.node.marks.keep(self.app_id, drops, history.token, marks)

    def new_connection(self, session: PusherSession) -> bytes:
        """A connection opened: give it its history state; returns the resume token frame."""
        token = self.node.new_token()
        session.history = ConnectionHistory(token)
        return frames.resume_token(token)

    async def resume(self, session: PusherSession, token: str) -> None:
        """`pusher:resume`: the next subscribes to the token's channels catch up from it."""
        history = session.history
        if history is None:
            return
        positions = await self.node.marks.take_token(token, self.app_id)
        if positions is None:
            history.resume_failed = RESUME_FAILED_TICKS
        else:
            history.resume = positions


class ReplayJob:
    """One subscription's rewind or catch-up, as the pump writes it (`pump.Job`): the
    stored events a slice at a time, then `AppHistory._finish` (held events, fan-out)."""

    __slots__ = (
        "add",
        "after",
        "cancelled",
        "channel",
        "client",
        "entries",
        "floor",
        "head",
        "history",
        "mine",
        "rule",
        "sent",
    )

    def __init__(
        self,
        history: AppHistory,
        client: Replayed,
        channel: str,
        rule: HistoryRule,
        entries: list[Entry],
        head: Head,
        after: Position | None,
        mine: list[int],
        add: Callable[[], None],
        floor: Callable[[Position], None],
    ) -> None:
        self.history = history
        self.client = client
        self.channel = channel
        self.rule = rule
        self.entries = entries
        self.head = head
        self.after = after
        """Where a recovered catch-up starts; None for a rewind."""
        self.mine = mine
        """Where its share of the channel's hold list starts (see `AppHistory.join`)."""
        self.add = add
        self.floor = floor
        self.sent = 0
        """Entries written so far."""
        self.cancelled = False

    def step(self, frames: int) -> bool:
        entries = self.entries
        start = self.sent
        end = min(start + frames, len(entries))
        send = self.client.send_message
        for index in range(start, end):
            send(entries[index].payload)
        self.sent = end
        if end < len(entries):
            return False
        self.history._finish(self)
        return True

    def start(self) -> Position:
        """What the subscription is known to have received before its replay: where its
        catch-up started, or (a rewind) the head it subscribed at. Events written by the
        replay are confirmed only by the pong to a ping sent after them, so a connection
        that closes mid-replay, or before such a pong, is remembered here: its return gets
        the replay again (duplicates), never a gap."""
        return self.after if self.after is not None else self.head.position


def _covers(entries: Sequence[Entry], after: Position) -> bool:
    """Whether `entries` (consecutive, oldest first) hold every event after `after`."""
    if not entries:
        return False
    first = entries[0].position
    return first.epoch == after.epoch and first.serial <= after.serial + 1


def _user_of(session: PusherSession, channel: str) -> str | None:
    """The known user of a subscription: its presence member, else the signed-in user."""
    signed_in = session.user.user_id if session.user is not None else None
    return session.channels.get(channel) or signed_in


@dataclass(frozen=True, slots=True)
class Drop:
    """A dropped subscription of a known user: where its catch-up would start."""

    user_id: str
    channel: str
    window: int
    """Seconds it is remembered (the rule's `recovery_window`)."""
    position: Position
    socket_id: str = ""
    """The connection it was on: a drop replaces that subscription's standing drop."""


class RecoveryMarks(Protocol):
    """Where dropped subscriptions and resume tokens are remembered: `MemoryMarks` (one
    node) or `pyserver.history.redis.RedisMarks` (every node).

    Rules both keep: a user's dropped subscriptions of a channel are used up one per return,
    the latest first, and every return gets the earliest position still there, so each tab
    that comes back recovers from no later than its own position; a token is good once, for
    its own app, for the channels whose window has not passed.
    """

    standing: bool
    """True when drops can be kept in advance (`stand`): the marks outlive this process."""

    async def keep(
        self, app_id: str, drops: list[Drop], token: str, marks: dict[str, tuple[int, Position]]
    ) -> None:
        """Remember a closed connection's drops and its token (channel → (window, position)).
        A drop replaces the standing drop of its subscription (`Drop.socket_id`)."""

    async def stand(self, app_id: str, drops: list[Drop]) -> None:
        """Keep live subscriptions' drops in advance, each replacing the one kept before for
        the same subscription; they are taken like any drop."""

    async def withdraw(self, app_id: str, subscriptions: list[tuple[str, str, str]]) -> None:
        """Forget the standing drops of these (user, channel, socket id) subscriptions."""

    async def take_drop(self, app_id: str, user_id: str, channel: str) -> Position | None:
        """Where a returning user's subscription catches up from, or None."""

    async def take(self, app_id: str, user_id: str, channel: str) -> tuple[Position, bool] | None:
        """`take_drop`, and whether the position is a standing drop's (a subscription that
        may still be alive: a second tab rather than a return)."""

    async def take_token(self, token: str, app_id: str) -> dict[str, Position] | None:
        """The positions a token stands for, once; None when unknown, of another app or
        expired."""

    def purge(self) -> None:
        """Forget what expired (the server's sweep)."""


class MemoryMarks:
    """`RecoveryMarks` in this process (the local adapter). Every coroutine completes
    without suspending. Bounded: `MAX_DROPS` drops and `MAX_TOKENS` tokens, oldest first."""

    standing = False
    """Nothing outlives this process: no drop is kept in advance."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.drops: dict[tuple[str, str, str], list[tuple[float, Position]]] = {}
        """(app, user, channel) → (expiry, position) of dropped subscriptions."""
        self.tokens: dict[str, tuple[str, dict[str, tuple[float, Position]]]] = {}
        """token → (app, channel → (expiry, position))."""
        self._drop_count = 0

    async def keep(
        self, app_id: str, drops: list[Drop], token: str, marks: dict[str, tuple[int, Position]]
    ) -> None:
        now = self.clock()
        for drop in drops:
            self._add((app_id, drop.user_id, drop.channel), now + drop.window, drop.position)
        tokens = self.tokens
        if len(tokens) >= MAX_TOKENS:
            del tokens[next(iter(tokens))]
        tokens[token] = (app_id, {ch: (now + w, pos) for ch, (w, pos) in marks.items()})

    async def stand(self, app_id: str, drops: list[Drop]) -> None:
        return None

    async def withdraw(self, app_id: str, subscriptions: list[tuple[str, str, str]]) -> None:
        return None

    def _add(self, key: tuple[str, str, str], expires: float, position: Position) -> None:
        drops = self.drops
        if self._drop_count >= MAX_DROPS:
            self._drop_count -= len(drops.pop(next(iter(drops))))
        drops.setdefault(key, []).append((expires, position))
        self._drop_count += 1

    async def take(self, app_id: str, user_id: str, channel: str) -> tuple[Position, bool] | None:
        found = await self.take_drop(app_id, user_id, channel)
        return None if found is None else (found, False)

    async def take_drop(self, app_id: str, user_id: str, channel: str) -> Position | None:
        key = (app_id, user_id, channel)
        found = self.drops.get(key)
        if found is None:
            return None
        now = self.clock()
        alive = sorted(
            ((expires, pos) for expires, pos in found if expires > now),
            key=lambda mark: mark[1].serial,
        )
        self._drop_count -= len(found) - len(alive)
        if not alive:
            del self.drops[key]
            return None
        earliest = alive[0][1]
        alive.pop()
        self._drop_count -= 1
        if alive:
            self.drops[key] = alive
        else:
            del self.drops[key]
        return earliest

    async def take_token(self, token: str, app_id: str) -> dict[str, Position] | None:
        found = self.tokens.pop(token, None)
        if found is None or found[0] != app_id:
            return None
        now = self.clock()
        alive = {name: pos for name, (expires, pos) in found[1].items() if expires > now}
        return alive or None

    def purge(self) -> None:
        now = self.clock()
        for key, found in list(self.drops.items()):
            alive = [mark for mark in found if mark[0] > now]
            self._drop_count -= len(found) - len(alive)
            if alive:
                self.drops[key] = alive
            else:
                del self.drops[key]
        for token, (_, marks) in list(self.tokens.items()):
            if all(expires <= now for expires, _ in marks.values()):
                del self.tokens[token]


class SharedMarks:
    """`RecoveryMarks` shared by every node (`RedisMarks`), with this node's own copy as a
    fallback: when Redis lost its keys (a restart) or cannot be reached, a user coming back
    to the node they left is still recognised, and told that the gap is gone (`epoch`)
    rather than given a silent rewind."""

    def __init__(self, shared: RecoveryMarks, local: MemoryMarks) -> None:
        self.shared = shared
        self.local = local
        self.standing = shared.standing

    async def keep(
        self, app_id: str, drops: list[Drop], token: str, marks: dict[str, tuple[int, Position]]
    ) -> None:
        await self.local.keep(app_id, drops, token, marks)
        try:
            await self.shared.keep(app_id, drops, token, marks)
        except STORE_FAILURES as exc:
            log.warning("history: drops kept on this node only (%s)", exc)

    async def stand(self, app_id: str, drops: list[Drop]) -> None:
        try:
            await self.shared.stand(app_id, drops)
        except STORE_FAILURES as exc:
            log.warning("history: standing drops not refreshed (%s)", exc)

    async def withdraw(self, app_id: str, subscriptions: list[tuple[str, str, str]]) -> None:
        try:
            await self.shared.withdraw(app_id, subscriptions)
        except STORE_FAILURES as exc:
            log.warning("history: standing drops not withdrawn (%s)", exc)

    async def take_drop(self, app_id: str, user_id: str, channel: str) -> Position | None:
        found = await self.take(app_id, user_id, channel)
        return None if found is None else found[0]

    async def take(self, app_id: str, user_id: str, channel: str) -> tuple[Position, bool] | None:
        mine = await self.local.take_drop(app_id, user_id, channel)
        try:
            shared = await self.shared.take(app_id, user_id, channel)
        except STORE_FAILURES as exc:
            log.warning("history: shared drops unavailable (%s)", exc)
            return None if mine is None else (mine, False)
        if mine is None:
            return shared
        if shared is None or mine.epoch != shared[0].epoch or mine.serial < shared[0].serial:
            return mine, False  # another epoch: the older one, which Redis forgot
        return shared

    async def take_token(self, token: str, app_id: str) -> dict[str, Position] | None:
        mine = await self.local.take_token(token, app_id)
        try:
            shared = await self.shared.take_token(token, app_id)
        except STORE_FAILURES as exc:
            log.warning("history: shared resume tokens unavailable (%s)", exc)
            return mine
        return mine if mine is not None else shared

    def purge(self) -> None:
        self.local.purge()
        self.shared.purge()
