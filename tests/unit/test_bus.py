"""The cluster bus codec: exact bytes of each message kind, round trips, and any bytes
either decoding or raising `BusDecodeError`."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyserver.cluster import bus
from pyserver.cluster.bus import (
    Broadcast,
    BusDecodeError,
    Kick,
    Terminate,
    UserAnnounced,
    decode,
    encode,
    encode_broadcast,
)

FRAME = b"\x81\x05hello"


def _m(kind: bytes, fields: list[str | None], rest: bytes = b"") -> bytes:
    """Version, kind, one 4-byte length per field (0xFFFFFFFF: absent), strings, rest."""
    lengths = b"".join(
        b"\xff\xff\xff\xff" if f is None else len(f.encode()).to_bytes(4, "big") for f in fields
    )
    return b"\x01" + kind + lengths + b"".join(f.encode() for f in fields if f) + rest


def test_a_broadcast_in_full() -> None:
    raw = encode(Broadcast("n1", "a", "room", None, FRAME))
    assert raw == (
        b"\x01B\x00\x00\x00\x02\x00\x00\x00\x01\x00\x00\x00\x04\xff\xff\xff\xffn1aroom\x81\x05hello"
    )


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            Broadcast("n1", "app", "room", None, FRAME),
            _m(b"B", ["n1", "app", "room", None], FRAME),
        ),
        (
            Broadcast("n1", "app", "room", "1.2", b""),
            _m(b"B", ["n1", "app", "room", "1.2"]),
        ),
        (Terminate("n1", "app", "u"), _m(b"T", ["n1", "app", "u"])),
        (
            Kick("n1", "app", "presence-x", "u", None),
            _m(b"K", ["n1", "app", "presence-x", "u", None]),
        ),
        (
            Kick("n1", "app", "room", None, "1.2"),
            _m(b"K", ["n1", "app", "room", None, "1.2"]),
        ),
        (UserAnnounced("n1", "app", "ü", True), _m(b"U", ["n1", "app", "ü"], b"\x01")),
        (UserAnnounced("n1", "app", "u", False), _m(b"U", ["n1", "app", "u"], b"\x00")),
    ],
)
def test_each_message_has_exact_bytes(message: bus.Message, expected: bytes) -> None:
    assert encode(message) == expected
    assert decode(expected) == message


def test_the_hot_path_encoder_matches_the_general_one() -> None:
    message = Broadcast("node-7", "app", "private-x", "9.9", FRAME)
    assert encode_broadcast("node-7", "app", "private-x", "9.9", FRAME) == encode(message)


text = st.text(max_size=40)
messages = st.one_of(
    st.builds(Broadcast, text, text, text, st.none() | text, st.binary(max_size=200)),
    st.builds(Terminate, text, text, text),
    st.builds(Kick, text, text, text, st.none() | text, st.none() | text),
    st.builds(UserAnnounced, text, text, text, st.booleans()),
)


@given(messages)
def test_every_message_round_trips(message: bus.Message) -> None:
    assert decode(encode(message)) == message


@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_one_error(data: bytes) -> None:
    try:
        message = decode(data)
    except BusDecodeError:
        return
    assert isinstance(message, Broadcast | Terminate | Kick | UserAnnounced)


@given(messages, st.data())
def test_a_cut_or_damaged_message_raises_only_the_codec_error(
    message: bus.Message, data: st.DataObject
) -> None:
    raw = encode(message)
    cut = data.draw(st.integers(0, len(raw)))
    flip = data.draw(st.integers(0, 255))
    at = data.draw(st.integers(0, max(0, len(raw) - 1)))
    damaged = raw[:at] + bytes([raw[at] ^ flip]) + raw[at + 1 :] if raw else raw
    for candidate in (raw[:cut], damaged):
        with contextlib.suppress(BusDecodeError):
            decode(candidate)


@given(messages, text)
def test_a_node_knows_its_own_messages_without_decoding(message: bus.Message, other: str) -> None:
    raw = encode(message)
    assert bus.sent_by(raw, message.origin.encode())
    assert bus.sent_by(raw, other.encode()) == (other == message.origin)


@given(st.binary(max_size=100), text)
def test_own_message_check_never_fails_on_any_bytes(data: bytes, origin: str) -> None:
    if bus.sent_by(data, origin.encode()):
        assert data[0] == bus.VERSION


def test_another_version_is_refused() -> None:
    raw = encode(Terminate("n", "a", "u"))
    with pytest.raises(BusDecodeError, match="version"):
        decode(b"\x02" + raw[1:])
    with pytest.raises(BusDecodeError):
        decode(b'B["n","a","room",null]\n' + FRAME)  # the format before the version byte
