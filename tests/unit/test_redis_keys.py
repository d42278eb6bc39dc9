"""Key names of the Redis engine: every script's keys share one hash slot (Redis Cluster),
and no script makes a key name of its own."""

from __future__ import annotations

import re

import pytest
from redis.crc import key_slot

from pyserver.cluster.leaves import LeaveKey
from pyserver.cluster.redis import scripts
from pyserver.cluster.redis.keys import RedisKeys

K = RedisKeys("px")
APPS = ["1", "app-with:colon", "ü"]
CHANNELS = ["presence-room", "private-a:b", "x" * 200]
USERS = ["u", "user:42"]
NODES = ["host-1-abc", "n|2"]


def _one_slot(names: list[str]) -> bool:
    return len({key_slot(name.encode()) for name in names}) == 1


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("node", NODES)
def test_every_script_touches_one_slot(app: str, node: str) -> None:
    for channel in CHANNELS:
        # COUNT, SET_COUNT, REAP_COUNT
        assert _one_slot(
            [
                K.subs(app, channel),
                K.channels(app),
                K.pending(LeaveKey.for_channel(app, channel)),
                K.index(app, node),
            ]
        )
        # PRESENCE_JOIN, PRESENCE_LEAVE, REAP_PRESENCE
        members = [K.pending(LeaveKey.for_member(app, channel, u)) for u in USERS]
        assert _one_slot(
            [K.pconns(app, channel), K.pmembers(app, channel), *members, K.index(app, node)]
        )
    for user in USERS:  # USER_JOIN, USER_LEAVE, REAP_USER
        assert _one_slot(
            [K.user(app, user), K.pending(LeaveKey.for_user(app, user)), K.index(app, node)]
        )
    assert _one_slot([K.alive(node), K.reaping(node)])  # CLAIM_DEAD


def test_pending_keys_name_their_leave() -> None:
    assert (
        K.pending(LeaveKey.for_member("a", "presence-c", "u"))
        == "px:pending:member:{a}:presence-c:u"
    )
    assert K.pending(LeaveKey.for_channel("a", "c")) == "px:pending:channel:{a}:c"
    assert K.pending(LeaveKey.for_user("a", "u")) == "px:pending:user:{a}:u"


@pytest.mark.parametrize("name", scripts.NAMES)
def test_no_script_builds_a_key_name(name: str) -> None:
    source = getattr(scripts, name)
    calls = re.findall(r"redis\.call\('(\w+)', ([^,)]+)", source)
    assert calls, name
    for command, first in calls:
        assert first.startswith("KEYS[") or first.startswith("pending["), (name, command, first)
    assert " .. " not in source, "a key name concatenated in Lua"
