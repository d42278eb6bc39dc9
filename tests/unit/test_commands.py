"""Parsing client frames into commands: what real clients send, and what must be refused."""

from __future__ import annotations

import contextlib

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyserver.protocol.commands import (
    ClientEvent,
    Ping,
    Signin,
    Subscribe,
    Unsubscribe,
    parse_command,
)
from pyserver.protocol.errors import BadMessage, PusherError


def test_ping_with_and_without_data() -> None:
    assert parse_command(b'{"event":"pusher:ping","data":{}}') == Ping()
    assert parse_command(b'{"event":"pusher:ping"}') == Ping()


def test_subscribe_as_pusher_js_sends_it() -> None:
    frame = b'{"event":"pusher:subscribe","data":{"auth":"","channel":"my-channel"}}'
    assert parse_command(frame) == Subscribe("my-channel", "", None)


def test_subscribe_keeps_channel_data_raw() -> None:
    raw = '{"user_id": 10, "user_info": {"name": "x"}}'
    frame = orjson.dumps(
        {
            "event": "pusher:subscribe",
            "data": {"channel": "presence-a", "auth": "k:s", "channel_data": raw},
        }
    )
    command = parse_command(frame)
    assert isinstance(command, Subscribe) and command.channel_data == raw


def test_subscribe_with_string_data_from_old_clients() -> None:
    frame = orjson.dumps({"event": "pusher:subscribe", "data": '{"channel":"a"}'})
    assert parse_command(frame) == Subscribe("a", None, None)


def test_unsubscribe_and_signin() -> None:
    assert parse_command(b'{"event":"pusher:unsubscribe","data":{"channel":"a"}}') == (
        Unsubscribe("a")
    )
    frame = b'{"event":"pusher:signin","data":{"auth":"k:s","user_data":"{\\"id\\":\\"1\\"}"}}'
    assert parse_command(frame) == Signin("k:s", '{"id":"1"}')


def test_client_event_data_object_is_encoded_once_and_string_kept() -> None:
    obj = parse_command(b'{"event":"client-a","channel":"private-x","data":{"b":1}}')
    assert obj == ClientEvent("client-a", "private-x", '{"b":1}')
    text = parse_command(b'{"event":"client-a","channel":"private-x","data":"hello"}')
    assert text == ClientEvent("client-a", "private-x", "hello")


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"[]",
        b'{"event":1}',
        b'{"event":"pusher:unsubscribe"}',
        b'{"event":"pusher:subscribe","data":"x"}',
        b'{"event":"pusher:subscribe","data":{"channel":123}}',
        b'{"event":"pusher:subscribe","data":{"channel":"a","auth":5}}',
        b'{"event":"pusher:signin","data":{"auth":"k:s"}}',
        b'{"event":"pusher:unknown","data":{}}',
        b'{"event":"client-a","data":{}}',
        b"\xff\xfe",
    ],
)
def test_bad_frames_raise_bad_message(frame: bytes) -> None:
    with pytest.raises(BadMessage):
        parse_command(frame)


def test_json_too_deep_to_write_back_is_a_bad_message() -> None:
    deep = "[" * 300 + "]" * 300  # orjson reads it but cannot write it again
    frames_ = (
        '{"event":"client-x","channel":"private-c","data":' + deep + "}",
        '{"event":"pusher:subscribe","data":{"channel":"presence-c","channel_data":{"a":'
        + deep
        + "}}}",
    )
    for frame in frames_:
        with pytest.raises(BadMessage, match="nested more than 255 levels"):
            parse_command(frame.encode())


@given(st.binary(max_size=200))
def test_any_bytes_parse_or_raise_a_pusher_error(data: bytes) -> None:
    with contextlib.suppress(PusherError):
        parse_command(data)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=10), children, max_size=4)
        ),
        max_leaves=20,
    ),
    st.sampled_from(
        [
            "pusher:subscribe",
            "pusher:unsubscribe",
            "pusher:signin",
            "pusher:ping",
            "client-x",
            "other",
        ]
    ),
)
def test_any_json_shape_parses_or_raises_a_pusher_error(data: object, event: str) -> None:
    with contextlib.suppress(PusherError):
        parse_command(orjson.dumps({"event": event, "channel": "private-a", "data": data}))
