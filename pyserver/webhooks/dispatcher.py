"""Which app events become webhooks, for which targets, when (`spec/protocol.md` §12).

`WebhookDispatcher` listens to every app (it is an `AppObserver`) and hands signed
deliveries to the `WebhookSender`.

Invariants:
- `channel_vacated`, `member_removed` and `user_offline` wait `delay` seconds and are sent
  only if the Adapter's pending-leave marker is still there: a return within the delay takes
  the marker (and is not reported as an arrival), so a page reload sends nothing, on one
  node or across a cluster. The timers and the theory: `pyserver.cluster.leaves`.
- `cache_miss` is sent at most once per channel per `delay` window.
- Each target gets only its `event_types` and, when set, channels under its `channel_prefix`.
- With `webhook_batch_ms`, events of one app for one target are collected for that long (or
  until `webhook_batch_max`) into one request; apps never share a request.
- `time_ms` is the creation time of the (first) event and survives retries.
- Time comes from one `Clock` (the event loop and the system clock unless a test passes a
  fake one), so the dispatcher runs without sockets or real waiting in tests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

from pyserver.channels.observer import AppObserver
from pyserver.cluster.adapter import Adapter
from pyserver.cluster.leaves import Cancellable, LeaveDebouncer, LeaveKey
from pyserver.config import AppConfig, WebhookTarget
from pyserver.webhooks import payloads
from pyserver.webhooks.payloads import WebhookEvent
from pyserver.webhooks.sender import Delivery, WebhookSender


class Clock:
    """The dispatcher's time: timers on the running event loop, readings of the system."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay, callback)

    def time(self) -> float:
        """Wall-clock seconds (webhook `time_ms`)."""
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class _Batch:
    __slots__ = ("events", "handle", "time_ms")

    def __init__(self, time_ms: int) -> None:
        self.time_ms = time_ms
        self.events: list[WebhookEvent] = []
        self.handle: Cancellable | None = None


class WebhookDispatcher(AppObserver):
    def __init__(
        self,
        apps: Mapping[str, AppConfig],
        sender: WebhookSender,
        delay: float,
        adapter: Adapter,
        clock: Clock | None = None,
    ) -> None:
        self.apps = {app_id: app for app_id, app in apps.items() if app.webhooks}
        self.sender = sender
        self.delay = delay
        self.adapter = adapter
        self.clock = clock or Clock()
        self.leaves = LeaveDebouncer(
            delay,
            adapter.take_pending_leave,
            adapter.completes_synchronously,
            self.clock.call_later,
        )
        self._cache_misses: dict[tuple[str, str], float] = {}
        self._batches: dict[tuple[str, int], _Batch] = {}
        self._closing = False
        """Set by `close`: leaves and batches are sent at once, no timer would fire any more."""

    # --- AppObserver ---------------------------------------------------------------------

    def channel_occupied(self, app_id: str, channel: str) -> None:
        self._emit(app_id, channel, payloads.channel_event("channel_occupied", channel))

    def channel_vacated(self, app_id: str, channel: str) -> None:
        event = payloads.channel_event("channel_vacated", channel)
        self._leave_later(LeaveKey.for_channel(app_id, channel), app_id, channel, event)

    def member_added(self, app_id: str, channel: str, user_id: str) -> None:
        self._emit(app_id, channel, payloads.member_event("member_added", channel, user_id))

    def member_removed(self, app_id: str, channel: str, user_id: str) -> None:
        event = payloads.member_event("member_removed", channel, user_id)
        self._leave_later(LeaveKey.for_member(app_id, channel, user_id), app_id, channel, event)

    def client_event(
        self,
        app_id: str,
        channel: str,
        event: str,
        data: str,
        socket_id: str,
        user_id: str | None,
    ) -> None:
        if app_id in self.apps:
            self._emit(
                app_id, channel, payloads.client_event(channel, event, data, socket_id, user_id)
            )

    def cache_miss(self, app_id: str, channel: str) -> None:
        if app_id not in self.apps:
            return
        now = self.clock.monotonic()
        if now - self._cache_misses.get((app_id, channel), -1e9) < max(self.delay, 1.0):
            return
        self._cache_misses[(app_id, channel)] = now
        if len(self._cache_misses) > 10_000:
            self._cache_misses = {k: t for k, t in self._cache_misses.items() if now - t < 60}
        self._emit(app_id, channel, payloads.channel_event("cache_miss", channel))

    def subscription_count(self, app_id: str, channel: str, count: int) -> None:
        if app_id in self.apps:
            self._emit(app_id, channel, payloads.subscription_count(channel, count))

    def user_online(self, app_id: str, user_id: str) -> None:
        self._emit(app_id, None, payloads.user_event("user_online", user_id))

    def user_offline(self, app_id: str, user_id: str) -> None:
        event = payloads.user_event("user_offline", user_id)
        self._leave_later(LeaveKey.for_user(app_id, user_id), app_id, None, event)

    # --- debounce ------------------------------------------------------------------------

    def _leave_later(
        self, key: LeaveKey, app_id: str, channel: str | None, event: WebhookEvent
    ) -> None:
        if app_id not in self.apps:
            return
        created = self._now_ms()
        self.leaves.leave(key, lambda: self._emit(app_id, channel, event, created))

    # --- delivery ------------------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock.time() * 1000)

    def _emit(
        self, app_id: str, channel: str | None, event: WebhookEvent, time_ms: int | None = None
    ) -> None:
        app = self.apps.get(app_id)
        if app is None:
            return
        created = time_ms if time_ms is not None else self._now_ms()
        for index, target in enumerate(app.webhooks):
            if not _wants(target, event["name"], channel):
                continue
            if app.webhook_batch_ms:
                self._add_to_batch(app, index, event, created)
            else:
                self._send(app, target, created, [event])

    def _add_to_batch(self, app: AppConfig, index: int, event: WebhookEvent, now: int) -> None:
        if self._closing:
            self._send(app, app.webhooks[index], now, [event])
            return
        key = (app.id, index)
        batch = self._batches.get(key)
        if batch is None:
            batch = self._batches[key] = _Batch(now)
            batch.handle = self.clock.call_later(
                app.webhook_batch_ms / 1000, lambda: self._flush_batch(key)
            )
        batch.events.append(event)
        if len(batch.events) >= app.webhook_batch_max:
            self._flush_batch(key)

    def _flush_batch(self, key: tuple[str, int]) -> None:
        batch = self._batches.pop(key, None)
        if batch is None:
            return
        if batch.handle is not None:
            batch.handle.cancel()
        app = self.apps[key[0]]
        self._send(app, app.webhooks[key[1]], batch.time_ms, batch.events)

    def _send(
        self, app: AppConfig, target: WebhookTarget, time_ms: int, events: list[WebhookEvent]
    ) -> None:
        raw = payloads.body(time_ms, events)
        headers = payloads.headers(app.key, app.secret, raw, target.headers)
        expires_at = time_ms / 1000 + self.sender.retry_window
        self.sender.submit(Delivery(target.url, raw, headers, app.id, expires_at))

    async def close(self, grace: float) -> None:
        """Send pending leaves and batches now, then let the sender flush within `grace`.
        From here on every event is sent at once (`_closing`)."""
        deadline = time.monotonic() + grace
        self._closing = True
        await self.leaves.flush(grace)  # the Adapter answers each leave
        for key in list(self._batches):
            self._flush_batch(key)
        await self.sender.close(max(0.0, deadline - time.monotonic()))


def _wants(target: WebhookTarget, name: str, channel: str | None) -> bool:
    if name not in target.event_types:
        return False
    prefix = target.channel_prefix
    return not prefix or (channel is not None and channel.startswith(prefix))
