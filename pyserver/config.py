"""Configuration: apps, limits and server options, validated with pydantic.

Sources, strongest first: command-line flags, environment variables prefixed `PYSERVER_`
(nested fields with `__`, e.g. `PYSERVER_APPS='[{"id":"a","key":"k","secret":"s"}]'`), the
TOML file given with `--config`, then the defaults below.

Invariants:
- With no configuration at all there is exactly one app: `app-id` / `app-key` / `app-secret`
  (changeable with `PYSERVER_APP_ID`, `PYSERVER_APP_KEY`, `PYSERVER_APP_SECRET`).
- App ids and keys are unique; a bad value stops start-up with a message naming the field.
- An app's `name` is 1 to 255 printable characters (`check_app_name`), wherever it is set.
- Limits default to hosted Pusher's (`spec/protocol.md` §13).
- `describe()` never shows a secret.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

WebhookEventType = Literal[
    "channel_occupied",
    "channel_vacated",
    "member_added",
    "member_removed",
    "client_event",
    "cache_miss",
    "subscription_count",
    "user_online",
    "user_offline",
]
USER_EVENT_TYPES = ("user_online", "user_offline")
"""Our extension: a signed-in user's first connection arrives, its last one leaves."""
WEBHOOK_EVENT_TYPES: tuple[WebhookEventType, ...] = tuple(
    t for t in get_args(WebhookEventType) if t not in USER_EVENT_TYPES
)
"""The event types hosted Pusher sends (`spec/protocol.md` §12.3), the default of a target."""


class WebhookTarget(BaseModel):
    """One URL that receives an app's webhooks."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://")
    event_types: tuple[WebhookEventType, ...] = WEBHOOK_EVENT_TYPES
    """Which events this URL gets; `user_online`/`user_offline` only when listed."""
    channel_prefix: str | None = None
    """Only events of channels whose name starts with this (user events have no channel)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra HTTP headers sent with every delivery (e.g. an auth token of the receiver)."""


HISTORY_PATTERN_CHARS = re.compile(r"[A-Za-z0-9_\-=@,.;#*?\[\]!]+")
"""Channel-name characters plus the shell wildcards `*`, `?`, `[...]` and `[!...]`."""


class HistoryRule(BaseModel):
    """Which channels of an app keep history, how much and for how long (docs/history.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channels: str = Field(min_length=1, max_length=200)
    """Shell-style pattern on the whole channel name; the first matching rule wins."""
    limit: int = Field(default=100, ge=1, le=1_000)
    """Events kept per channel."""
    ttl: int = Field(default=3_600, ge=1, le=2_592_000)
    """Seconds an event is kept (at most 30 days: history is a cache, not a database)."""
    rewind: int = Field(default=0, ge=0, le=1_000)
    """Events replayed to every new subscription, 0..limit."""
    recovery_window: int = Field(default=120, ge=0, le=86_400)
    """Seconds a dropped subscriber's catch-up is remembered; 0 turns catch-up off."""
    client_events: bool = False
    """Also keep `client-*` events (default: only events triggered over the HTTP API)."""

    @field_validator("channels")
    @classmethod
    def _pattern_chars(cls, value: str) -> str:
        if not HISTORY_PATTERN_CHARS.fullmatch(value):
            raise ValueError(
                "a channel name pattern: letters, digits, _-=@,.;# and the wildcards * ? [ ]"
            )
        return value

    @model_validator(mode="after")
    def _rewind_within_limit(self) -> HistoryRule:
        if self.rewind > self.limit:
            raise ValueError(f"rewind ({self.rewind}) must not exceed limit ({self.limit})")
        return self


APP_NAME_MAX = 255
"""The longest app `name`, in characters (the app stores' column holds 255)."""


def check_app_name(name: str) -> str:
    """`name` when it is a valid app name, else a ValueError saying what one is.

    A name is a label for people: 1 to 255 printable characters, spaces and any script
    included. Control characters (newlines, tabs, NUL) are refused because the line-oriented
    outputs that show a name (`pyserver apps list`, logs) would break on them. One rule
    wherever a name comes from: the config file, `PYSERVER_APPS`, `pyserver apps`, the
    console's Apps page and the rows of an app store (all of them build an `AppConfig`)."""
    if not 1 <= len(name) <= APP_NAME_MAX or not name.isprintable():
        shown = repr(name) if len(name) <= 40 else f"{name[:40]!r}… ({len(name)} characters)"
        raise ValueError(
            "an app name is 1 to 255 printable characters (spaces allowed; no newline, tab or "
            f"other control character); not {shown}"
        )
    return name


class AppConfig(BaseModel):
    """One tenant: credentials, switches and limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    key: str = Field(min_length=1)
    secret: str = Field(min_length=1)
    name: str | None = None
    enabled: bool = True
    client_events: bool = True
    """Allow `client-*` events on private and presence channels."""
    max_connections: int = Field(default=0, ge=0)
    """Across the cluster (other nodes as of their last heartbeat); 0 means unlimited;
    above it new connections are closed with 4004."""
    max_client_events_per_second: int = Field(default=10, ge=0)
    """Per connection; 0 disables the limit."""
    max_backend_events_per_second: int = Field(default=0, ge=0)
    """HTTP API: events published per second (an event to N channels counts N), on each
    node; over it the call gets 429. 0 turns the limit off."""
    max_read_requests_per_second: int = Field(default=0, ge=0)
    """HTTP API: GET requests per second, on each node; over it 429. 0: no limit."""
    max_event_payload_bytes: int = Field(default=10_240, ge=1)
    max_channels_per_event: int = Field(default=100, ge=1)
    max_batch_size: int = Field(default=10, ge=1)
    max_presence_members: int = Field(default=100, ge=1)
    max_presence_user_info_bytes: int = Field(default=1_024, ge=1)
    subscription_count: bool = False
    """Send `pusher_internal:subscription_count` frames and webhooks (the HTTP API's
    `info=subscription_count` answers either way)."""
    watchlist: bool = True
    max_watchlist: int = Field(default=100, ge=0)
    cache_ttl: int = Field(default=1_800, ge=1, le=86_400)
    """Seconds a cache channel keeps its last event (hosted: up to 30 minutes)."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins that may connect (`*`, `example.com`, `*.example.com`,
    `https://app.example.com`); others are closed with 4009. Empty: any origin."""
    authorized_connections_timeout: float = Field(default=0, ge=0)
    """Seconds a connection may stay without signing in or subscribing to a private or
    presence channel before it is closed with 4009; 0 turns the check off."""
    webhooks: tuple[WebhookTarget, ...] = ()
    webhook_batch_ms: int = Field(default=0, ge=0, le=60_000)
    """Collect an app's events for this many milliseconds into one request; 0 sends each
    event in its own request (hosted Pusher's default)."""
    webhook_batch_max: int = Field(default=50, ge=1, le=1_000)
    """Most events in one batched request."""
    history: tuple[HistoryRule, ...] = ()
    """Channels that keep history (rewind, catch-up, the history API); none by default."""

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        return None if value is None else check_app_name(value)

    def describe(self) -> str:
        switches = [f"client_events={'on' if self.client_events else 'off'}"]
        if not self.enabled:
            switches.insert(0, "DISABLED")
        return f"{self.id} (key {self.key}, {', '.join(switches)})"


DEFAULT_SECRET = "app-secret"
"""The default app's secret: printed in the docs (and soketi's), so known to everyone. Any
app whose secret is this one puts the server in protected mode (`protected_mode`)."""


APP_STORE_SCHEMES = ("sqlite://", "postgresql://", "postgres://", "mysql://", "mariadb://")
"""How an `app_store` URL may start (the app stores read the rest, docs/apps.md)."""


class Settings(BaseSettings):
    """Everything the server runs with."""

    model_config = SettingsConfigDict(
        env_prefix="PYSERVER_", env_nested_delimiter="__", extra="forbid"
    )

    host: str = "0.0.0.0"
    port: int = Field(default=6001, ge=0, le=65535)
    app_id: str = "app-id"
    """Id of the default app, used when `apps` is empty."""
    app_key: str = "app-key"
    app_secret: str = DEFAULT_SECRET
    apps: list[AppConfig] = Field(default_factory=list)
    app_store: str = "config"
    """Where apps come from: "config" (`apps` above, read-only), or a database managed with
    `pyserver apps`: "sqlite:///apps.db", "postgresql://user:password@host/db",
    "mysql://user:password@host/db" (MariaDB too). See docs/apps.md."""
    app_store_refresh: float = Field(default=5.0, gt=0, le=3_600)
    """Seconds between a node's checks of the app store for changes."""
    secret_rotation_grace: float = Field(default=300.0, ge=0, le=86_400)
    """Seconds an app's previous secret stays valid after `pyserver apps rotate-secret`."""

    adapter: Literal["local", "redis"] = "local"
    """Where cluster-wide state lives: this process only, or a Redis server shared by nodes."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """The Redis server; with Sentinel its credentials, database and `rediss://` (the host is
    asked of the Sentinels); with `redis_cluster` any node of the cluster."""
    redis_sentinels: Annotated[list[str], NoDecode] = Field(default_factory=list)
    """Sentinels as `host:port` (`[v6addr]:port` too); when set, the master is the one they
    name `redis_sentinel_master`, and failovers are followed without a restart. Environment:
    a JSON list or a comma-separated string."""
    redis_sentinel_master: str = Field(default="mymaster", min_length=1)
    """The name the Sentinels monitor the master under (`sentinel monitor NAME ...`)."""
    redis_sentinel_password: str | None = None
    """Password of the Sentinels themselves (`requirepass` in sentinel.conf); the master's
    password goes in `redis_url`."""
    redis_sentinel_tls: bool = False
    """Talk TLS to the Sentinels (the master gets TLS from a `rediss://` `redis_url`)."""
    redis_sentinel_tls_ca: str | None = None
    """A PEM file of the CA that signed the Sentinels' certificates, when it is not in the
    system's trust store (the master's: `?ssl_ca_certs=` in a `rediss://` `redis_url`)."""
    redis_cluster: bool = False
    """`redis_url` names any node of a Redis Cluster (Redis 7 or later for sharded pub/sub)."""
    redis_prefix: str = Field(default="pyserver", min_length=1)
    """Prefix of every Redis key and of the pub/sub channel (several clusters, one Redis)."""
    redis_heartbeat: float = Field(default=5.0, gt=0, le=60)
    """Seconds between a node's liveness refreshes."""
    redis_dead_after: float = Field(default=15.0, gt=0, le=300)
    """Seconds without a refresh after which a node is declared dead and its state removed."""
    node_id: str | None = None
    """This node's name in the cluster (default: host, process id and a random suffix)."""
    workers: int = Field(default=1, ge=1, le=256)
    """Processes sharing one listening socket; more than one needs adapter = "redis"."""
    reuse_port: bool = False
    """Bind with SO_REUSEPORT, to run separately started processes on one port."""

    path_prefix: str = ""
    """A path the server is also reachable under, e.g. `/pusher`: `/pusher/app/{key}` for
    pusher-js (`wsPath: '/pusher'`) and `/pusher/apps/{id}/...` for the SDKs. Paths without
    it keep working; API signatures are accepted with or without it."""

    activity_timeout: int = Field(default=30, ge=1, le=120)
    """Seconds advertised to clients; below nginx's 60 s and Cloudflare's 100 s idle limits."""
    pong_timeout: int = Field(default=30, ge=1)
    """Seconds to wait for any frame after the server pinged an idle client (then 4201)."""
    websocket_compression: bool = False
    """Agree to permessage-deflate when a client offers it (no context takeover, so each
    broadcast is compressed once for all). Off: it costs CPU per message, and hosted Pusher
    clients do not need it."""
    max_message_bytes: int = Field(default=65_536, ge=1_024)
    """Largest WebSocket message accepted from a client (1009 above)."""
    http_idle_timeout: float = Field(default=75.0, gt=0, le=3_600)
    """Seconds an HTTP connection (keep-alive or half-sent request) may stay silent before
    it is closed; WebSocket connections follow activity_timeout instead. Above the 60 s
    that nginx upstreams and cloud load balancers keep idle connections, so they close
    first and never send on a connection we are closing."""
    max_request_bytes: int = Field(default=1_048_576, ge=1_024)
    """Largest HTTP API request body (413 above)."""
    write_buffer_cap: int = Field(default=8 * 1_048_576, ge=65_536)
    """Bytes queued for one client before it is closed with 4100 as a slow consumer."""
    max_auth_skew: int = Field(default=600, ge=1)
    """Seconds an HTTP API `auth_timestamp` may be away from the server's clock."""
    shutdown_grace: float = Field(default=10.0, ge=0)
    webhook_delay: float = Field(default=3.0, ge=0, le=60)
    """Seconds `channel_vacated`, `member_removed` and `user_offline` wait; they are dropped
    when the channel, member or user comes back meanwhile (a page reload sends nothing)."""
    webhook_retry_window: float = Field(default=300.0, ge=0, le=3_600)
    """Seconds a failing delivery is retried (exponential backoff) after its creation."""
    webhook_retry_base: float = Field(default=1.0, gt=0, le=60)
    """First retry delay in seconds; each retry doubles it, up to 60 s."""
    webhook_timeout: float = Field(default=10.0, gt=0, le=120)
    """Seconds one delivery attempt may take."""
    webhook_queue_size: int = Field(default=100_000, ge=1)
    """Deliveries waiting to be sent; above it new ones are dropped, logged and counted."""
    webhook_concurrency: int = Field(default=16, ge=1, le=1_000)
    webhook_lease: float = Field(default=30.0, gt=0, le=3_600)
    """With adapter = "redis", where deliveries wait in Redis: seconds a node holds a delivery
    it is sending (at least webhook_timeout + 5). If the node dies meanwhile, another node
    sends the delivery once this lease has run out."""
    metrics: bool = True
    """Serve Prometheus metrics at `/metrics` on `metrics_port`."""
    metrics_host: str | None = None
    """Address of the metrics listener (default: `host`)."""
    metrics_port: int = Field(default=9601, ge=0, le=65535)
    """Port of the metrics listener; worker N of `--workers` uses `metrics_port + N`."""
    metrics_prefix: str = "pyserver_"
    """Prefix of every metric name; "soketi_" keeps soketi dashboards working."""
    history_max_memory_mb: int = Field(default=256, ge=1)
    """MiB of channel history this node keeps in memory (local adapter); above it the
    channels written longest ago are evicted first."""
    ready_max_memory_mb: int = Field(default=0, ge=0)
    """`/ready` answers 503 above this resident memory (MiB); 0 turns the check off."""
    ssl_cert: str | None = None
    """PEM certificate (chain) file: serve wss:// and https:// natively."""
    ssl_key: str | None = None
    """PEM private key file of `ssl_cert`."""
    console: bool = True
    """Serve the live debug console at `/console`."""
    console_token: str | None = None
    """Admin token for the console; when unset, an app's id and secret open that app."""
    protected_mode: bool = True
    """While an app uses `DEFAULT_SECRET`, the HTTP API and the console answer only requests
    from this machine (loopback, not through a proxy) and others get 403; false lets anyone
    in. Nothing changes once every app has a secret of its own."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    use_uvloop: bool = True

    @field_validator("app_store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if value != "config" and not value.startswith(APP_STORE_SCHEMES):
            raise ValueError('use "config" or a URL starting with ' + ", ".join(APP_STORE_SCHEMES))
        return value

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinel_list(cls, value: Any) -> Any:
        # The environment hands over text (NoDecode): a JSON list, or comma-separated.
        if isinstance(value, str):
            if value.lstrip().startswith("["):
                try:
                    return json.loads(value)
                except ValueError:
                    raise ValueError(
                        'a JSON list such as ["host:26379", ...] or host:26379,host:26379'
                    ) from None
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinel_addresses(cls, value: list[str]) -> list[str]:
        for entry in value:
            sentinel_address(entry)
        return value

    @field_validator("path_prefix")
    @classmethod
    def _normal_prefix(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and (not value.startswith("/") or re.search(r"[?#\s]|//", value)):
            raise ValueError("a path such as /pusher: starts with /, no spaces, ? or #")
        return value

    @model_validator(mode="after")
    def _fill_and_check_apps(self) -> Settings:
        if not self.apps:
            self.apps = [AppConfig(id=self.app_id, key=self.app_key, secret=self.app_secret)]
        if self.workers > 1 and self.adapter != "redis":
            raise ValueError('workers: more than one worker needs adapter = "redis" to share state')
        if (self.ssl_cert is None) != (self.ssl_key is None):
            raise ValueError("ssl_cert and ssl_key go together: give both or neither")
        if self.redis_dead_after <= self.redis_heartbeat:
            raise ValueError("redis_dead_after must be longer than redis_heartbeat")
        self._check_redis_topology()
        for field in ("id", "key"):
            seen: set[str] = set()
            for app in self.apps:
                value = getattr(app, field)
                if value in seen:
                    raise ValueError(f"apps: two apps share the {field} {value!r}")
                seen.add(value)
        return self

    def _check_redis_topology(self) -> None:
        if not self.redis_url.startswith(("redis://", "rediss://")):
            raise ValueError("redis_url: a URL starting with redis:// or rediss://")
        if self.redis_sentinels and self.redis_cluster:
            raise ValueError(
                "redis_sentinels and redis_cluster exclude each other: Sentinel watches one "
                "master and its replicas, a Redis Cluster fails over by itself"
            )
        if self.redis_cluster and redis_url_database(self.redis_url) != 0:
            raise ValueError("redis_url: a Redis Cluster has only database 0")
        if not self.redis_sentinels and (
            self.redis_sentinel_password is not None or self.redis_sentinel_tls
        ):
            raise ValueError(
                "redis_sentinel_password and redis_sentinel_tls apply to Sentinels: "
                "list them in redis_sentinels"
            )
        if self.redis_sentinel_tls_ca is not None and not self.redis_sentinel_tls:
            raise ValueError("redis_sentinel_tls_ca: set redis_sentinel_tls = true too")

    def redis_mode(self) -> Literal["single", "sentinel", "cluster"]:
        """How the Redis adapter reaches Redis."""
        if self.redis_sentinels:
            return "sentinel"
        return "cluster" if self.redis_cluster else "single"

    def default_secret_apps(self) -> list[str]:
        """Ids of the configured apps whose secret is the well-known default one (none with a
        database app store: the configuration's apps only seed it, the built-in one never)."""
        if self.app_store != "config":
            return []
        return [app.id for app in self.apps if app.secret == DEFAULT_SECRET]

    def warnings(self) -> list[str]:
        """Settings that are valid but cannot do what they seem to ask for."""
        found = []
        for app in self.apps:
            for target in app.webhooks:
                if "subscription_count" in target.event_types and not app.subscription_count:
                    found.append(
                        f"app {app.id}: webhook {target.url} lists subscription_count, which is "
                        "never sent while the app's subscription_count is false"
                    )
        return found

    def describe(self) -> list[str]:
        """Log lines for start-up: the effective settings, secrets left out."""
        lines = [
            f"adapter={self.adapter}"
            + (
                f" redis={self._describe_redis()} prefix={self.redis_prefix}"
                if self.adapter == "redis"
                else ""
            )
            + f" workers={self.workers}",
            f"activity_timeout={self.activity_timeout}s pong_timeout={self.pong_timeout}s "
            f"max_message_bytes={self.max_message_bytes} write_buffer_cap={self.write_buffer_cap}",
        ]
        if self.app_store != "config":
            lines.append(
                f"app_store={mask_url(self.app_store)} "
                f"app_store_refresh={self.app_store_refresh}s "
                f"secret_rotation_grace={self.secret_rotation_grace}s"
            )
        else:
            lines += [f"serving app {app.describe()}" for app in self.apps]
        return lines

    def _describe_redis(self) -> str:
        mode = self.redis_mode()
        if mode == "sentinel":
            tls = " tls" if self.redis_sentinel_tls else ""
            return (
                f"sentinel:{self.redis_sentinel_master}@{','.join(self.redis_sentinels)}{tls} "
                f"({mask_url(self.redis_url)})"
            )
        if mode == "cluster":
            return f"cluster:{mask_url(self.redis_url)}"
        return mask_url(self.redis_url)


def sentinel_address(entry: str) -> tuple[str, int]:
    """`host:port` or `[v6addr]:port` as a (host, port) pair; ValueError naming the entry."""
    text = entry.strip()
    host, sep, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        sep = ""  # an IPv6 address without brackets: its colons are no port separator
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
            f"sentinel {entry!r}: write host:port (a Sentinel listens on 26379 by default), "
            "an IPv6 address as [addr]:port"
        )
    return host, int(port)


def redis_url_database(url: str) -> int:
    """The database number of a redis:// URL (0 when the path names none)."""
    rest = url.partition("://")[2]
    path = rest.partition("/")[2].partition("?")[0]
    return int(path) if path.isdigit() else 0


def mask_url(url: str) -> str:
    """A Redis or database URL without its password, for log lines and messages."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at:
        return url
    user = credentials.partition(":")[0]
    return f"{scheme}{sep}{user}:***@{host}" if user else f"{scheme}{sep}***@{host}"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the field."""


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from flags (`overrides`), environment, TOML file and defaults, in that order."""
    toml_path = Path(config_file) if config_file else None
    if toml_path is not None and not toml_path.is_file():
        raise ConfigError(f"config file {toml_path} does not exist")

    class _Sources(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            if toml_path is None:
                return (init_settings, env_settings)
            return (init_settings, env_settings, TomlConfigSettingsSource(cls, toml_path))

    try:
        settings = _Sources(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None
    except ValueError as exc:  # a TOML syntax error
        raise ConfigError(f"cannot read {toml_path}: {exc}") from None
    return settings


ENV_PREFIX = "PYSERVER_"
INTERNAL_ENV = frozenset({"PYSERVER_WORKER_INDEX", "PYSERVER_LISTEN_FD", "PYSERVER_CAPACITY_BOARD"})
"""Variables `--workers` sets for its own processes; not options."""


def unknown_environment(environ: Mapping[str, str]) -> list[str]:
    """Warnings for `PYSERVER_*` variables that name no option (a typo would otherwise leave
    the default silently in force), with the closest option's variable when one is near.

    Not an error, unlike an unknown TOML key: orchestrators add variables of their own under
    a service's name (Kubernetes' `PYSERVER_SERVICE_HOST` for a service called `pyserver`).
    """
    options = list(Settings.model_fields)
    warnings = []
    for variable in sorted(environ):
        if not variable.upper().startswith(ENV_PREFIX) or variable.upper() in INTERNAL_ENV:
            continue
        field = variable[len(ENV_PREFIX) :].lower().partition("__")[0]
        if field in Settings.model_fields:
            continue
        near = difflib.get_close_matches(field, options, n=1, cutoff=0.8)
        hint = f" (did you mean {ENV_PREFIX}{near[0].upper()}?)" if near else ""
        warnings.append(f"environment variable {variable} is no option and is ignored{hint}")
    return warnings


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "config"
        lines.append(f"{field}: {err['msg']}")
    return "invalid configuration: " + "; ".join(lines)
