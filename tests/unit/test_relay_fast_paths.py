"""The client-event relay's shortcuts produce exactly what the full paths produce (issue 17).

A relayed client event skips a few general steps: whole text frames are read without the
fragment bookkeeping, frames are built without `encode_frame`, the app inlines its checks
and its publish, the token bucket refills once per timestamp, and the console feed records
inline. Each test below compares a shortcut with the general path (or the wire shape the
protocol fixes) on arbitrary input."""

from __future__ import annotations

import os
import time

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyserver.channels.app import App
from pyserver.cluster.local import LocalAdapter
from pyserver.config import AppConfig
from pyserver.console.feed import EventFeed
from pyserver.protocol.commands import ClientEvent, parse_command
from pyserver.protocol.errors import BadMessage, ClientEventRateLimited, ClientEventRejected
from pyserver.protocol.websocket import (
    OP_BINARY,
    OP_CONTINUATION,
    OP_PING,
    OP_TEXT,
    FrameReader,
    WebSocketError,
    encode_frame,
    text_frame,
)
from pyserver.ratelimit import TokenBucket
from tests.unit.fakes import FakeClient

# --- framing ---------------------------------------------------------------------------------


@given(st.sampled_from([0, 1, 125, 126, 127, 65_535, 65_536, 70_000]) | st.integers(0, 300))
def test_text_frame_is_encode_frame(size: int) -> None:
    payload = os.urandom(size)
    assert text_frame(payload) == encode_frame(OP_TEXT, payload)


def _masked(first: int, payload: bytes) -> bytes:
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = bytes((first, 0x80 | n))
    elif n < 65536:
        head = bytes((first, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + n.to_bytes(8, "big")
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


MESSAGE = st.tuples(
    st.sampled_from([OP_TEXT, OP_BINARY, OP_PING]),
    st.binary(max_size=300),
    st.integers(1, 4),  # fragments (data messages only)
    st.booleans(),  # a ping between the fragments
)


@given(st.lists(MESSAGE, max_size=8), st.lists(st.integers(0, 2000), max_size=6))
def test_frames_read_whole_or_fragmented_come_out_as_sent(
    messages: list[tuple[int, bytes, int, bool]], cuts: list[int]
) -> None:
    wire, expected = b"", []
    for opcode, payload, parts, ping_inside in messages:
        if opcode == OP_PING:
            wire += _masked(0x80 | OP_PING, payload[:125])
            expected.append((OP_PING, payload[:125]))
            continue
        step = -(-len(payload) // parts) or 1
        chunks = [payload[i : i + step] for i in range(0, len(payload), step)] or [b""]
        for i, chunk in enumerate(chunks):
            fin = 0x80 if i == len(chunks) - 1 else 0
            wire += _masked(fin | (opcode if i == 0 else OP_CONTINUATION), chunk)
            if ping_inside and not fin:
                wire += _masked(0x80 | OP_PING, b"p")
                expected.append((OP_PING, b"p"))
        expected.append((opcode, payload))
    reader, got, start = FrameReader(1 << 20), [], 0
    for cut in [*sorted({min(c, len(wire)) for c in cuts}), len(wire)]:
        got += reader.feed(wire[start:cut])
        start = cut
    # control frames come as they arrive, so order by the wire: compare as a multiset per kind
    assert [m for m in got if m[0] != OP_PING] == [m for m in expected if m[0] != OP_PING]
    assert sorted(m for m in got if m[0] == OP_PING) == sorted(
        m for m in expected if m[0] == OP_PING
    )


def test_a_whole_text_frame_inside_a_fragmented_message_is_still_refused() -> None:
    reader = FrameReader(1 << 20)
    assert reader.feed(_masked(OP_TEXT, b"first half")) == []  # FIN clear: fragments pending
    with pytest.raises(WebSocketError, match="continuation"):
        reader.feed(_masked(0x80 | OP_TEXT, b"a whole message"))


# --- the relayed frame -----------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
EVENT = st.text(max_size=12).map(lambda s: "client-" + s)


def _relaying_app(channel: str, user_ids: tuple[str | None, str | None]) -> tuple[App, list]:
    app = App(AppConfig(id="1", key="k", secret="s", client_events=True), LocalAdapter())
    clients = []
    for n, user_id in enumerate(user_ids):
        client = FakeClient(f"1.{n}")
        client.session.subscribing(channel, user_id)
        client.session.joined(channel)
        app.registry.add(channel, client)
        clients.append(client)
    return app, clients


def _expected(event: str, channel: str, data: object, user_id: str | None) -> bytes:
    """The wire shape of a relayed client event (`spec/protocol.md`): `data` as a string."""
    text = data if isinstance(data, str) else orjson.dumps(data).decode()
    message = {"event": event, "channel": channel, "data": text}
    if user_id is not None:
        message["user_id"] = user_id
    return encode_frame(OP_TEXT, orjson.dumps(message))


@given(EVENT, JSON, st.sampled_from(["private-a", "presence-a", "private-cache-a"]))
def test_the_relayed_frame_is_the_protocols_shape(event: str, data: object, channel: str) -> None:
    presence = channel.startswith("presence-")
    app, (sender, receiver) = _relaying_app(channel, ("u0", "u1") if presence else (None, None))
    raw = orjson.dumps({"event": event, "channel": channel, "data": data})
    command = parse_command(raw)
    assert isinstance(command, ClientEvent)
    assert app.client_event(sender, command) is None
    assert receiver.sent == [_expected(event, channel, data, "u0" if presence else None)]
    assert sender.sent == []


@pytest.mark.parametrize(
    ("channel", "subscribed"),
    [
        ("public-a", True),
        ("private-encrypted-a", True),
        ("#server-to-user-1", True),
        ("private-b", False),
    ],
)
def test_the_inlined_checks_refuse_what_they_refused(channel: str, subscribed: bool) -> None:
    app, (sender, receiver) = _relaying_app(channel, (None, None))
    if not subscribed:
        sender.session.leave(channel)
    with pytest.raises(ClientEventRejected):
        app.client_event(sender, ClientEvent("client-x", channel, "{}"))
    assert receiver.sent == []


def test_a_too_deep_client_event_is_a_bad_message() -> None:
    deep = b'{"event":"client-x","channel":"private-a","data":' + b"[" * 300 + b"]" * 300 + b"}"
    with pytest.raises(BadMessage, match="255"):
        parse_command(deep)


def test_the_rate_limit_still_refuses_on_the_inlined_path() -> None:
    app, (sender, receiver) = _relaying_app("private-a", (None, None))
    app.config = app.config.model_copy(update={"max_client_events_per_second": 2})
    event = ClientEvent("client-x", "private-a", "{}")
    app.client_event(sender, event)
    app.client_event(sender, event)
    with pytest.raises(ClientEventRateLimited):
        app.client_event(sender, event)
    assert len(receiver.sent) == 2


# --- the token bucket ------------------------------------------------------------------------


class ReferenceBucket:
    """The token bucket as it was before the refill was skipped for a repeated timestamp."""

    def __init__(self, rate: float, now: float) -> None:
        self.rate, self.allowance, self.stamp = rate, rate, now

    def take(self, cost: float, now: float) -> bool:
        cost = min(cost, self.rate)
        self.allowance = min(self.rate, self.allowance + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.allowance < cost:
            return False
        self.allowance -= cost
        return True


@given(
    st.integers(1, 50),
    st.lists(
        st.tuples(st.sampled_from([0.0, 0.0, 0.001, 0.05, 0.3, 2.0]), st.floats(0.5, 60)),
        max_size=60,
    ),
)
def test_the_bucket_decides_as_before(rate: int, steps: list[tuple[float, float]]) -> None:
    now = 1000.0
    fast, slow = TokenBucket(rate, now), ReferenceBucket(rate, now)
    for advance, cost in steps:
        now += advance
        assert fast.take(cost, now) == slow.take(cost, now)
        assert fast.allowance == pytest.approx(slow.allowance, abs=1e-9)


# --- the console feed ------------------------------------------------------------------------


def test_the_inlined_console_record_is_the_general_one() -> None:
    feed = EventFeed(per_app=10)
    before = time.time()
    feed.client_event("a", "private-c", "client-x", '{"k":1}', "1.2", "u")
    feed.api_event("a", "private-c", "client-x", '{"k":1}')  # recorded by the general `_add`
    (client, api) = list(feed._records["a"])
    assert client[0] == 1 and api[0] == 2 and feed.added["a"] == 2
    assert before <= client[1] <= time.time()
    assert client[2:] == ("client", "private-c", "client-x", '{"k":1}', "1.2", "u")
    assert api[2:6] == ("api", "private-c", "client-x", '{"k":1}')
    assert [e["kind"] for e in feed.since("a", 0)] == ["client", "api"]
