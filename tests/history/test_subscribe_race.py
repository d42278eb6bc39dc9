"""An event published right after `subscription_succeeded` must reach the subscriber (issue 13,
rewind: "They come before any event published after the subscription"), also when the node's
replay read from Redis is slower than the publish.

Two nodes share a real Redis; node A, where the client is, reaches Redis through a loopback
proxy that delays every byte by DELAY seconds (a busy Redis, a loaded node, another rack).
The client subscribes to a history channel whose rule has `rewind = 0`, and as soon as it has
`pusher_internal:subscription_succeeded` the backend triggers one event through node B. The
event is appended in Redis before node A's replay read arrives there, so the read's head
already includes it; node A must still deliver it, live or replayed.

Found in a full-suite run under load, where
`test_catch_up_after_a_dropped_socket_replaces_the_rewind[redis-8]` and
`test_a_half_open_client_recovers_what_it_never_read[redis]` lost the first event triggered
after a fresh presence subscription (rewind 0) in the same way. This test passes at c970528,
fails (3 of 3 events lost) from 395c5eb ("the subscription starts exactly at the head its
read returned") and passes again from cb73e7e (the replay is read before
`subscription_succeeded` goes out).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import pusher
import pytest
from websockets.sync.client import connect

from tests.integration.serverproc import ServerProcess
from tests.redisproc import RedisProcess

DELAY = 0.15

CONFIG = """
[[apps]]
id = "3001"
key = "race-key"
secret = "race-secret"

[[apps.history]]
channels = "room-*"
limit = 100
rewind = 0
"""


class DelayProxy:
    """Forwards loopback TCP to `target_port`, every chunk `delay` seconds late, in order."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self.writers: list[asyncio.StreamWriter] = []
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10), "the delay proxy did not start"

    def _run(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._pipe_pair, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()
        server.close()

    async def _pipe_pair(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.writers += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        try:
            while chunk := await reader.read(65536):
                loop.call_later(self.delay, writer.write, chunk)
        finally:
            loop.call_later(self.delay, writer.close)

    def _shutdown(self) -> None:
        for writer in self.writers:
            writer.transport.abort()
        self.loop.call_later(0.05, self.loop.stop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self._shutdown)
        self.thread.join(5)


@pytest.fixture(scope="module")
def nodes() -> Iterator[tuple[ServerProcess, ServerProcess]]:
    redis = RedisProcess()
    proxy = DelayProxy(redis.port, DELAY)
    env = {"PYSERVER_ADAPTER": "redis", "PYSERVER_REDIS_PREFIX": "race"}
    slow_url = f"redis://127.0.0.1:{proxy.port}/0"
    node_a = ServerProcess(CONFIG, env={**env, "PYSERVER_REDIS_URL": slow_url})
    node_b = ServerProcess(CONFIG, env={**env, "PYSERVER_REDIS_URL": redis.url})
    try:
        yield node_a, node_b
    finally:
        node_a.stop()
        node_b.stop()
        proxy.stop()
        redis.stop()


def test_an_event_published_right_after_subscription_succeeded_arrives(nodes) -> None:
    node_a, node_b = nodes
    backend = pusher.Pusher(
        app_id="3001", key="race-key", secret="race-secret", host="127.0.0.1", port=node_b.port,
        ssl=False,
    )  # fmt: skip
    url = f"ws://127.0.0.1:{node_a.port}/app/race-key?protocol=7&client=py&version=1"
    lost = []
    for attempt in range(3):
        channel = f"room-{attempt}-{time.monotonic_ns()}"
        with connect(url, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["event"] == "pusher:connection_established"
            ws.send(json.dumps({"event": "pusher:subscribe", "data": {"channel": channel}}))
            while json.loads(ws.recv(timeout=10))["event"] != (
                "pusher_internal:subscription_succeeded"
            ):
                pass
            backend.trigger(channel, "m", {"n": attempt})
            deadline = time.monotonic() + 5
            got = None
            while got is None and time.monotonic() < deadline:
                try:
                    frame = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
                except TimeoutError:
                    break
                if frame["event"] == "m":
                    got = json.loads(frame["data"])
            if got != {"n": attempt}:
                lost.append(channel)
    assert lost == [], f"the event triggered right after subscription_succeeded never came: {lost}"
