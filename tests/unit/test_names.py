"""Channel names and prefixes (spec/protocol.md §5.1-5.3)."""

from __future__ import annotations

import pytest

from pyserver.protocol.names import ChannelKind, channel_name_problem, channel_type


@pytest.mark.parametrize(
    ("name", "kind", "cache"),
    [
        ("private-encrypted-cache-a", ChannelKind.ENCRYPTED, True),
        ("private-encrypted-a", ChannelKind.ENCRYPTED, False),
        ("private-cache-a", ChannelKind.PRIVATE, True),
        ("presence-cache-a", ChannelKind.PRESENCE, True),
        ("cache-a", ChannelKind.PUBLIC, True),
        ("private-a", ChannelKind.PRIVATE, False),
        ("presence-a", ChannelKind.PRESENCE, False),
        ("#server-to-user-7", ChannelKind.SERVER_TO_USER, False),
        ("a", ChannelKind.PUBLIC, False),
        ("my-private-a", ChannelKind.PUBLIC, False),  # prefixes are anchored
        ("privatea", ChannelKind.PUBLIC, False),  # and carry their dash
        ("presencex", ChannelKind.PUBLIC, False),
        ("cachex", ChannelKind.PUBLIC, False),
    ],
)
def test_prefixes(name: str, kind: ChannelKind, cache: bool) -> None:
    assert channel_type(name).kind is kind
    assert channel_type(name).cache is cache


@pytest.mark.parametrize("name", ["a", "A-z_0=9@,.;", "x" * 200, "#server-to-user-42"])
def test_valid_names(name: str) -> None:
    assert channel_name_problem(name) is None


@pytest.mark.parametrize(
    "name", ["", "x" * 201, "a b", "a/b", "é", "#other", "#server-to-user-", 5]
)
def test_invalid_names(name: object) -> None:
    assert channel_name_problem(name) is not None
