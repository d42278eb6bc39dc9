"""A node hears of app store changes on the Redis adapter's own link (real Redis, an SQLite
store): no second Redis client of its own, and a change announced by another process (as
`pyserver apps` does) is served at once, long before the next `app_store_refresh`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from pyserver.apps import store_for_url
from pyserver.cluster.app_changes import announce
from pyserver.config import AppConfig, Settings
from pyserver.server.server import Server
from tests.redisprocs import SingleRedis


def test_a_node_hears_app_changes_on_its_adapters_link(
    redis_single: SingleRedis, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'apps.db'}"
    settings = Settings(
        host="127.0.0.1",
        port=0,
        adapter="redis",
        redis_url=redis_single.url,
        redis_prefix=f"announce-{os.getpid()}",
        app_store=url,
        app_store_refresh=3_600,  # only the announcement can bring the change in time
    )

    async def scenario() -> None:
        server = Server(settings)
        listener = server.app_changes
        assert listener is not None
        assert listener.link is getattr(server.adapter, "link", None)
        await server.start()
        try:
            await asyncio.wait_for(listener.subscriber.ready.wait(), 10)
            store = store_for_url(url)
            await store.open()
            try:
                await store.add(AppConfig(id="announced", key="announced-key", secret="s"))
                cursor = await store.cursor()
            finally:
                await store.close()
            await announce(settings, cursor)  # from a link of its own, as `pyserver apps`
            deadline = asyncio.get_running_loop().time() + 5
            while "announced" not in server.apps_by_id:
                assert asyncio.get_running_loop().time() < deadline, "not announced"
                await asyncio.sleep(0.02)
        finally:
            await server.shutdown(grace=0.1)

    asyncio.run(asyncio.wait_for(scenario(), 60))
