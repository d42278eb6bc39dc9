"""History across two nodes sharing one Redis, end to end with unmodified pusher-js and the
Python SDK: the history API on either node sees what was triggered through the other.

Each test starts its own pair of nodes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pusher
import pytest

from tests.history.test_live import (
    APP,
    channel_history,
    name,
    trigger,
)
from tests.integration.conftest import Deployment, deploy
from tests.integration.serverproc import ServerProcess

CONFIG = """
[[apps]]
id = "2001"
key = "hist-key"
secret = "hist-secret"

[[apps.history]]
channels = "chat-*"
limit = 50

[[apps.history]]
channels = "presence-room-*"
limit = 100
rewind = 0
"""

ENV = {"PYSERVER_ACTIVITY_TIMEOUT": "1", "PYSERVER_PONG_TIMEOUT": "1"}
"""Pings (and so delivery confirmations) every second."""


@pytest.fixture
def pair() -> Iterator[Deployment]:
    deployment = deploy(CONFIG, "redis", env=ENV)
    yield deployment
    deployment.stop()


def api(node: ServerProcess) -> pusher.Pusher:
    return pusher.Pusher(
        app_id=APP.id, key=APP.key, secret=APP.secret, host="127.0.0.1", port=node.port, ssl=False
    )


def test_the_history_api_on_either_node_includes_events_triggered_through_the_other(
    pair: Deployment,
) -> None:
    a, b = pair.nodes
    channel = name("chat-")
    trigger(api(a), channel, range(3))
    trigger(api(b), channel, range(3, 6))
    trigger(api(a), channel, range(6, 8))
    pages = [channel_history(api(node), channel, direction="forward") for node in (a, b)]
    for page in pages:
        assert [json.loads(e["data"])["n"] for e in page["events"]] == list(range(8))
    assert pages[0]["events"] == pages[1]["events"]  # the same positions on both nodes
    newest: dict[str, Any] = channel_history(api(a), channel, limit=1)
    assert json.loads(newest["events"][0]["data"]) == {"n": 7}
