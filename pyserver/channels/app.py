"""One app at run time: what subscribing, unsubscribing, signing in, client events and
triggers do (`spec/protocol.md` §4-§9), over the local registry and the cluster Adapter.

Handlers take a parsed command and the client it came from. They raise `PusherError`s and
never build error frames; they build every message with `pyserver.protocol.frames`.
A handler returns None when it is done, or a coroutine when it needs the Adapter; the
transport runs that coroutine before the client's next message (`pyserver.tasks`).
Per-connection protocol state (socket id, subscriptions, user, sign-in deadline, client-event
allowance) belongs to the client's `PusherSession` (`protocol.session`); the app changes it
only through the session's methods.

Invariants:
- A subscribe always gets an answer: `subscription_succeeded` or a `SubscriptionError`, and
  `subscription_succeeded` goes out only once the cluster counts the subscription.
- `session.channels` maps each subscribed channel to the presence user id it joined as
  (None for other channels), from the subscribe until the leave; the client is in the
  registry (receives the channel's events) only once `subscription_succeeded` is sent
  (`session.joined`; until then the channel is pending).
- `member_added` / `member_removed` frames go out once per user, not per connection; the
  first `user_info` is kept. Webhook-worthy transitions come from the Adapter, which decides
  them once per cluster.
- A broadcast is encoded once: one payload, one WebSocket frame, handed to the Adapter.
- On a channel with a history rule (`history`, docs/history.md), an event is stored before it
  is published (tagged with its position), and a subscription enters the registry only after
  its rewind or catch-up went out, with what was broadcast meanwhile.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator
from typing import Any, Protocol, cast

from pyserver.auth.signatures import auth_problem, channel_string_to_sign, user_string_to_sign
from pyserver.channels.observer import AppObserver
from pyserver.channels.registry import ChannelRegistry
from pyserver.cluster.adapter import Adapter, CachedEvent, CountChange, Transition
from pyserver.config import AppConfig, HistoryRule
from pyserver.history.live import AppHistory
from pyserver.logs import SocketLog
from pyserver.protocol import frames
from pyserver.protocol.commands import ClientEvent, Resume, Signin, Subscribe, Unsubscribe
from pyserver.protocol.errors import (
    ClientEventRateLimited,
    ClientEventRejected,
    PusherError,
    SigninFailed,
    SubscriptionAuthError,
    SubscriptionError,
    SubscriptionLimitError,
    UserTerminated,
    WatchlistLimitExceeded,
)
from pyserver.protocol.history import Position
from pyserver.protocol.members import (
    Member,
    MemberDataError,
    SignedInUser,
    check_user_info,
    parse_channel_data,
    parse_user_data,
)
from pyserver.protocol.names import (
    CACHE_MARK,
    CACHE_PREFIXES,
    MAX_EVENT_NAME,
    SERVER_TO_USER_PREFIX,
    ChannelKind,
    channel_name_problem,
    channel_type,
)
from pyserver.protocol.session import PusherSession
from pyserver.protocol.websocket import text_frame
from pyserver.stats import AppStats

Handled = Coroutine[Any, Any, None] | None

_PRIVATE, _PRESENCE = ChannelKind.PRIVATE, ChannelKind.PRESENCE
"""`ChannelType.allows_client_events` inlined: two identity tests instead of a property call
(and no set, since hashing an enum member calls Python code)."""

COUNT_THROTTLE_ABOVE = 100
COUNT_THROTTLE_SECONDS = 5.0


class Client(Protocol):
    """What the app needs of one WebSocket connection: its session and a way to write."""

    socket_id: str
    """The session's socket id (copied onto the connection for the fan-out loop)."""

    @property
    def session(self) -> PusherSession:
        """The connection's protocol state; changed only through its methods."""

    @property
    def log(self) -> SocketLog | None:
        """The connection's debug logger, None unless debug logging is on."""

    def send(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame."""

    def send_message(self, payload: bytes) -> None:
        """Queue one Pusher message (JSON payload), framed for this connection."""

    def report(self, error: PusherError) -> None:
        """Tell the client about `error` (and close if the error closes)."""

    def run_when_idle(self, action: Callable[[], Handled]) -> None:
        """Run `action` (and the coroutine it may return) as if it were the client's next
        message: after the handler now running, before the messages queued behind it."""


class App:
    """The run-time state and behaviour of one configured app on this node."""

    def __init__(
        self,
        config: AppConfig,
        adapter: Adapter,
        observer: AppObserver | None = None,
        history: AppHistory | None = None,
    ) -> None:
        self.config = config
        """Replaced as a whole when the app store changes the app (`server.live_apps`)."""
        self.id = config.id
        self.rotation: tuple[str | None, float | None] = (None, None)
        """The secret a rotation replaced and the Unix time it stops being valid."""
        self.adapter = adapter
        self.observer = observer or AppObserver()
        self.stats = AppStats()
        self.registry = ChannelRegistry(self.stats)
        self.clients: dict[str, Client] = {}
        """socket id → client, for every local connection of this app."""
        self.users: dict[str, dict[Client, None]] = {}
        """user id → local signed-in clients."""
        self.watchers: dict[str, dict[Client, None]] = {}
        """user id → local signed-in clients whose watchlist names that user."""
        self._count_sent: dict[str, float] = {}
        """channel → when its subscription count was last sent (for the > 100 throttle)."""
        self._count_pending: dict[str, int] = {}
        """channel → subscription count waiting for the throttle window to pass."""
        self.history: AppHistory | None = None
        """Rewind, catch-up and storing (docs/history.md); None when the app has no rules."""
        self._replaying: AppHistory | None = None
        """The history whose hold lists and pending replays are live: `history`, or, when
        the rules were removed, the last one (replays under way still finish on it)."""
        self.use_history(history)
        adapter.attach(self.id, self.registry, self)

    def previous_secret(self) -> str | None:
        """The secret a rotation replaced while its grace period lasts, else None."""
        previous, until = self.rotation
        if previous is None or until is None or time.time() >= until:
            return None
        return previous

    def use_history(self, history: AppHistory | None) -> None:
        """Serve history by these rules from now on (the app's rules changed). Replays
        already under way finish as they started, with every live event broadcast meanwhile
        and cancellable by a leave: the new rules' history takes over their hold lists and
        jobs, and without rules the previous history keeps them."""
        previous = self._replaying
        if history is not None:
            if previous is not None and previous is not history:
                history.take_over(previous)
            self._replaying = history
        self.history = history
        replaying = self._replaying
        self.registry.held = replaying.holds if replaying is not None else None

    # --- connections ---------------------------------------------------------------------

    def connected(self, client: Client) -> None:
        self.clients[client.socket_id] = client
        self.stats.new_connections_total += 1

    def disconnected(self, client: Client) -> Handled:
        """Forget a closed client: leave every channel with the usual presence semantics."""
        self.clients.pop(client.socket_id, None)
        self.stats.new_disconnections_total += 1
        session = client.session
        remembering = self.history.dropped(session) if self.history is not None else None
        work = [self._leave(client, name, closed=True) for name in list(session.channels)]
        if remembering is not None:
            work.append(remembering)
        user = session.user
        if user is not None:
            work.append(self._sign_out(client, user))
        return _in_order(work)

    # --- subscribe / unsubscribe ---------------------------------------------------------

    def subscribe(self, client: Client, command: Subscribe) -> Handled:
        name = command.channel
        problem = channel_name_problem(name)
        if problem is not None:
            raise SubscriptionError(name, f"Invalid channel name '{name[:200]}': {problem}")
        session = client.session
        if name in session.channels:
            raise SubscriptionError(name, f"Existing subscription to {name}")
        local = self.registry.channels.get(name)
        if local is not None:  # one string per channel, not one per subscriber (~60 B each)
            name = local.name
        kind = channel_type(name).kind
        if kind is ChannelKind.SERVER_TO_USER:
            user = session.user
            if user is None or name[len(SERVER_TO_USER_PREFIX) :] != user.user_id:
                raise SubscriptionAuthError(
                    name, f"{name} can only be subscribed by a connection signed in as that user"
                )
        elif kind is not ChannelKind.PUBLIC:
            signed = channel_string_to_sign(client.socket_id, name, command.channel_data)
            problem = auth_problem(
                self.config.key, self.config.secret, signed, command.auth, self.previous_secret()
            )
            if problem is not None:
                raise SubscriptionAuthError(name, problem)
            session.authorized()
        if kind is ChannelKind.PRESENCE:
            return self._join_presence(client, name, self._member(client, name, command))
        session.subscribing(name, None)
        return self._subscribed(client, name)

    async def _subscribed(self, client: Client, name: str) -> None:
        change = await self.adapter.subscribe(self.id, name, client.socket_id)
        client.session.joined(name)
        if client.log is not None:
            client.log.debug("subscribed to %s", name)
        announce = functools.partial(
            self._announce, client, name, frames.subscription_succeeded(name)
        )
        rule = self.history.rule_for(name) if self.history is not None else None
        if rule is None:
            self.registry.add(name, client)
            await announce()
        else:
            await self._replay(client, name, rule, client.session.user, announce)
        self._count_changed(name, change)

    async def _announce(self, client: Client, name: str, succeeded: bytes) -> None:
        """`subscription_succeeded`, then a cache channel's last event."""
        client.send_message(succeeded)
        await self._send_cached(client, name)

    async def _replay(
        self,
        client: Client,
        name: str,
        rule: HistoryRule,
        user: SignedInUser | str | None,
        announce: Callable[[], Coroutine[Any, Any, None]],
    ) -> None:
        """Rewind or catch-up, then the fan-out (docs/history.md): live events are held
        until the replay went out, so none is both replayed and live."""
        assert self.history is not None
        user_id = user.user_id if isinstance(user, SignedInUser) else user
        await self.history.join(
            client,
            name,
            rule,
            user_id,
            functools.partial(self._add_after_replay, client, name),
            functools.partial(self._silent_mark, name, user_id),
            functools.partial(self._floor, client, name),
            announce,
        )

    def _floor(self, client: Client, name: str, position: Position) -> None:
        if name in self.registry.channels and client in self.registry.channels[name].subscribers:
            self.registry.floors.setdefault(name, {})[client] = position

    def _silent_mark(self, name: str, user_id: str | None) -> Position | None:
        """The earliest confirmed position of `user_id`'s subscriptions to `name` on this
        node whose connections stopped answering pings: a user whose old connection is
        half-open, not given up yet, catches up from there rather than getting the rewind."""
        channel = self.registry.channels.get(name)
        if user_id is None or channel is None:
            return None
        found: Position | None = None
        for socket in channel.subscribers:
            session = cast(Client, socket).session
            history = session.history
            if history is None or not history.unanswered or session.active:
                continue
            mark = history.marks.get(name)
            member = session.channels.get(name)
            if member is None and session.user is not None:
                member = session.user.user_id
            if mark is None or member != user_id:
                continue
            position = mark.confirmed
            if found is None or (position.epoch == found.epoch and position.serial < found.serial):
                found = position
        return found

    def _add_after_replay(self, client: Client, name: str) -> None:
        if name in client.session.channels:  # not left meanwhile (a kick, a close)
            self.registry.add(name, client)

    def _member(self, client: Client, name: str, command: Subscribe) -> Member:
        if command.channel_data is None:
            # pusher-js >= 7.4 joins as the signed-in user when the auth has no channel_data.
            user = client.session.user
            if user is None:
                raise SubscriptionError(name, "Presence channels need channel_data or a signin")
            try:
                check_user_info(user.user_info, self.config.max_presence_user_info_bytes)
            except MemberDataError as exc:
                raise SubscriptionError(name, f"Signed-in user_data: {exc}") from None
            return Member(user.user_id, user.user_info)
        try:
            return parse_channel_data(
                command.channel_data, self.config.max_presence_user_info_bytes
            )
        except MemberDataError as exc:
            raise SubscriptionError(name, f"Invalid channel_data: {exc}") from None

    async def _join_presence(self, client: Client, name: str, member: Member) -> None:
        counts = await self.adapter.channel_counts(self.id, name)
        if counts.user_count >= self.config.max_presence_members:
            members = await self.adapter.presence_members(self.id, name)
            if member.user_id not in members:
                raise SubscriptionLimitError(
                    name,
                    f"Presence channel {name} is full ({self.config.max_presence_members} members)",
                )
        client.session.subscribing(name, member.user_id)
        join = await self.adapter.presence_join(
            self.id, name, client.socket_id, member.user_id, member.user_info
        )
        change = await self.adapter.subscribe(self.id, name, client.socket_id)
        client.session.joined(name)
        if client.log is not None:
            client.log.debug("joined %s as user %s", name, member.user_id)
        succeeded = frames.presence_subscription_succeeded(name, join.members)
        announce = functools.partial(self._announce, client, name, succeeded)
        rule = self.history.rule_for(name) if self.history is not None else None
        if rule is None:
            self.registry.add(name, client)
            await announce()
        else:
            await self._replay(client, name, rule, member.user_id, announce)
        self._count_changed(name, change)
        if join.first_for_user:
            info = join.members.get(member.user_id)
            self.publish(name, frames.member_added(name, member.user_id, info), client.socket_id)
        if join.transition is Transition.ARRIVED:
            self.observer.member_added(self.id, name, member.user_id)

    def unsubscribe(self, client: Client, command: Unsubscribe) -> Handled:
        if command.channel not in client.session.channels:
            return None  # hosted Pusher ignores it; pusher-js may unsubscribe twice
        return self._leave(client, command.channel)

    def _leave(self, client: Client, name: str, closed: bool = False) -> Coroutine[Any, Any, None]:
        if not closed and self.history is not None:  # a drop at close replaces it instead
            self.history.unsubscribed(client.session, name)
        user_id = client.session.leave(name)
        self.registry.remove(name, client)
        if self._replaying is not None:
            self._replaying.left(client.socket_id, name)  # a replay still under way stops
        if client.log is not None:
            client.log.debug("left %s", name)
        return self._left(client.socket_id, name, user_id)

    async def _left(self, socket_id: str, name: str, user_id: str | None) -> None:
        if user_id is not None and await self.adapter.presence_leave(
            self.id, name, socket_id, user_id
        ):
            self.publish(name, frames.member_removed(name, user_id), None)
            self.observer.member_removed(self.id, name, user_id)
        self._count_changed(name, await self.adapter.unsubscribe(self.id, name, socket_id))

    # --- subscription counts and occupancy -----------------------------------------------

    def _count_changed(self, name: str, change: CountChange) -> None:
        """Report occupancy, then tell a non-presence channel its new subscription count
        (§4b), at most every 5 s while it has more than 100 subscribers."""
        self.observer.subscriptions_changed(self.id, name, change.count)
        if change.transition is Transition.ARRIVED:
            self.observer.channel_occupied(self.id, name)
        elif change.transition is Transition.LEFT:
            self.observer.channel_vacated(self.id, name)
        if not self.config.subscription_count or channel_type(name).is_presence:
            return
        count = change.count
        if count > COUNT_THROTTLE_ABOVE:
            last = self._count_sent.get(name, 0.0)
            if time.monotonic() - last < COUNT_THROTTLE_SECONDS:
                self._count_pending[name] = count
                return
        self._send_count(name, count)

    def _send_count(self, name: str, count: int) -> None:
        self._count_pending.pop(name, None)
        if count > COUNT_THROTTLE_ABOVE:
            self._count_sent[name] = time.monotonic()
        else:
            self._count_sent.pop(name, None)
        if count:
            self.publish(name, frames.subscription_count(name, count), None)
        self.observer.subscription_count(self.id, name, count)

    def tick(self) -> None:
        """Called by the server's sweep: send subscription counts held back by the throttle."""
        if not self._count_pending:
            return
        now = time.monotonic()
        for name, count in list(self._count_pending.items()):
            if now - self._count_sent.get(name, 0.0) >= COUNT_THROTTLE_SECONDS:
                self._send_count(name, count)

    # --- sign-in, users and watchlists ---------------------------------------------------

    def signin(self, client: Client, command: Signin) -> Handled:
        signed = user_string_to_sign(client.socket_id, command.user_data)
        problem = auth_problem(
            self.config.key, self.config.secret, signed, command.auth, self.previous_secret()
        )
        if problem is not None:
            raise SigninFailed(problem)
        try:
            user, cut = parse_user_data(command.user_data, self.config.max_watchlist)
        except MemberDataError as exc:
            raise SigninFailed(f"Invalid user_data: {exc}") from None
        session = client.session
        previous = session.user
        if previous is not None and previous.user_id != user.user_id:
            raise SigninFailed(
                f"Connection is already signed in as user {previous.user_id}; "
                "it cannot sign in as another user"
            )
        if previous is not None:
            self._unwatch(client, previous)
        session.signed_in(user)
        if client.log is not None:
            client.log.debug("signed in as user %s", user.user_id)
        self.users.setdefault(user.user_id, {})[client] = None
        return self._signed_in(client, user, cut, first=previous is None)

    async def _signed_in(self, client: Client, user: SignedInUser, cut: bool, first: bool) -> None:
        transition = Transition.NONE
        if first:
            transition = await self.adapter.user_join(self.id, user.user_id, client.socket_id)
        client.send_message(frames.signin_success(user.user_data))
        if transition is not Transition.NONE:
            self.adapter.announce_user(self.id, user.user_id, True)
        if transition is Transition.ARRIVED:
            self.observer.user_online(self.id, user.user_id)
        if self.config.watchlist and user.watchlist:
            for watched in user.watchlist:
                self.watchers.setdefault(watched, {})[client] = None
            online = await self.adapter.users_online(self.id, user.watchlist)
            states = (
                ("online", [u for u in user.watchlist if u in online]),
                ("offline", [u for u in user.watchlist if u not in online]),
            )
            client.send_message(frames.watchlist_events([s for s in states if s[1]]))
        if cut and self.config.watchlist:
            client.report(
                WatchlistLimitExceeded(
                    f"Watchlist limit exceeded: only the first {self.config.max_watchlist} "
                    "user ids are watched"
                )
            )

    async def _sign_out(self, client: Client, user: SignedInUser) -> None:
        self._unwatch(client, user)
        local = self.users.get(user.user_id)
        if local is not None:
            local.pop(client, None)
            if not local:
                del self.users[user.user_id]
        if await self.adapter.user_leave(self.id, user.user_id, client.socket_id):
            self.adapter.announce_user(self.id, user.user_id, False)
            self.observer.user_offline(self.id, user.user_id)

    def _unwatch(self, client: Client, user: SignedInUser) -> None:
        for watched in user.watchlist:
            watchers = self.watchers.get(watched)
            if watchers is not None:
                watchers.pop(client, None)
                if not watchers:
                    del self.watchers[watched]

    def user_announced(self, user_id: str, online: bool) -> None:
        """A user came online or went offline somewhere in the cluster: tell local watchers."""
        watchers = self.watchers.get(user_id)
        if watchers:
            payload = frames.watchlist_events([("online" if online else "offline", [user_id])])
            frame = text_frame(payload)
            for watcher in watchers:
                watcher.send(frame)

    # --- a dead node's leftovers (reported here by the Adapter, once per cluster) ---------

    def remote_member_left(self, channel: str, user_id: str) -> None:
        self.publish(channel, frames.member_removed(channel, user_id), None)
        self.observer.member_removed(self.id, channel, user_id)

    def remote_channel_left(self, channel: str) -> None:
        self.observer.channel_vacated(self.id, channel)

    def remote_user_left(self, user_id: str) -> None:
        self.adapter.announce_user(self.id, user_id, False)
        self.observer.user_offline(self.id, user_id)

    def terminate_user(self, user_id: str) -> None:
        """Close every connection signed in as `user_id`, on every node."""
        self.adapter.terminate_user(self.id, user_id)

    def connection_count(self) -> int:
        return len(self.clients)

    def terminate_local(self, user_id: str) -> int:
        clients = list(self.users.get(user_id, ()))
        for client in clients:
            client.report(UserTerminated())
        return len(clients)

    # --- cluster: this node's own state, read by a distributed Adapter (AppPeer) ---------
    # A rebuild after an outage writes back exactly this; no Adapter keeps its own copy.

    def local_presence(self) -> Iterator[tuple[str, str, str]]:
        """(channel, socket id, user id) of every presence membership on this node."""
        for client in self.clients.values():
            for name, user_id in client.session.channels.items():
                if user_id is not None:
                    yield name, client.socket_id, user_id

    def local_users(self) -> Iterator[tuple[str, str]]:
        """(user id, socket id) of every signed-in connection on this node."""
        for user_id, clients in self.users.items():
            for client in clients:
                yield user_id, client.socket_id

    # --- kick (extension) ----------------------------------------------------------------

    def kick(self, name: str, user_id: str | None, socket_id: str | None) -> None:
        """Remove one socket's or one user's subscription to `name`, on every node."""
        self.adapter.kick(self.id, name, user_id, socket_id)

    def kick_local(self, name: str, user_id: str | None, socket_id: str | None) -> None:
        if socket_id is not None:
            found = self.clients.get(socket_id)
            targets = [found] if found is not None else []
        else:  # all connections, not just the registry's: a subscribe may still be under way
            targets = [c for c in self.clients.values() if c.session.member_of(name, user_id)]
        for client in targets:
            # Queued like a message of that client, so a kick never overtakes a subscribe
            # still waiting for the adapter (which would then complete after it).
            client.run_when_idle(functools.partial(self._kick_now, client, name))

    def _kick_now(self, client: Client, name: str) -> Handled:
        if name not in client.session.channels:
            return None
        client.send_message(frames.kicked(name, "You were removed from this channel by the app"))
        return self._leave(client, name)

    # --- events --------------------------------------------------------------------------

    def client_event(self, client: Client, command: ClientEvent) -> Handled:
        """Relay a client event to the channel's other subscribers. Called once per relayed
        event, so the checks read each attribute once and the publish is inlined."""
        event, name, data = command
        config = self.config
        if not config.client_events:
            raise ClientEventRejected("Client events are not enabled for this app")
        if len(event) > MAX_EVENT_NAME:
            raise ClientEventRejected(f"Event name is longer than {MAX_EVENT_NAME} characters")
        session = client.session
        channels = session.channels
        if name not in channels:
            raise ClientEventRejected(f"Client event rejected: not subscribed to {name[:200]}")
        kind = channel_type(name).kind
        if kind is not _PRIVATE and kind is not _PRESENCE:
            raise ClientEventRejected(
                "Client events are only allowed on private and presence channels "
                "(not on public or encrypted ones)"
            )
        if len(data) > config.max_event_payload_bytes:
            raise ClientEventRejected(
                f"Client event data is larger than {config.max_event_payload_bytes} bytes"
            )
        per_second = config.max_client_events_per_second
        if per_second and not session.take_client_event_token(per_second, time.monotonic()):
            raise ClientEventRateLimited()
        user_id = channels[name]
        payload = frames.channel_event(event, name, data, user_id)
        history = self.history
        rule = history.rule_for(name) if history is not None else None
        stored: Handled = None
        if rule is not None and rule.client_events:
            assert history is not None
            self.stats.broadcasts_total += 1
            stored = history.record(
                name, rule, payload, client.socket_id, self._publish_tagged, best_effort=True
            )
        else:  # `publish`, inlined
            self.stats.broadcasts_total += 1
            self.adapter.publish(self.id, name, text_frame(payload), client.socket_id)
        self.observer.client_event(self.id, name, event, data, client.socket_id, user_id)
        return stored

    def trigger(
        self, event: str, channels: Iterable[str], data: str, except_socket_id: str | None
    ) -> Coroutine[Any, Any, None] | None:
        """A server event (HTTP API) on each channel: one encode per channel. Returns a
        coroutine when an event must still be stored (history in Redis): the trigger is
        answered only once it is done, so the event is in history on every node by then."""
        history = self.history
        storing: list[Coroutine[Any, Any, None]] | None = None
        app_id, stats, publish = self.id, self.stats, self.adapter.publish
        api_event = self.observer.api_event
        channel_event = frames.channel_event
        for name in channels:
            payload = channel_event(event, name, data)
            # channel_type(name).cache, with a cheaper test first for most names
            if CACHE_MARK in name and name.startswith(CACHE_PREFIXES):
                cached = CachedEvent(payload, event, data, self.config.cache_ttl)
                self.adapter.cache_put(app_id, name, cached)
            rule = history.rule_for(name) if history is not None else None
            stats.broadcasts_total += 1
            if rule is None:  # `self.publish`, inlined: this loop is the trigger's hot path
                publish(app_id, name, text_frame(payload), except_socket_id)
            else:
                assert history is not None
                work = history.record(name, rule, payload, except_socket_id, self._publish_tagged)
                if work is not None:
                    storing = [work] if storing is None else [*storing, work]
            api_event(app_id, name, event, data)
        return None if storing is None else _in_order(storing)

    def publish(self, channel: str, payload: bytes, except_socket_id: str | None) -> None:
        self.stats.broadcasts_total += 1
        self.adapter.publish(self.id, channel, text_frame(payload), except_socket_id)

    def _publish_tagged(self, channel: str, tagged: bytes, except_socket_id: str | None) -> None:
        """A history channel's event, tagged with its position (`pyserver.history.live`)."""
        self.adapter.publish(self.id, channel, tagged, except_socket_id)

    def resume(self, client: Client, command: Resume) -> Handled:
        """`pusher:resume` (the anonymous catch-up snippet, docs/history.md)."""
        if self.history is None:
            return None
        return self.history.resume(client.session, command.token)

    def latest(self, channel: str) -> Position | None:
        """The newest history position written to this node's subscribers of `channel`."""
        return self.registry.last(channel)

    # --- cache channels ------------------------------------------------------------------

    async def _send_cached(self, client: Client, name: str) -> None:
        if not channel_type(name).cache:
            return
        entry = await self.adapter.cache_get(self.id, name)
        if entry is not None:
            client.send_message(entry.payload)
        else:
            client.send_message(frames.cache_miss(name))
            self.observer.cache_miss(self.id, name)


def _in_order(work: list[Coroutine[Any, Any, None]]) -> Handled:
    """One coroutine running `work` in order, or None when there is none."""
    if not work:
        return None
    if len(work) == 1:
        return work[0]
    return _run_all(work)


async def _run_all(work: list[Coroutine[Any, Any, None]]) -> None:
    for coroutine in work:
        await coroutine
