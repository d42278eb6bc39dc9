"""The webhook sender's bounds: overflow, expiry and shutdown are logged and counted, never
silent (receivers here are loopback ports that refuse or never answer)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from pyserver.webhooks.sender import Delivery, WebhookSender


def _sender(queue_size: int = 1) -> WebhookSender:
    return WebhookSender(
        queue_size=queue_size, concurrency=1, timeout=1, retry_window=300, retry_base=1
    )


def test_a_full_queue_drops_logs_and_counts(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> WebhookSender:
        sender = _sender(queue_size=1)
        for i in range(3):
            sender.submit(
                Delivery(
                    "http://127.0.0.1:9/x", f'{{"n":{i}}}'.encode(), {}, "a", time.time() + 300
                )
            )
        return sender

    with caplog.at_level(logging.ERROR, logger="pyserver.webhooks"):
        sender = asyncio.run(scenario())
    assert sender.stats.dropped_overflow == 2
    assert sender.pending == 1
    assert '{"n":2}' in caplog.text, "the dropped delivery's content is logged"


def test_an_expired_delivery_is_dropped_not_retried(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> WebhookSender:
        sender = _sender()
        sender.submit(Delivery("http://127.0.0.1:9/x", b"{}", {}, "a", time.time() + 0.5))
        claim = await sender.queue.take()
        claim.delivery.attempts = 1
        await sender._retry_later(claim, "HTTP 500")
        return sender

    with caplog.at_level(logging.ERROR, logger="pyserver.webhooks"):
        sender = asyncio.run(scenario())
    assert sender.stats.dropped_expired == 1 and sender.pending == 0


def test_failures_keep_the_worker_and_shutdown_logs_what_is_left(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        async def never_answer(reader: asyncio.StreamReader, _w: asyncio.StreamWriter) -> None:
            await reader.read()

        silent = await asyncio.start_server(never_answer, "127.0.0.1", 0)
        silent_port = silent.sockets[0].getsockname()[1]
        sender = WebhookSender(
            queue_size=10, concurrency=1, timeout=30, retry_window=300, retry_base=0.05
        )
        sender.start()
        refused = Delivery("http://127.0.0.1:9/x", b'{"n":"refused"}', {}, "a", time.time() + 300)
        sender.submit(refused)
        await asyncio.sleep(0.5)  # fails, waits, fails again... on its single worker
        assert refused.attempts >= 3 and not sender._workers[0].done()
        hanging = Delivery(
            f"http://127.0.0.1:{silent_port}/x", b'{"n":"hanging"}', {}, "a", time.time() + 300
        )
        sender.submit(hanging)
        await asyncio.sleep(0.2)
        await sender.close(grace=0.3)
        silent.close()

    with caplog.at_level(logging.ERROR, logger="pyserver.webhooks"):
        asyncio.run(scenario())
    assert 'not sent before shutdown: {"n":"refused"}' in caplog.text
    assert 'unanswered at shutdown: {"n":"hanging"}' in caplog.text
