"""The webhook sender's bounds, without a network: overflow and expiry are logged and
counted, never silent."""

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
        delivery = Delivery("http://127.0.0.1:9/x", b"{}", {}, "a", time.time() + 0.5)
        delivery.attempts = 1
        sender._retry_later(delivery, "HTTP 500")
        return sender

    with caplog.at_level(logging.ERROR, logger="pyserver.webhooks"):
        sender = asyncio.run(scenario())
    assert sender.stats.dropped_expired == 1 and sender.pending == 0
