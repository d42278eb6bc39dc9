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


def _s(text: str) -> bytes:
    raw = text.encode()
    return len(raw).to_bytes(4, "big") + raw


NONE = b"\xff\xff\xff\xff"


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (
            Broadcast("n1", "app", "room", None, FRAME),
            b"\x01B" + _s("n1") + _s("app") + _s("room") + NONE + FRAME,
        ),
        (
            Broadcast("n1", "app", "room", "1.2", b""),
            b"\x01B" + _s("n1") + _s("app") + _s("room") + _s("1.2"),
        ),
        (Terminate("n1", "app", "u"), b"\x01T" + _s("n1") + _s("app") + _s("u")),
        (
            Kick("n1", "app", "presence-x", "u", None),
            b"\x01K" + _s("n1") + _s("app") + _s("presence-x") + _s("u") + NONE,
        ),
        (
            Kick("n1", "app", "room", None, "1.2"),
            b"\x01K" + _s("n1") + _s("app") + _s("room") + NONE + _s("1.2"),
        ),
        (
            UserAnnounced("n1", "app", "ü", True),
            b"\x01U" + _s("n1") + _s("app") + _s("ü") + b"\x01",
        ),
        (
            UserAnnounced("n1", "app", "u", False),
            b"\x01U" + _s("n1") + _s("app") + _s("u") + b"\x00",
        ),
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


def test_another_version_is_refused() -> None:
    raw = encode(Terminate("n", "a", "u"))
    with pytest.raises(BusDecodeError, match="version"):
        decode(b"\x02" + raw[1:])
    with pytest.raises(BusDecodeError):
        decode(b'B["n","a","room",null]\n' + FRAME)  # the format before the version byte
