"""The Redis adapter coming back after an outage, in-process against a real Redis: it must
end healthy even when Redis goes away again during the rebuild, and it must leave in Redis
exactly what its clients hold, reporting the leaves that happened while it was cut off. The
rebuild also runs on a three-master Redis Cluster with two apps on different shards (one
transaction per app: each app's keys share one slot)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError

from pyserver.channels.registry import ChannelRegistry
from pyserver.cluster.leaves import LeaveKey
from pyserver.cluster.redis import RedisAdapter
from pyserver.cluster.redis.connection import UrlSettings, connect
from tests.redisproc import RedisProcess

APP = "app"
OTHER = "other"
_prefixes = itertools.count()


class Peer:
    """Records what the adapter reports to the app, and holds what an app holds: its
    presence memberships and signed-in users (the adapter reads them to rebuild)."""

    def __init__(self) -> None:
        self.reported: list[tuple[str, ...]] = []
        self.presence: dict[tuple[str, str], str] = {}
        """(channel, socket id) → user id."""
        self.users: dict[str, str] = {}
        """socket id → user id."""

    def local_presence(self) -> list[tuple[str, str, str]]:
        return [(c, s, u) for (c, s), u in self.presence.items()]

    def local_users(self) -> list[tuple[str, str]]:
        return [(u, s) for s, u in self.users.items()]

    def terminate_local(self, user_id: str) -> int:
        return 0

    def kick_local(self, channel: str, user_id: str | None, socket_id: str | None) -> None:
        pass

    def user_announced(self, user_id: str, online: bool) -> None:
        pass

    def remote_member_left(self, channel: str, user_id: str) -> None:
        self.reported.append(("member_removed", channel, user_id))

    def remote_channel_left(self, channel: str) -> None:
        self.reported.append(("channel_vacated", channel))

    def remote_user_left(self, user_id: str) -> None:
        self.reported.append(("user_offline", user_id))

    def connection_count(self) -> int:
        return 0


class Sock:
    def __init__(self, socket_id: str) -> None:
        self.socket_id = socket_id

    def send(self, frame: bytes) -> None:
        pass


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    proc = RedisProcess()
    yield proc
    proc.stop()


async def _started(
    redis: Any, cluster: bool = False, others: dict[str, ChannelRegistry] | None = None
) -> tuple[RedisAdapter, ChannelRegistry, Peer]:
    """An adapter on `redis` (a RedisProcess, or with `cluster` a ClusterSetup) serving APP
    and the apps in `others`."""
    adapter = RedisAdapter(
        redis.url,
        f"rec{next(_prefixes)}",
        leave_delay=0.5,
        heartbeat=0.5,
        dead_after=2,
        client=connect(UrlSettings(redis.url, cluster=cluster)),
    )
    registry, peer = ChannelRegistry(), Peer()
    adapter.attach(APP, registry, peer)
    for app_id, other in (others or {}).items():
        adapter.attach(app_id, other, Peer())
    await adapter.start()
    assert adapter.healthy
    return adapter, registry, peer


async def _until_healthy(adapter: RedisAdapter, seconds: float = 8) -> bool:
    for _ in range(int(seconds / 0.05)):
        if adapter.healthy:
            return True
        await asyncio.sleep(0.05)
    return adapter.healthy


def _outage(adapter: RedisAdapter) -> None:
    adapter._lost(RedisConnectionError("simulated outage"))


def test_redis_lost_again_during_the_rebuild_is_retried(redis) -> None:
    async def scenario() -> None:
        adapter, _, _ = await _started(redis)
        original = adapter.redis.execute_command
        armed = True

        async def flaky(*args: Any, **options: Any) -> Any:
            nonlocal armed
            # The first read of the rebuild: Redis is reported lost (by another task) while
            # the node is re-publishing its state.
            if armed and args[0] in ("SMEMBERS", "SCRIPT EXISTS"):
                armed = False
                _outage(adapter)
            return await original(*args, **options)

        adapter.redis.execute_command = flaky  # type: ignore[method-assign]
        _outage(adapter)
        try:
            assert await _until_healthy(adapter), "the node stayed cut off"
            assert not armed
        finally:
            await adapter.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("topology", ["single", "cluster"])
def test_redis_rebuild_removes_what_left_during_the_outage(
    request: pytest.FixtureRequest, topology: str
) -> None:
    cluster = topology == "cluster"
    redis = request.getfixturevalue("redis_cluster" if cluster else "redis")
    # On the cluster the two apps' keys lie on different shards.
    assert key_slot(b"{app}") // 5462 != key_slot(b"{other}") // 5462

    async def scenario() -> None:
        other = ChannelRegistry()
        adapter, registry, peer = await _started(redis, cluster, {OTHER: other})
        watcher = Sock("1.9")
        other.add("elsewhere", watcher)
        await adapter.subscribe(OTHER, "elsewhere", watcher.socket_id)
        stays, goes = Sock("1.1"), Sock("1.2")
        for sock, channel in ((stays, "keep"), (goes, "gone"), (stays, "presence-room")):
            registry.add(channel, sock)
            await adapter.subscribe(APP, channel, sock.socket_id)
        registry.add("presence-room", goes)
        await adapter.subscribe(APP, "presence-room", goes.socket_id)
        for sock, user in ((stays, "u1"), (goes, "u2")):
            peer.presence[("presence-room", sock.socket_id)] = user
            await adapter.presence_join(APP, "presence-room", sock.socket_id, user, {"n": user})
            peer.users[sock.socket_id] = user
            await adapter.user_join(APP, user, sock.socket_id)

        _outage(adapter)
        # While cut off, `goes` disconnects: only local state learns of it.
        for channel in ("gone", "presence-room"):
            registry.remove(channel, goes)
            await adapter.unsubscribe(APP, channel, goes.socket_id)
        del peer.presence[("presence-room", goes.socket_id)]
        assert await adapter.presence_leave(APP, "presence-room", goes.socket_id, "u2")
        del peer.users[goes.socket_id]
        assert await adapter.user_leave(APP, "u2", goes.socket_id)
        assert peer.reported == []
        # their webhooks wait for the rebuild, which reports them (once) below
        member = LeaveKey.for_member(APP, "presence-room", "u2")
        assert not await adapter.take_pending_leave(member)
        try:
            assert await _until_healthy(adapter)
            occupied = await adapter.occupied_channels(APP, "")
            assert set(occupied) == {"keep", "presence-room"}
            assert occupied["presence-room"].subscription_count == 1
            assert set(await adapter.presence_members(APP, "presence-room")) == {"u1"}
            assert await adapter.users_online(APP, ["u1", "u2"]) == {"u1"}
            assert sorted(peer.reported) == [
                ("channel_vacated", "gone"),
                ("member_removed", "presence-room", "u2"),
                ("user_offline", "u2"),
            ]
            assert set(await adapter.occupied_channels(OTHER, "")) == {"elsewhere"}
        finally:
            await adapter.close()

    asyncio.run(scenario())
