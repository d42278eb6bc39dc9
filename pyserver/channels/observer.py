"""What happens in an app, told to whoever listens: webhooks, metrics, the debug console.

`App` calls an `AppObserver` at each lifecycle moment; the methods return at once (a
listener that does I/O queues the work). `Observers` fans one call out to several listeners.

Invariants:
- `channel_occupied` / `channel_vacated` follow the subscription count crossing 0;
  `member_added` / `member_removed` follow a user's first and last connection in a presence
  channel; `user_online` / `user_offline` a user's first and last signed-in connection.
- Debouncing (a reload within 3 s sends nothing) is the listener's business, not the app's.
"""

from __future__ import annotations

from collections.abc import Callable


class AppObserver:
    """Base listener: every method does nothing, so listeners override only what they need."""

    def channel_occupied(self, app_id: str, channel: str) -> None:
        pass

    def channel_vacated(self, app_id: str, channel: str) -> None:
        pass

    def member_added(self, app_id: str, channel: str, user_id: str) -> None:
        pass

    def member_removed(self, app_id: str, channel: str, user_id: str) -> None:
        pass

    def client_event(
        self,
        app_id: str,
        channel: str,
        event: str,
        data: str,
        socket_id: str,
        user_id: str | None,
    ) -> None:
        pass

    def cache_miss(self, app_id: str, channel: str) -> None:
        pass

    def subscription_count(self, app_id: str, channel: str, count: int) -> None:
        pass

    def subscriptions_changed(self, app_id: str, channel: str, count: int) -> None:
        """A local connection subscribed or unsubscribed; `count` is the cluster total."""

    def user_online(self, app_id: str, user_id: str) -> None:
        pass

    def user_offline(self, app_id: str, user_id: str) -> None:
        pass

    def api_event(self, app_id: str, channel: str, event: str, data: str) -> None:
        """A server event triggered through the HTTP API (for the debug console)."""


class Observers(AppObserver):
    """Several listeners behind one.

    Each method is bound per instance to exactly the listeners that override it: none (a
    no-op), one (its own bound method, no extra call) or several (a small loop). So an event
    nobody listens to costs one call of an empty function.
    """

    def __init__(self, *observers: AppObserver) -> None:
        self.observers: list[AppObserver] = []
        for observer in observers:
            self.add(observer)
        self._bind()

    def add(self, observer: AppObserver) -> None:
        self.observers.append(observer)
        self._bind()

    def _bind(self) -> None:
        for name in _EVENTS:
            targets = [
                getattr(o, name)
                for o in self.observers
                if getattr(type(o), name) is not getattr(AppObserver, name)
            ]
            setattr(self, name, _fan_out(targets))


def _fan_out(targets: list[Callable[..., None]]) -> Callable[..., None]:
    if not targets:
        return _nothing
    if len(targets) == 1:
        return targets[0]

    def call(*args: object) -> None:
        for target in targets:
            target(*args)

    return call


def _nothing(*args: object) -> None:
    pass


_EVENTS = [n for n in vars(AppObserver) if not n.startswith("_")]
