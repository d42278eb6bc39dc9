"""The run-time apps of this node, kept equal to the app directory (`pyserver.apps.directory`).

`LiveApps` owns the two dictionaries every reader shares: `by_id` (the HTTP API, metrics,
the console) and `by_key` (the WebSocket handshake). The directory calls `app_changed` and
`app_removed`; this module turns those into what a change means for the apps running here
(docs/apps.md, "What a change does"):

- a new app: an `App` is made (or the one of an earlier app with this id is taken up
  again), attached to the Adapter and put in both dictionaries: it works at once;
- a changed app: its `App.config` is replaced; limits and switches are read from it on each
  action, so they apply to new actions (changed history rules apply to new subscriptions and
  events; what is stored stays; replays under way finish as they started,
  `App.use_history`); a new key replaces the old one in `by_key`; a
  rotated secret comes with the previous one and its expiry (`App.rotation`), accepted for
  signatures until then;
- disabled: the app stays in both dictionaries (a handshake gets 4003, an API call 403) and
  its open connections are closed with 4003;
- removed: it leaves both dictionaries (4001, 404, like an unknown app) and its open
  connections are closed with 4001. Its `App` object is kept aside (not served), so leaves
  still in flight complete and a later app with the same id continues with it.

Invariants:
- Readers never see an app in one dictionary and not the other, except during one
  synchronous call here (the event loop runs nothing else meanwhile).
- `on_change` runs after every change (the server recomputes what depends on the set of
  apps: its sweep period, the webhook dispatcher's apps).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from pyserver.apps.records import StoredApp
from pyserver.channels.app import App
from pyserver.channels.observer import AppObserver
from pyserver.cluster.adapter import Adapter
from pyserver.config import AppConfig
from pyserver.history.live import AppHistory, NodeHistory
from pyserver.protocol.errors import AppDisabled, AppNotFound, PusherError

log = logging.getLogger("pyserver.apps")


class LiveApps:
    def __init__(
        self,
        adapter: Adapter,
        observer: AppObserver,
        on_change: Callable[[], None] = lambda: None,
        history: NodeHistory | None = None,
    ) -> None:
        self.adapter = adapter
        self.observer = observer
        self.on_change = on_change
        self.history = history
        """This node's channel history: each app gets its part for its rules."""
        self.by_id: dict[str, App] = {}
        self.by_key: dict[str, App] = {}
        self._retired: dict[str, App] = {}
        """Apps removed from service, by id, kept for leaves in flight and for a re-add."""

    def configs(self) -> list[AppConfig]:
        return [app.config for app in self.by_id.values()]

    def add_config(self, config: AppConfig) -> App:
        """Serve an app of the configuration (`app_store = "config"`), at construction."""
        app = App(config, self.adapter, self.observer, self._history(config))
        self.by_id[config.id] = app
        self.by_key[config.key] = app
        return app

    # --- AppListener -----------------------------------------------------------------------

    def app_changed(self, stored: StoredApp) -> None:
        config = stored.config
        app = self.by_id.get(config.id)
        rotation = (stored.previous_secret, stored.previous_secret_expires_at)
        if app is None:
            app = self._retired.pop(config.id, None)
            if app is None:
                app = App(config, self.adapter, self.observer, self._history(config))
            else:
                if app.config.history != config.history:
                    app.use_history(self._history(config))
                app.config = config
            app.rotation = rotation
            self.by_id[config.id] = app
            self._take_key(app, config.key)
            log.info("app store: serving app %s", config.describe())
            self.on_change()
            return
        before = app.config
        if before == config and app.rotation == rotation:
            return
        if before.history != config.history:
            app.use_history(self._history(config))
        app.config = config
        app.rotation = rotation
        if before.key != config.key:
            if self.by_key.get(before.key) is app:
                del self.by_key[before.key]
            self._take_key(app, config.key)
        if before.secret != config.secret:
            log.info("app store: app %s has a new secret", config.id)
        if before.enabled and not config.enabled:
            log.info("app store: app %s is disabled: closing its connections (4003)", config.id)
            self._close_all(app, AppDisabled())
        elif config.enabled and not before.enabled:
            log.info("app store: app %s is enabled", config.id)
        self.on_change()

    def app_removed(self, app_id: str) -> None:
        app = self.by_id.pop(app_id, None)
        if app is None:
            return
        if self.by_key.get(app.config.key) is app:
            del self.by_key[app.config.key]
        self._retired[app_id] = app
        log.info("app store: app %s was removed: closing its connections (4001)", app_id)
        self._close_all(
            app, AppNotFound(f"Application with key '{app.config.key[:100]}' does not exist")
        )
        self.on_change()

    # --- helpers ---------------------------------------------------------------------------

    def _history(self, config: AppConfig) -> AppHistory | None:
        if self.history is None:
            return None
        return self.history.for_app(config.id, config.history)

    def _take_key(self, app: App, key: str) -> None:
        other = self.by_key.get(key)
        if other is not None and other is not app and self.by_id.get(other.id) is other:
            # The key moved from another app in the same change set; that app's own change
            # (applied next, or already) gives it its new key.
            log.debug("app store: key of app %s now belongs to app %s", other.id, app.id)
        self.by_key[key] = app

    @staticmethod
    def _close_all(app: App, error: PusherError) -> None:
        for client in list(app.clients.values()):
            client.report(error)
