"""Fixtures: a real pyserver process and the apps it serves, shared by the integration tests.

Apps (the Python SDK accepts only numeric app ids, so the main app has one):
- `main`: id 1001, key `app-key`, secret `app-secret`, client events on.
- `disabled`: enabled = false.          - `quiet`: client events off.
- `small`: max 3 connections, presence channels of at most 2 members, watchlists of 2.
- `authz`: connections must sign in or join a private channel within 1 s (4009).
- `counted`: sends subscription counts.
"""

from __future__ import annotations

import base64
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pusher
import pytest

from tests.integration.jsdriver import JsDriver, js_deps_installed
from tests.integration.rawws import RawWebSocket
from tests.integration.serverproc import ServerProcess
from tests.redisproc import RedisProcess
from tests.redisprocs import shared_cluster, shared_sentinel

CONFIG = """
[[apps]]
id = "1001"
key = "app-key"
secret = "app-secret"

[[apps]]
id = "1002"
key = "disabled-key"
secret = "disabled-secret"
enabled = false

[[apps]]
id = "1003"
key = "quiet-key"
secret = "quiet-secret"
client_events = false

[[apps]]
id = "1004"
key = "small-key"
secret = "small-secret"
max_connections = 3
max_presence_members = 2
max_watchlist = 2

[[apps]]
id = "1005"
key = "authz-key"
secret = "authz-secret"
authorized_connections_timeout = 1

[[apps]]
id = "1006"
key = "counted-key"
secret = "counted-secret"
subscription_count = true

[[apps]]
id = "1007"
key = "origin-key"
secret = "origin-secret"
allowed_origins = ["https://*.example.com", "http://localhost:3000"]

[[apps]]
id = "1008"
key = "limited-key"
secret = "limited-secret"
max_backend_events_per_second = 4
max_read_requests_per_second = 3
"""


@dataclass(frozen=True)
class AppCreds:
    id: str
    key: str
    secret: str


MAIN = AppCreds("1001", "app-key", "app-secret")
QUIET = AppCreds("1003", "quiet-key", "quiet-secret")
SMALL = AppCreds("1004", "small-key", "small-secret")
AUTHZ = AppCreds("1005", "authz-key", "authz-secret")
COUNTED = AppCreds("1006", "counted-key", "counted-secret")
LIMITED = AppCreds("1008", "limited-key", "limited-secret")
MASTER_KEY = base64.b64encode(b"k" * 32).decode()
WS_QUERY = "?protocol=7&client=js&version=8.4.0&flash=false"


class Deployment:
    """Where the tests connect: WebSocket clients to `port`, every HTTP call to `api_port`.

    `local` is one server; `redis`, `sentinel` and `cluster` are two nodes sharing a real
    Redis (one server, a master behind Sentinels, a three-master Redis Cluster), clients on
    node A and the HTTP API on node B, so every scenario crosses nodes.
    """

    def __init__(self, nodes: list[ServerProcess]) -> None:
        self.nodes = nodes
        self.port = nodes[0].port
        self.api_port = nodes[-1].port

    def output(self) -> str:
        return "".join(node.output() for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def redis_env(kind: str) -> dict[str, str]:
    """How the nodes of a `kind` deployment reach Redis: `redis`, one server; `sentinel`, a
    master and a replica behind three Sentinels; `cluster`, a three-master Redis Cluster
    (the session's shared topologies, tests/redisprocs.py)."""
    if kind == "redis":
        return {"PYSERVER_REDIS_URL": _redis().url}
    if kind == "sentinel":
        setup = shared_sentinel()
        return {
            "PYSERVER_REDIS_URL": "redis://sentinel-names-the-host/0",
            "PYSERVER_REDIS_SENTINELS": ",".join(setup.sentinel_addresses),
            "PYSERVER_REDIS_SENTINEL_MASTER": setup.master_name,
        }
    if kind == "cluster":
        return {"PYSERVER_REDIS_URL": shared_cluster().url, "PYSERVER_REDIS_CLUSTER": "true"}
    raise ValueError(kind)


def deploy(config: str, kind: str, env: dict[str, str] | None = None) -> Deployment:
    """`local`: one server. `redis`, `sentinel`, `cluster`: two nodes sharing that Redis
    topology (`redis_env`)."""
    if kind == "local":
        return Deployment([ServerProcess(config, env=env)])
    cluster_env = {
        "PYSERVER_ADAPTER": "redis",
        **redis_env(kind),
        "PYSERVER_REDIS_PREFIX": f"t{next(_counter)}",
        **(env or {}),
    }
    return Deployment([ServerProcess(config, env=cluster_env) for _ in range(2)])


KINDS = ["local", "redis", "sentinel", "cluster"]
"""Every deployment the shared scenarios run on: all of them on all four (the two HA
topologies add about 70 s to the suite)."""


_redis_process: RedisProcess | None = None


def _redis() -> RedisProcess:
    global _redis_process
    if _redis_process is None:
        _redis_process = RedisProcess()
    return _redis_process


def pytest_sessionfinish(session: pytest.Session) -> None:
    if _redis_process is not None:
        _redis_process.stop()


@pytest.fixture(scope="session", params=KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    deployment = deploy(CONFIG, request.param)
    yield deployment
    deployment.stop()


_counter = itertools.count()


@pytest.fixture
def uid() -> str:
    """A fresh suffix for channel and user names, so tests sharing a server never collide."""
    return f"{os.getpid()}-{next(_counter)}"


def sdk(port: int, app: AppCreds = MAIN) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=app.id,
        key=app.key,
        secret=app.secret,
        host="127.0.0.1",
        port=port,
        ssl=False,
        encryption_master_key_base64=MASTER_KEY,
    )


@pytest.fixture
def py_sdk(server: Deployment) -> pusher.Pusher:
    return sdk(server.api_port)


class PusherSocket(RawWebSocket):
    """A raw connection that has read `pusher:connection_established`."""

    def __init__(self, port: int, app: AppCreds = MAIN) -> None:
        super().__init__(port, f"/app/{app.key}{WS_QUERY}")
        self.app = app
        established = self.recv()
        assert established["event"] == "pusher:connection_established"
        import json

        self.socket_id: str = json.loads(established["data"])["socket_id"]

    def subscribe(
        self, channel: str, auth: str | None = None, channel_data: str | None = None
    ) -> dict[str, object]:
        data: dict[str, object] = {"channel": channel}
        if auth is not None:
            data["auth"] = auth
        if channel_data is not None:
            data["channel_data"] = channel_data
        self.send_json({"event": "pusher:subscribe", "data": data})
        return self.recv()

    def signed_subscribe(
        self, channel: str, user_id: str | None = None, user_info: object = None
    ) -> dict[str, object]:
        """Subscribe with a signature made by the official Python SDK."""
        client = sdk(1, self.app)
        custom = None
        if user_id is not None:
            custom = {"user_id": user_id}
            if user_info is not None:
                custom["user_info"] = user_info
        auth = client.authenticate(channel=channel, socket_id=self.socket_id, custom_data=custom)
        return self.subscribe(channel, auth["auth"], auth.get("channel_data"))


@pytest.fixture
def connect(server: Deployment) -> Iterator[object]:
    opened: list[PusherSocket] = []

    def open_socket(app: AppCreds = MAIN) -> PusherSocket:
        sock = PusherSocket(server.port, app)
        opened.append(sock)
        return sock

    yield open_socket
    for sock in opened:
        sock.close()


@pytest.fixture(scope="session")
def js() -> Iterator[JsDriver]:
    """Real pusher-js 8 and 7, laravel-echo and the Node SDK, driven from the tests.

    Missing JS dependencies fail the tests loudly: `scripts/test.sh` installs them.
    """
    assert js_deps_installed(), "run `npm ci` in tests/js (scripts/test.sh does it)"
    with JsDriver() as driver:
        yield driver


_js_names = itertools.count()


@pytest.fixture
def pusher_js(js: JsDriver, server: Deployment) -> Iterator[Any]:
    """A factory of connected pusher-js clients (main app) named for the driver:
    `pusher_js(version="8", user=None, **options)`; `user` is the user_data to sign in with.
    Every client can use encrypted channels (the driver signs with MASTER_KEY)."""
    made: list[str] = []

    def make(version: str = "8", user: dict[str, Any] | None = None, **options: Any) -> str:
        name = f"js{next(_js_names)}"
        js.connect(
            name,
            server.port,
            MAIN.key,
            MAIN.secret,
            MAIN.id,
            version,
            sdk_options={"encryptionMasterKeyBase64": MASTER_KEY},
            **options,
        )
        if user is not None:
            js.call("set_user", client=name, user_data=user)
        made.append(name)
        return name

    yield make
    for name in made:
        js.call("disconnect", client=name)


def node_sdk(js: JsDriver, server: Deployment, method: str, *args: Any) -> Any:
    """Call the Node `pusher` SDK against the node that serves the HTTP API."""
    return js.sdk(
        method,
        *args,
        port=server.api_port,
        key=MAIN.key,
        secret=MAIN.secret,
        app_id=MAIN.id,
        encryptionMasterKeyBase64=MASTER_KEY,
    )
