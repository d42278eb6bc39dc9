"""The per-connection debug logger: nothing at INFO, a socket id on every line at DEBUG."""

from __future__ import annotations

import logging

import orjson

from pyserver.logs import JsonFormatter, SocketLog, socket_log


def test_no_logger_object_exists_unless_debug_is_on() -> None:
    logger = logging.getLogger("pyserver.test-logs")
    logger.setLevel(logging.INFO)
    assert socket_log(logger, "1.2") is None
    logger.setLevel(logging.DEBUG)
    assert isinstance(socket_log(logger, "1.2"), SocketLog)


def test_socket_id_in_the_text_and_as_a_json_field(caplog) -> None:
    logger = logging.getLogger("pyserver.test-logs")
    logger.setLevel(logging.DEBUG)
    adapter = socket_log(logger, "12.34")
    assert adapter is not None
    with caplog.at_level(logging.DEBUG, logger="pyserver.test-logs"):
        adapter.debug("subscribed to %s", "news")
    (record,) = caplog.records
    assert record.getMessage() == "socket 12.34: subscribed to news"
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["socket_id"] == "12.34" and entry["message"] == record.getMessage()
