"""RFC 6455 framing without sockets."""

from __future__ import annotations

import os

import pytest

from pyserver.protocol.websocket import (
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameReader,
    WebSocketError,
    accept_key,
    close_frame,
    encode_frame,
    parse_close,
)
from tests.wsframes import client_frame


def test_accept_key_rfc_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_server_frame_lengths(size: int) -> None:
    frame = encode_frame(OP_TEXT, b"x" * size)
    assert frame[0] == 0x81
    assert frame.endswith(b"x" * size) and len(frame) - size in (2, 4, 10)


@pytest.mark.parametrize("size", [5, 300, 70000])
def test_reader_unmasks_and_handles_split_input(size: int) -> None:
    payload = os.urandom(size)
    data = client_frame(OP_TEXT, payload) + client_frame(OP_PING, b"p")
    reader = FrameReader(max_size=1 << 20)
    messages = []
    for i in range(0, len(data), 7):
        messages += reader.feed(data[i : i + 7])
    assert messages == [(OP_TEXT, payload), (OP_PING, b"p")]


def test_a_lone_empty_pong_is_exactly_what_feed_reads_as_one() -> None:
    """The keepalive's shortcut (`lone_empty_pong`) must say yes only where `feed` would
    return one empty pong and keep nothing buffered."""
    pong = client_frame(OP_PONG, b"")
    cases = [
        pong,
        client_frame(OP_PONG, b"x"),
        client_frame(OP_PING, b""),
        client_frame(OP_CLOSE, b""),
        client_frame(OP_TEXT, b""),
        client_frame(OP_PONG, b"", masked=False),
        pong[:5],
        pong + pong,
        pong + pong[:3],
        bytes([pong[0] | 0x40]) + pong[1:],  # RSV1 on a control frame: an error
        bytes([pong[0] & 0x7F]) + pong[1:],  # not FIN: an error
    ]
    for data in cases:
        for buffered in (b"", client_frame(OP_TEXT, b"abc")[:3]):
            reader = FrameReader(100, deflate=True)
            if buffered:
                reader.feed(buffered)
            shortcut = reader.lone_empty_pong(data)
            try:
                fed = reader.feed(data)
            except WebSocketError:
                fed = None
            assert shortcut == (fed == [(OP_PONG, b"")] and reader._buffer == b""), data


def test_reader_reassembles_fragments_around_control_frames() -> None:
    reader = FrameReader(max_size=100)
    data = (
        client_frame(OP_TEXT, b"ab", fin=False)
        + client_frame(OP_PING, b"")
        + client_frame(0, b"cd", fin=True)
    )
    assert reader.feed(data) == [(OP_PING, b""), (OP_TEXT, b"abcd")]


def test_reader_refuses_unmasked_and_too_big_and_bad_continuation() -> None:
    with pytest.raises(WebSocketError) as exc:
        FrameReader(100).feed(client_frame(OP_TEXT, b"x", masked=False))
    assert exc.value.close_code == 1002
    with pytest.raises(WebSocketError) as exc:
        # refused from the header alone, before the payload arrives
        FrameReader(100).feed(client_frame(OP_TEXT, b"x" * 200)[:8])
    assert exc.value.close_code == 1009
    with pytest.raises(WebSocketError):
        FrameReader(100).feed(client_frame(0, b"x"))
    with pytest.raises(WebSocketError):
        FrameReader(100).feed(client_frame(OP_PING, b"x", fin=False))


def test_close_frame_round_trip() -> None:
    frame = close_frame(4201, "Pong reply not received")
    assert frame[0] == 0x80 | OP_CLOSE
    assert parse_close(frame[2:]) == (4201, "Pong reply not received")
    assert parse_close(b"") == (None, "")
    # a long reason is cut on a character boundary, so it stays valid UTF-8
    cut = close_frame(4001, "é" * 100)
    assert len(cut) == 2 + 2 + 122
    assert cut[4:].decode("utf-8") == "é" * 61


def test_deflate_round_trip_and_shared_compression() -> None:
    import zlib

    from pyserver.protocol.websocket import Deflater, inflate, offers_deflate, text_frame

    assert offers_deflate("permessage-deflate; client_max_window_bits, x-other")
    assert not offers_deflate("x-webkit-deflate-frame")
    deflater = Deflater()
    frame = text_frame(b'{"event":"e","data":"' + b"a" * 500 + b'"}')
    compressed = deflater.frame(frame)
    assert compressed[0] == 0xC1 and len(compressed) < len(frame)  # FIN + RSV1 + text
    assert deflater.frame(frame) is compressed, "a broadcast is compressed once"
    body = compressed[2:] if compressed[1] < 126 else compressed[4:]
    restored = zlib.decompressobj(-15).decompress(body + b"\x00\x00\xff\xff")
    assert restored == frame[2:] if frame[1] < 126 else frame[4:]
    ping = encode_frame(OP_PING, b"")
    assert deflater.frame(ping) == ping, "control frames are never compressed"
    assert inflate(body, 10_000).startswith(b'{"event":"e"')
    with pytest.raises(WebSocketError):
        inflate(body, 100)  # a bomb bigger than the limit is refused
    # the reader inflates a client's compressed message (an all-zero mask leaves it as is)
    assert compressed[1] < 126
    reader = FrameReader(max_size=10_000, deflate=True)
    header = bytes((compressed[0], compressed[1] | 0x80)) + b"\x00\x00\x00\x00"
    assert reader.feed(header + body) == [(OP_TEXT, restored)]
    with pytest.raises(WebSocketError):
        FrameReader(max_size=10_000).feed(header + body)  # RSV1 without the agreement
