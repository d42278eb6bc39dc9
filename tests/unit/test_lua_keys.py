"""Every Lua script touches only keys it is given in KEYS, and the keys one script gets share
one hash slot: what Redis Cluster needs to route a script (issue 14, the script audit).

The first part reads every script of the package (each module-level string that calls
`redis.call`): the key argument of each call must be `KEYS[n]` or a local bound to one,
never a name built from ARGV or from data. The second part checks the key names: all keys of
one app, and all keys of one node, lie in one slot whatever the channel or user.
"""

from __future__ import annotations

import importlib
import pkgutil
import re

from redis.asyncio import Redis
from redis.crc import key_slot

import pyserver
from pyserver.cluster.leaves import LeaveKey
from pyserver.cluster.redis.keys import RedisKeys
from pyserver.webhooks.redis_store import RedisDeliveryStore

_CALL = re.compile(r"redis\.call\('([A-Z]+)'(?:,\s*([^,)]+))?")
_BOUND = re.compile(r"local\s+([\w,\s]+?)\s*=\s*(KEYS\[\d+\](?:\s*,\s*KEYS\[\d+\])*)")
_KEYLESS = {"TIME", "PUBLISH"}
"""Calls whose first argument is no key: a classic pub/sub channel is not bound to a slot
(SPUBLISH's channel is, and is checked like a key)."""


def _scripts() -> dict[str, str]:
    found = {}
    for info in pkgutil.walk_packages(pyserver.__path__, "pyserver."):
        if info.name.endswith("__main__"):
            continue  # runs the server
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, str) and "redis.call(" in value:
                found[f"{info.name}.{name}"] = value
    return found


def _key_locals(script: str) -> set[str]:
    names: set[str] = set()
    for match in _BOUND.finditer(script):
        names.update(n.strip() for n in match.group(1).split(","))
    # REAP_PRESENCE: `pending[ARGV[i]] = KEYS[i]` maps users to keys it was given.
    names.update(m.group(1) + "[" for m in re.finditer(r"(\w+)\[[^=\n]*\]\s*=\s*KEYS\[", script))
    return names


def test_every_script_uses_only_keys_it_was_given() -> None:
    scripts = _scripts()
    assert len(scripts) >= 15, sorted(scripts)  # the state, webhook, console, history ones
    for where, script in scripts.items():
        bound = _key_locals(script)
        for command, key in _CALL.findall(script):
            if command in _KEYLESS:
                continue
            key = key.strip()
            ok = re.fullmatch(r"KEYS\[\d+\]", key) or key in bound
            ok = ok or any(key.startswith(prefix) for prefix in bound if prefix.endswith("["))
            assert ok, f"{where}: {command} on {key!r}, not a key from KEYS"


def test_the_keys_of_one_app_share_a_slot_and_so_do_those_of_one_node() -> None:
    keys = RedisKeys("pfx")
    for app in ("1001", "app-with-dashes", "x"):
        slots = {
            key_slot(name.encode())
            for channel in ("a", "presence-room", "private-{odd}", "cache-z")
            for name in (
                keys.subs(app, channel),
                keys.channels(app),
                keys.pconns(app, channel),
                keys.pmembers(app, channel),
                keys.user(app, channel),
                keys.cache(app, channel),
                keys.index(app, "node-1"),
                keys.pending(LeaveKey.for_channel(app, channel)),
                keys.pending(LeaveKey.for_member(app, channel, "u")),
                keys.pending(LeaveKey.for_user(app, "u")),
            )
        }
        assert len(slots) == 1, (app, slots)
    for node in ("host-1-abc", "n"):
        names = (keys.alive, keys.conns, keys.apps, keys.leaving, keys.reaping)
        assert len({key_slot(f(node).encode()) for f in names}) == 1


def test_the_webhook_queue_lives_in_one_slot() -> None:
    store = RedisDeliveryStore(Redis(), "pfx")  # never connects: only names its keys
    names = [store.records, store.due, store.tries, store.owners, store.fence]
    assert len({key_slot(n.encode()) for n in names}) == 1
