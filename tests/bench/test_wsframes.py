"""WebSocket framing against the examples of RFC 6455, and the client against a real
WebSocket server (the `websockets` library) on 127.0.0.1."""

from __future__ import annotations

import asyncio

import pytest

from bench import wsframes
from bench.wsclient import Gate, open_ws

MASK = bytes.fromhex("37fa213d")


def test_accept_key_of_the_rfc_example() -> None:
    assert wsframes.accept_for("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_masked_hello_of_the_rfc() -> None:
    frame = wsframes.encode_frame(wsframes.OP_TEXT, b"Hello", MASK)
    assert frame == bytes.fromhex("818537fa213d7f9f4d5158")
    assert wsframes.apply_mask(wsframes.apply_mask(b"Hello", MASK), MASK) == b"Hello"
    assert wsframes.apply_mask(b"", MASK) == b""


@pytest.mark.parametrize("size", [0, 125, 126, 65_535, 65_536, 70_000])
def test_lengths_roundtrip(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = wsframes.encode_frame(wsframes.OP_BINARY, payload, MASK)
    (parsed,) = wsframes.FrameParser(max_size=1 << 20).feed(frame)
    assert parsed == wsframes.RawFrame(True, wsframes.OP_BINARY, payload)


def test_parser_handles_byte_by_byte_input_and_fragments() -> None:
    stream = bytes.fromhex("010348656c") + bytes.fromhex("80026c6f") + bytes.fromhex("8a00")
    parser = wsframes.FrameParser()
    frames: list[wsframes.RawFrame] = []
    for byte in stream:
        frames += parser.feed(bytes([byte]))
    assert frames == [
        wsframes.RawFrame(False, wsframes.OP_TEXT, b"Hel"),
        wsframes.RawFrame(True, wsframes.OP_CONT, b"lo"),
        wsframes.RawFrame(True, wsframes.OP_PONG, b""),
    ]
    assert parser.buffer == bytearray()


def test_parser_keeps_an_incomplete_tail() -> None:
    parser = wsframes.FrameParser()
    frames = parser.feed(bytes.fromhex("810548656c6c6f" + "810548"))
    assert frames == [wsframes.RawFrame(True, wsframes.OP_TEXT, b"Hello")]
    assert parser.buffer == bytearray(bytes.fromhex("810548"))
    assert parser.feed(bytes.fromhex("656c6c6f")) == [
        wsframes.RawFrame(True, wsframes.OP_TEXT, b"Hello")
    ]


def test_parser_rejects_reserved_bits_and_huge_frames() -> None:
    with pytest.raises(wsframes.FrameError):
        wsframes.FrameParser().feed(bytes.fromhex("c100"))
    with pytest.raises(wsframes.FrameError) as exc:
        wsframes.FrameParser(max_size=10).feed(bytes.fromhex("817e0100"))
    assert exc.value.code == 1009


def test_close_payload_roundtrip() -> None:
    assert wsframes.parse_close(wsframes.close_payload(4201, "bye")) == (4201, "bye")
    assert wsframes.parse_close(b"") == (None, "")


def test_handshake_response_check() -> None:
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    good = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    )
    wsframes.check_handshake_response(good, key)
    with pytest.raises(wsframes.FrameError, match="refused"):
        wsframes.check_handshake_response(b"HTTP/1.1 404 Not Found\r\n", key)
    with pytest.raises(wsframes.FrameError, match="Accept"):
        wsframes.check_handshake_response(good.replace(b"s3p", b"xxx"), key)
    request = wsframes.handshake_request("127.0.0.1:1", "/app/k?x=1", key, "ua")
    assert request.startswith(b"GET /app/k?x=1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n")
    assert b"Sec-WebSocket-Version: 13\r\n" in request and request.endswith(b"\r\n\r\n")


def test_client_against_a_real_server_on_loopback() -> None:
    server_mod = pytest.importorskip("websockets.asyncio.server")

    async def scenario() -> None:
        async def handler(ws: object) -> None:
            await ws.send('{"event":"hello"}')  # type: ignore[attr-defined]
            await ws.ping()  # type: ignore[attr-defined]  # the client must answer
            async for message in ws:  # type: ignore[attr-defined]
                await ws.send("echo:" + message)  # type: ignore[attr-defined]
                if message == "bye":
                    await ws.close(4000, "done")  # type: ignore[attr-defined]

        async with server_mod.serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            got: list[bytes] = []
            gate = Gate()
            conn = await open_ws(
                f"ws://127.0.0.1:{port}/x", lambda payload, _now: got.append(payload), 5, gate
            )
            await conn.send("x" * 70_000)  # a 64-bit length frame, masked
            await conn.send("bye")
            await asyncio.wait_for(conn.lost, 5)
            assert got[0] == b'{"event":"hello"}'
            assert got[1] == b"echo:" + b"x" * 70_000
            assert got[2] == b"echo:bye"
            assert conn.close_code == 4000

    asyncio.run(asyncio.wait_for(scenario(), 20))
