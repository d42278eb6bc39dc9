"""Pipelined HTTP requests: answered in order, the ready answers in one write (issue 17)."""

from __future__ import annotations

from typing import Any

from pyserver.config import load_settings
from pyserver.server.http_connection import HttpConnection
from pyserver.server.server import Server


class Transport:
    """Records writes and the close; no socket."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


def _connection() -> tuple[HttpConnection, Transport]:
    server = Server(load_settings(None))
    transport = Transport()
    connection = HttpConnection(server.state)
    connection.connection_made(transport)  # type: ignore[arg-type]
    return connection, transport


UP = b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n"
MISSING = b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"


def test_pipelined_answers_share_one_write_in_order() -> None:
    connection, transport = _connection()
    connection.data_received(UP + MISSING + UP)
    assert len(transport.writes) == 1
    answers = transport.writes[0].split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200", b"404", b"200"]
    assert not transport.closed


def test_a_single_request_is_written_at_once() -> None:
    connection, transport = _connection()
    connection.data_received(UP)
    connection.data_received(UP)
    assert len(transport.writes) == 2


def test_a_closing_answer_goes_out_after_the_held_ones_then_the_connection_closes() -> None:
    connection, transport = _connection()
    closing = b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    connection.data_received(UP + MISSING + closing)
    assert transport.closed
    assert len(transport.writes) == 1
    answers = transport.writes[0].split(b"HTTP/1.1 ")[1:]
    assert [a[:3] for a in answers] == [b"200", b"404", b"200"]
    assert b"Connection: close" in answers[2] and b"Connection: close" not in answers[1]
