"""The history API handler (pyserver/history/api.py), without sockets, on the memory store:
the 200 body of the contract, paging with `next`, the head, and the 400/404/409 answers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pyserver.config import HistoryRule
from pyserver.history.api import Reply, history_reply
from pyserver.history.memory import MemoryHistoryStore
from pyserver.protocol import frames
from pyserver.protocol.history import Position, RuleBook
from tests.history.conftest import Clock

RULES = RuleBook(
    [HistoryRule(channels="chat-*", limit=50, ttl=600), HistoryRule(channels="room-?")]
)


@pytest.fixture
def store() -> MemoryHistoryStore:
    store = MemoryHistoryStore(1 << 24, Clock())
    rule = RULES.rule_for("chat-1")
    assert rule is not None
    for n in range(1, 26):
        user = "u1" if n == 3 else None
        payload = frames.channel_event("message", "chat-1", f"text {n}", user)
        store.append_now("app", "chat-1", rule, payload, 1_733_300_000_000 + n)
    return store


def ask(store: MemoryHistoryStore, channel: str = "chat-1", **query: str) -> Reply:
    return asyncio.run(history_reply(RULES, store, "app", channel, query))


def texts(body: dict[str, Any]) -> list[str]:
    return [event["data"] for event in body["events"]]


def test_the_default_is_the_newest_100_newest_first(store: MemoryHistoryStore) -> None:
    reply = ask(store)
    assert reply.status == 200
    body = reply.body
    assert set(body) == {"channel", "epoch", "position", "events", "next"}
    assert body["channel"] == "chat-1" and body["epoch"] == store.epoch
    assert texts(body) == [f"text {n}" for n in range(25, 0, -1)]
    assert body["next"] is None
    assert body["position"] == body["events"][0]["position"]
    newest = body["events"][0]
    assert newest == {
        "position": newest["position"],
        "event": "message",
        "data": "text 25",
        "time_ms": 1_733_300_000_025,
    }
    third = body["events"][22]
    assert third["data"] == "text 3" and third["user_id"] == "u1"


def test_pages_follow_next_in_both_directions(store: MemoryHistoryStore) -> None:
    seen: list[str] = []
    query: dict[str, str] = {"limit": "10"}
    while True:
        body = ask(store, **query).body
        seen += texts(body)
        if body["next"] is None:
            break
        query = {"limit": "10", "before": body["next"]}
    assert seen == [f"text {n}" for n in range(25, 0, -1)]
    seen, query = [], {"limit": "10", "direction": "forward"}
    while True:
        body = ask(store, **query).body
        seen += texts(body)
        if body["next"] is None:
            break
        query = {"limit": "10", "direction": "forward", "after": body["next"]}
    assert seen == [f"text {n}" for n in range(1, 26)]


def test_limit_zero_is_the_head_for_the_race_free_pattern(store: MemoryHistoryStore) -> None:
    head = ask(store, limit="0").body
    assert head["events"] == [] and head["next"] is None
    rule = RULES.rule_for("chat-1")
    assert rule is not None
    store.append_now("app", "chat-1", rule, frames.channel_event("message", "chat-1", "new"), 1)
    after = ask(store, direction="forward", after=head["position"]).body
    assert texts(after) == ["new"]
    empty = ask(store, "room-1", limit="0").body
    assert empty["events"] == [] and empty["position"].startswith(store.epoch + ".")


def test_no_rule_is_404(store: MemoryHistoryStore) -> None:
    reply = ask(store, "presence-chat-1")
    assert reply.status == 404
    assert reply.body["status"] == 404 and "no history rule" in reply.body["error"]


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ({"limit": "1001"}, "limit"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"limit": "\uff11"}, "limit"),  # a full-width digit: not ASCII
        ({"direction": "up"}, "direction"),
        ({"after": "nonsense"}, "after"),
        ({"before": "abc.2a.0"}, "before"),
    ],
)
def test_bad_parameters_are_400(
    store: MemoryHistoryStore, query: dict[str, str], words: str
) -> None:
    reply = ask(store, **query)
    assert reply.status == 400 and reply.body["status"] == 400
    assert words in reply.body["error"]


def test_a_bad_channel_name_is_400(store: MemoryHistoryStore) -> None:
    assert ask(store, "chat-<1>").status == 400


def test_a_position_the_channel_never_reached_is_400(store: MemoryHistoryStore) -> None:
    ahead = Position(store.epoch, 99).encode()
    assert ask(store, after=ahead).status == 400


def test_another_epoch_is_409_with_the_current_epoch(store: MemoryHistoryStore) -> None:
    old = Position("zzzz", 3).encode()
    for name in ("after", "before"):
        reply = ask(store, **{name: old})
        assert reply.status == 409
        assert reply.body["status"] == 409 and reply.body["epoch"] == store.epoch
        assert "epoch" in reply.body["error"]
