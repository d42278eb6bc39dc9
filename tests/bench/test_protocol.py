"""Parsing of server frames and the bench's markers; building client messages."""

import json

import pytest

from bench import protocol
from bench.rss import parse_vmrss_kb


def test_connection_established_with_string_data() -> None:
    text = json.dumps(
        {
            "event": "pusher:connection_established",
            "data": json.dumps({"socket_id": "1.2", "activity_timeout": 30}),
        }
    )
    frame = protocol.parse_frame(text)
    assert frame.event == "pusher:connection_established"
    assert frame.channel is None
    assert protocol.connection_established(frame) == ("1.2", 30)


def test_connection_established_rejects_other_frames() -> None:
    frame = protocol.parse_frame('{"event":"pusher:pong","data":{}}')
    with pytest.raises(protocol.ProtocolError):
        protocol.connection_established(frame)


@pytest.mark.parametrize("text", ["not json", "[1,2]", '{"data":"x"}', '{"event":3}'])
def test_parse_frame_rejects_garbage(text: str) -> None:
    with pytest.raises(protocol.ProtocolError):
        protocol.parse_frame(text)


def test_marker_roundtrip_through_a_trigger_body() -> None:
    data = protocol.marker_text("ab12", 7, 123456789012345)
    body = json.loads(protocol.trigger_body("bench", ["c1"], data))
    assert body == {"name": "bench", "channels": ["c1"], "data": data}
    # The server relays `data` as a JSON string inside the event frame.
    frame_text = json.dumps({"event": "bench", "channel": "c1", "data": body["data"]})
    frame = protocol.parse_frame(frame_text)
    assert protocol.parse_marker(frame.data) == protocol.Marker("ab12", 7, 123456789012345)


def test_marker_from_an_object_as_some_servers_relay_client_events() -> None:
    frame = protocol.parse_frame(
        json.dumps(
            {
                "event": "client-bench",
                "channel": "private-x",
                "data": protocol.make_marker("r", 1, 5),
                "user_id": "u1",
            }
        )
    )
    assert frame.user_id == "u1"
    assert protocol.parse_marker(frame.data) == protocol.Marker("r", 1, 5)


@pytest.mark.parametrize(
    "data", [None, "plain text", '{"r":"x","s":"1","t":5}', {"r": "x", "s": 1}, [1], 5]
)
def test_parse_marker_ignores_foreign_data(data: object) -> None:
    assert protocol.parse_marker(data) is None


def test_error_code_and_message() -> None:
    frame = protocol.parse_frame(
        '{"event":"pusher:error","data":{"code":4301,"message":"Too many messages"}}'
    )
    assert protocol.error_code(frame) == 4301
    assert protocol.error_message(frame) == "Too many messages"
    frame = protocol.parse_frame('{"event":"pusher:error","data":"{\\"code\\":4001}"}')
    assert protocol.error_code(frame) == 4001


def test_presence_member_data() -> None:
    data = json.dumps({"user_id": "u1", "user_info": {"t": 9}})
    assert protocol.presence_user_id(data) == "u1"
    assert protocol.presence_user_info(data) == {"t": 9}
    assert protocol.presence_user_id({"user_id": 5}) == "5"
    assert protocol.presence_user_id("nope") is None
    succeeded = json.dumps({"presence": {"ids": ["a"], "hash": {}, "count": 1}})
    assert protocol.subscription_count(succeeded) == 1


def test_client_messages() -> None:
    assert json.loads(protocol.subscribe("c")) == {
        "event": "pusher:subscribe",
        "data": {"channel": "c"},
    }
    msg = json.loads(protocol.subscribe("presence-c", "k:sig", '{"user_id":"1"}'))
    assert msg["data"] == {
        "channel": "presence-c",
        "auth": "k:sig",
        "channel_data": '{"user_id":"1"}',
    }
    assert json.loads(protocol.unsubscribe("c"))["event"] == "pusher:unsubscribe"
    assert json.loads(protocol.ping()) == {"event": "pusher:ping", "data": {}}
    assert json.loads(protocol.pong()) == {"event": "pusher:pong", "data": {}}
    event = json.loads(protocol.client_event("client-x", "private-c", {"a": 1}))
    assert event == {"event": "client-x", "channel": "private-c", "data": {"a": 1}}


def test_ws_url() -> None:
    assert protocol.ws_url("127.0.0.1", 6001, "app-key") == (
        "ws://127.0.0.1:6001/app/app-key?protocol=7&client=js&version=8.4.0&flash=false"
    )
    assert protocol.ws_url("::1", 80, "k").startswith("ws://[::1]:80/app/k?")


def test_parse_vmrss() -> None:
    text = "Name:\tpython\nVmPeak:\t  100 kB\nVmRSS:\t   51234 kB\nThreads:\t1\n"
    assert parse_vmrss_kb(text) == 51234
    assert parse_vmrss_kb("Name: x\n") is None


def test_max_rate_client_events_are_the_same_json() -> None:
    from bench.scenarios.client_events import PADDING, event_prefix, marked_event

    for channel, run in (("private-bench-ab12-0", "ab12"), ('private-"odd\\é', 'r"\\')):
        prefix = event_prefix(channel, run)
        for seq, t_ns in ((0, 0), (7, 1_733_000_000_123_456_789)):
            marker = {**protocol.make_marker(run, seq, t_ns), "p": PADDING}
            built = protocol.client_event(protocol.CLIENT_EVENT, channel, marker)
            assert marked_event(prefix, seq, t_ns) == built
            frame = protocol.parse_frame(built)
            assert protocol.parse_marker(frame.data) == protocol.Marker(run, seq, t_ns)
    assert 90 <= len(protocol.dumps(marker)) <= 120  # about 100 bytes of data, as padded
