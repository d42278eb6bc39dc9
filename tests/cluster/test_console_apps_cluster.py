"""Issue 15 item 4 on a real two-node cluster (real Redis, one SQLite store file shared by
both nodes on this host): a change made in one node's Apps page reaches the other node at
once, through the bus, not after `app_store_refresh` (600 s here)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from pusher.errors import PusherError

from tests.integration.conftest import WS_QUERY, AppCreds, PusherSocket, sdk
from tests.integration.httpapi import request
from tests.integration.rawws import Closed, RawWebSocket
from tests.integration.serverproc import ServerProcess
from tests.redisproc import RedisProcess

T = TypeVar("T")
TOKEN = "cluster-apps-token"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CONFIG = """
console_token = "{token}"
app_store = "sqlite:///{path}"
app_store_refresh = 600

[[apps]]
id = "1001"
key = "seeded-key"
secret = "seeded-secret"
"""


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, ...]]:
    redis = RedisProcess()
    path = tmp_path_factory.mktemp("cluster-apps") / "apps.db"
    env = {
        "PYSERVER_ADAPTER": "redis",
        "PYSERVER_REDIS_URL": redis.url,
        "PYSERVER_REDIS_PREFIX": "apps",
        "PYSERVER_REDIS_HEARTBEAT": "0.5",
    }
    config = CONFIG.format(token=TOKEN, path=path)
    first = ServerProcess(config, env=env)
    pair = (first, ServerProcess(config, env=env))
    yield pair
    for node in pair:
        node.stop()
    redis.stop()


def _post(port: int, route: str, body: dict[str, Any]) -> dict[str, Any]:
    status, value, _ = request(
        port, "POST", f"/console/api/apps/{route}", json.dumps(body).encode(), headers=BEARER
    )
    assert status == 200, value
    answer: dict[str, Any] = value
    return answer


def _soon(attempt: Callable[[], T], timeout: float = 3.0) -> tuple[T, float]:
    """`attempt()`'s first result that does not raise, and how long it took.

    An SDK call refused by a node that has not yet heard the change (a 401 for a secret it
    does not know yet) is retried too: the change travels over the bus, it is not synchronous.
    """
    started = time.monotonic()
    while True:
        try:
            return attempt(), time.monotonic() - started
        except (AssertionError, Closed, OSError, PusherError):
            if time.monotonic() - started > timeout:
                raise
            time.sleep(0.05)


def test_a_change_in_one_nodes_page_reaches_the_other_at_once(
    nodes: tuple[ServerProcess, ...], uid: str
) -> None:
    a, b = nodes[0].port, nodes[1].port
    app = AppCreds(uid.replace("-", ""), f"cluster-key-{uid}", f"cluster-secret-{uid}")
    _post(a, "add", {"id": app.id, "key": app.key, "secret": app.secret})
    sock, took = _soon(lambda: PusherSocket(b, app))  # node b knew nothing of it
    assert took < 3.0
    assert sock.subscribe(f"news-{uid}")["event"] == "pusher_internal:subscription_succeeded"

    _post(a, "disable", {"id": app.id})
    assert sock.expect_close(timeout=3).code == 4003  # closed by node b

    _post(a, "enable", {"id": app.id})
    _soon(lambda: PusherSocket(b, app).close())
    secret = _post(a, "rotate-secret", {"id": app.id, "grace": 0})["secret"]
    rotated = AppCreds(app.id, app.key, secret)
    _soon(lambda: sdk(b, rotated).trigger(f"news-{uid}", "e", {}))  # node b has the new one

    _post(a, "remove", {"id": app.id})

    def unknown() -> None:
        assert RawWebSocket(b, f"/app/{app.key}{WS_QUERY}").expect_close().code == 4001

    _soon(unknown)
