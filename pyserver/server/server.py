"""The server: apps, the listening socket, the write batcher and the activity sweep.

Invariants:
- One process, one event loop; connections are callback-driven protocols (design rule 5).
- One timer sweep checks connections' activity; no timer per connection. It visits every
  HTTP connection, and each WebSocket connection only at the ticks it can be pinged or
  closed at (`ServerState.sweep`, a timing wheel).
- `ServerState.ping_after` and `_close_after` count sweep ticks; when they change, every
  WebSocket connection is revisited at the next tick (`ServerState.revisit_all`, which
  also sets `ping_after`: the state holds the one copy the sweep and `answered` use).
- Socket ids are unique among an app's live connections and match `^\\d+\\.\\d+$`.
- Shutdown stops accepting, tells every client 4200 (paced), then closes what is left.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import resource
import socket
import ssl
import time
from collections.abc import Iterable

from pyserver import tasks
from pyserver.api.routes import Api
from pyserver.apps.directory import AppDirectory
from pyserver.apps.factory import seed_apps, store_for
from pyserver.channels.app import App
from pyserver.channels.observer import Observers
from pyserver.cluster.adapter import Adapter
from pyserver.cluster.app_changes import ChangeListener
from pyserver.cluster.local import LocalAdapter
from pyserver.cluster.redis_connect import RedisLink
from pyserver.config import Settings
from pyserver.console.console import Console
from pyserver.history.live import HistoryBus, MemoryMarks, NodeHistory, SharedMarks
from pyserver.history.memory import MemoryHistoryStore
from pyserver.http import Response, json_response
from pyserver.metrics import Metrics, resident_bytes
from pyserver.protocol.errors import ServerShuttingDown
from pyserver.server.capacity import Admission, Budget, open_descriptors
from pyserver.server.flow import WriteBatcher
from pyserver.server.http_connection import HttpConnection
from pyserver.server.listener import Acceptor, bound_socket, inherited
from pyserver.server.live_apps import LiveApps
from pyserver.server.state import ServerState
from pyserver.webhooks.dispatcher import WebhookDispatcher
from pyserver.webhooks.queues import make_queue
from pyserver.webhooks.sender import WebhookSender

log = logging.getLogger("pyserver")

TLS_HINT_EVERY = 60.0
"""Seconds between two warnings about TLS clients on a plain port (one per burst of them)."""
OVER_CAPACITY_GRACE = 5.0
"""Seconds a connection accepted over capacity may take to upgrade and read its 4100."""


class Server:
    def __init__(self, settings: Settings, adapter: Adapter | None = None) -> None:
        self.settings = settings
        self.adapter = adapter or make_adapter(settings)
        self.observers = Observers()
        self.webhooks: WebhookDispatcher | None = None
        self.history = make_history(settings, self.adapter)
        self.live = LiveApps(self.adapter, self.observers, self._apps_changed, self.history)
        """The apps served, shared by every reader: `by_id` (API, metrics, console) and
        `by_key` (handshakes); kept equal to the directory's."""
        self.apps_by_id: dict[str, App] = self.live.by_id
        self.apps_by_key: dict[str, App] = self.live.by_key
        self.from_store = settings.app_store != "config"
        if not self.from_store:
            for config in settings.apps:
                self.live.add_config(config)
        self.directory = AppDirectory(
            store_for(settings),
            self.live,
            settings.app_store_refresh,
            seed=seed_apps(settings),
        )
        """The app store and this node's copy of it (docs/apps.md): `directory.store` to read
        or change apps, then `await directory.changed()` to apply a change here at once and
        announce it to the other nodes."""
        self.app_changes: ChangeListener | None = None
        """With a database store and the Redis adapter, the announcements of app changes
        (`cluster.app_changes.ChangeListener`)."""
        if self.from_store and settings.adapter == "redis":
            # On the adapter's link (started and closed by the adapter): its subscriber and
            # its command pool, not a second client of its own (`RedisLink.most_connections`
            # counts that link only).
            self.app_changes = ChangeListener(
                settings, self.directory.refresh_soon, link=_redis_link(self.adapter)
            )
            self.directory.announce = self.app_changes.announce
        self.started_at = time.time()
        self.metrics = Metrics(
            settings.metrics_prefix,
            self.apps_by_id,
            self.adapter,
            self.started_at,
            lambda: self.webhooks,
            history=self.history,
        )
        if self.from_store:
            self.metrics.app_store = self.directory
        link = _redis_link(self.adapter)
        shared = link is not None and settings.console  # the cluster's stats, feed
        self.console = Console(
            self.apps_by_id,
            settings.console_token,
            self.started_at,
            redis=link.client if shared and link is not None else None,
            redis_prefix=settings.redis_prefix,
            node=str(getattr(self.adapter, "node", "") or ""),
            link=link if shared else None,
        )
        if settings.console:
            self.observers.add(self.console)
        directory = self.directory
        self.console.apps_admin.attach(  # the Apps page: changes applied here at once
            directory.store,
            settings.secret_rotation_grace,
            applied=lambda _app_id: directory.changed(),
            unusable=lambda: None if directory.opened else directory.problem or "not open",
        )
        self.api = Api(
            self.apps_by_id,
            self.apps_by_key,
            settings.max_auth_skew,
            self._health,
            console=self.console.handle if settings.console else None,
            on_trigger=self.metrics.broadcast_latency.observe,
            protected=settings.protected_mode and bool(settings.default_secret_apps()),
            missed_id=self.directory.missed_id,
            missed_key=self.directory.missed_key,
        )
        self.state = ServerState(
            settings, self.apps_by_key, self.api.handle, self.adapter, self.hint_tls_on_plain_port
        )
        """All a connection sees of the server (and where admission counts connections)."""
        self.state.missed_key = self.directory.missed_key
        self._tls_hint_at = -math.inf
        self._servers: list[asyncio.Server] = []
        self._metrics_server: asyncio.Server | None = None
        self._sweep_handle: asyncio.TimerHandle | None = None
        self._close_after = 0
        self._set_tick()

    def _set_tick(self) -> None:
        """The sweep's period, from the timeouts of the settings and of the apps served."""
        settings = self.settings
        liveness = min(settings.activity_timeout, settings.pong_timeout) / 3
        authz = [a.authorized_connections_timeout / 2 for a in self.live.configs()]
        self.tick_seconds = min(5.0, max(0.25, min([liveness, *filter(None, authz)])))
        counts = self.state.ping_after, self._close_after
        ping_after = max(1, math.ceil(settings.activity_timeout / self.tick_seconds))
        self._http_close_after = max(1, math.ceil(settings.http_idle_timeout / self.tick_seconds))
        self._close_after = ping_after + max(
            1, math.ceil(settings.pong_timeout / self.tick_seconds)
        )
        if (ping_after, self._close_after) != counts:
            self.state.revisit_all(ping_after)  # schedules counted with the old ones

    def _apps_changed(self) -> None:
        """An app of the store was added, changed or removed."""
        self._set_tick()
        if self.webhooks is not None:
            self.webhooks.apps = {c.id: c for c in self.live.configs() if c.webhooks}

    def _with_webhooks(self) -> bool:
        """Whether this node sends webhooks: an app has some, or may get some (a store)."""
        return self.from_store or any(app.webhooks for app in self.settings.apps)

    # --- lifecycle -------------------------------------------------------------------------

    async def start(self, sockets: Iterable[socket.socket] | None = None) -> list[str]:
        """Listen (on `sockets` if given, else host:port); return the addresses listened on."""
        loop = asyncio.get_running_loop()
        self.state.batcher = WriteBatcher(loop)
        await self.adapter.start()
        await self.directory.start()  # the apps of a database store (retried if it is away)
        if self.app_changes is not None:
            await self.app_changes.start()
        if self._with_webhooks():
            self._start_webhooks()
        tls = self._tls_context()
        if sockets:
            for sock in sockets:
                self._servers.append(
                    await loop.create_server(
                        self.protocol_factory, sock=sock, backlog=4096, ssl=tls
                    )
                )
        else:
            listening, board = inherited()
            if listening is not None:
                bound = [listening]
            else:
                bound = bound_socket(
                    self.settings.host, self.settings.port, self.settings.reuse_port
                )
            link = _redis_link(self.adapter)
            budget = Budget.compute(
                resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                open_descriptors(),
                self.settings.webhook_concurrency if self._with_webhooks() else 0,
                link.most_connections() if link is not None else 0,  # the adapter has started
            )
            self.state.admission = Admission.for_budget(budget, board)
            log.info(budget.describe(1))
            self.state.acceptor = Acceptor(bound, self.protocol_factory, self.state.admission, tls)
            self.state.acceptor.start()
        if self.settings.metrics:
            await self._start_metrics()
        if self.settings.console:
            self.console.start()  # stats sampling, and with redis the cluster's stats and feed
        self._sweep_handle = loop.call_later(self.tick_seconds, self._sweep)
        served = [sock for server in self._servers for sock in server.sockets]
        if self.state.acceptor is not None:
            served += self.state.acceptor.sockets
        return [_format_address(sock.getsockname()) for sock in served]

    def protocol_factory(self) -> HttpConnection:
        """A new TCP connection starts as HTTP (it may upgrade to WebSocket)."""
        return HttpConnection(self.state)

    @property
    def draining(self) -> bool:
        return self.state.draining

    def hint_tls_on_plain_port(self) -> None:
        """A client spoke TLS to this plain port: say why it fails (once a minute at most)."""
        now = time.monotonic()
        if now - self._tls_hint_at < TLS_HINT_EVERY:
            return
        self._tls_hint_at = now
        log.warning(
            "a client started a TLS handshake (wss:// or https://) on this plain port: "
            "connect with ws:// (pusher-js forceTLS: false), terminate TLS at a proxy, or "
            "set ssl_cert and ssl_key"
        )

    def _tls_context(self) -> ssl.SSLContext | None:
        if not self.settings.ssl_cert or not self.settings.ssl_key:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.settings.ssl_cert, self.settings.ssl_key)
        return context

    async def _start_metrics(self) -> None:
        host = self.settings.metrics_host or self.settings.host
        port = self.settings.metrics_port
        if port:
            port += int(os.environ.get("PYSERVER_WORKER_INDEX", "0"))
        try:
            self._metrics_server = await self.metrics.serve(host, port)
        except OSError as exc:
            log.error(
                "metrics: cannot listen on %s:%s (%s); serving without metrics", host, port, exc
            )
            return
        address = self._metrics_server.sockets[0].getsockname()
        log.info("metrics at http://%s/metrics", _format_address(address))

    def _start_webhooks(self) -> None:
        settings = self.settings
        sender = WebhookSender(
            queue_size=settings.webhook_queue_size,
            concurrency=settings.webhook_concurrency,
            timeout=settings.webhook_timeout,
            retry_window=settings.webhook_retry_window,
            retry_base=settings.webhook_retry_base,
            # Where deliveries wait: in memory, or in Redis with the Redis adapter (through
            # its link, which the adapter closes last), so that a node killed meanwhile loses
            # none (webhooks/queue.py). The sender's close() (via the dispatcher's, at
            # shutdown) closes the queue.
            queue=make_queue(settings, _redis_link(self.adapter)),
        )
        sender.start()
        if settings.console:
            sender.on_attempt = lambda delivery, outcome: self.console.webhook_attempt(
                delivery.app_id, delivery.url, delivery.body, outcome
            )
        apps = {config.id: config for config in self.live.configs()}
        self.webhooks = WebhookDispatcher(apps, sender, settings.webhook_delay, self.adapter)
        self.observers.add(self.webhooks)

    @property
    def port(self) -> int:
        if self.state.acceptor is not None:
            return int(self.state.acceptor.sockets[0].getsockname()[1])
        return int(self._servers[0].sockets[0].getsockname()[1])

    async def shutdown(self, grace: float | None = None) -> None:
        """Stop accepting, ask every client to reconnect elsewhere (4200), close the rest."""
        self.state.draining = True
        for server in self._servers:
            server.close()
        if self.state.acceptor is not None:
            self.state.acceptor.close()
        if self._metrics_server is not None:
            self._metrics_server.close()
        if self._sweep_handle is not None:
            self._sweep_handle.cancel()
        await self.console.close()  # ends the console's event streams
        if self.app_changes is not None:
            await self.app_changes.close()
        await self.directory.close()
        grace = self.settings.shutdown_grace if grace is None else grace
        state = self.state
        for http in list(state.http_connections):
            http.close_idle()
        clients = [c for c in state.websocket_connections if c.app is not None]
        # Pace the closes so thousands of clients do not reconnect in the same millisecond.
        batch = max(1, math.ceil(len(clients) / max(1.0, grace * 10)))
        for start in range(0, len(clients), batch):
            for connection in clients[start : start + batch]:
                connection.report(ServerShuttingDown())
            if start + batch < len(clients):
                await asyncio.sleep(0.05)
        deadline = time.monotonic() + max(0.5, grace)
        while (state.http_connections or state.websocket_connections) and (
            time.monotonic() < deadline
        ):
            await asyncio.sleep(0.05)
        for http in list(state.http_connections):
            http.abort()
        for websocket in list(state.websocket_connections):
            websocket.abort()
        await asyncio.sleep(0)  # their connection_lost: the last leaves start
        await tasks.settle(max(1.0, grace))  # leaves asking the Adapter reach the webhooks
        if self.webhooks is not None:
            await self.webhooks.close(max(1.0, grace))
        await self.adapter.close()
        await self.history.close()

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        self._sweep_handle = loop.call_later(self.tick_seconds, self._sweep)
        ping_after, close_after = self.state.ping_after, self._close_after
        now = time.monotonic()
        http_close_after = self._http_close_after
        self.state.sweep(ping_after, close_after, now)
        for http in list(self.state.http_connections):
            http.http_tick(http_close_after)
        self.history.tick()
        for app in self.apps_by_id.values():
            app.tick()
        if self.state.over_capacity:
            self._close_over_capacity(now)

    def _close_over_capacity(self, now: float) -> None:
        """Close what was accepted over capacity and did not upgrade (a WebSocket that did
        was told 4100 and is closing): the descriptors are for the next ones."""
        for http, since in list(self.state.over_capacity.items()):
            if now - since > OVER_CAPACITY_GRACE:
                http.close()

    # --- health ----------------------------------------------------------------------------

    def _health(self, path: str) -> Response:
        """`/up`: the process answers. `/ready`: it should get traffic (503 while draining,
        while the adapter cannot reach the cluster or the app store cannot be read; `reason`
        says which)."""
        state = {
            "ok": True,
            "node": getattr(self.adapter, "node", "local"),
            "adapter": self.settings.adapter,
            "adapter_healthy": self.adapter.healthy,
            "draining": self.draining,
            "connections": sum(len(app.clients) for app in self.apps_by_id.values()),
            "uptime_seconds": int(time.time() - self.started_at),
        }
        limit = self.settings.ready_max_memory_mb
        over_memory = bool(limit) and resident_bytes() > limit * 1_048_576
        state["over_memory"] = over_memory
        if self.from_store:
            state["app_store"] = self.directory.describe()
        reasons = []
        if self.draining:
            reasons.append("draining")
        if not self.adapter.healthy:
            reasons.append("the adapter cannot reach the cluster")
        if over_memory:
            reasons.append(f"over ready_max_memory_mb ({limit})")
        if self.from_store and not self.directory.healthy:
            reasons.append(self.directory.problem or "the app store cannot be read")
        if path == "/ready" and reasons:
            state["ok"] = False
            state["reason"] = "; ".join(reasons)
            return json_response(state, status=503)
        return json_response(state)


def make_adapter(settings: Settings) -> Adapter:
    if settings.adapter == "redis":
        from pyserver.cluster.redis import RedisAdapter
        from pyserver.cluster.redis.connection import connect

        return RedisAdapter(
            settings.redis_url,
            settings.redis_prefix,
            leave_delay=settings.webhook_delay,
            heartbeat=settings.redis_heartbeat,
            dead_after=settings.redis_dead_after,
            node_id=settings.node_id,
            client=connect(settings),
        )
    return LocalAdapter(settings.webhook_delay)


def make_history(settings: Settings, adapter: Adapter) -> NodeHistory:
    """This node's history store: in memory (capped) with the local adapter; in Redis, on the
    Redis adapter's link, with the Redis adapter. There the append script also publishes on
    the cluster bus (a single server or Sentinel), or, on a Redis Cluster, the event is
    published right after its append (sharded pub/sub cannot be reached from the script)."""
    link = _redis_link(adapter)
    if link is None:
        return NodeHistory(MemoryHistoryStore(settings.history_max_memory_mb * 1_048_576))
    from pyserver.cluster import bus
    from pyserver.history.redis import RedisHistoryStore, RedisMarks

    prefix = settings.redis_prefix

    def route(app_id: str, channel: str, except_socket_id: str | None) -> tuple[bytes, bytes]:
        head = bus.encode_broadcast(HISTORY_ORIGIN, app_id, channel, except_socket_id, b"")
        return link.bus_channel(prefix, app_id, channel), head

    store = RedisHistoryStore(link.client, prefix=prefix)  # type: ignore[arg-type]
    marks = SharedMarks(RedisMarks(link.client, prefix=prefix), MemoryMarks(time.time))  # type: ignore[arg-type]
    publish = link.publish if link.mode == "cluster" else None
    return NodeHistory(
        store,
        HistoryBus(route, publish),
        marks=marks,
        owns_store=False,
        ping_interval=settings.activity_timeout,
    )


HISTORY_ORIGIN = "history"
"""The bus origin of history events: no node has this id, so every node, the publishing one
included, delivers them from the bus."""


def _redis_link(adapter: Adapter) -> RedisLink | None:
    """The Redis adapter's link, which the webhook queue and the console share."""
    link = getattr(adapter, "link", None)
    return link if isinstance(link, RedisLink) else None


def _format_address(address: object) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)
