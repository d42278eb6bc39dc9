"""The hot paths' shortcuts agree with the checks they skip (issue 17).

A trigger's validation, the query parsing and the signature each test the common case first
and fall back to the full check; these tests compare both on arbitrary input, so a shortcut
can never accept what the full check refuses."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyserver.api.triggers import _PLAIN_CHANNEL, check_channel, parse_trigger
from pyserver.auth import signatures
from pyserver.auth.signatures import sign
from pyserver.config import AppConfig
from pyserver.http import parse_target
from pyserver.protocol.errors import ApiError, BadRequest
from pyserver.protocol.names import channel_name_problem

NAME_ALPHABET = st.sampled_from("aZ09_-=@,.;#:/ é\n")


@given(st.text(NAME_ALPHABET, max_size=210) | st.text(max_size=30))
def test_the_channel_shortcut_accepts_only_valid_names(name: str) -> None:
    if _PLAIN_CHANNEL(name) is not None:
        assert channel_name_problem(name) is None
    try:
        check_channel(name)
    except BadRequest:
        assert channel_name_problem(name) is not None
    else:
        assert channel_name_problem(name) is None


def test_long_and_server_to_user_names_take_the_full_check() -> None:
    check_channel("a" * 200)
    check_channel("#server-to-user-42")
    for bad in ("a" * 201, "#server-to-user-", "#x", "", "a b"):
        with pytest.raises(BadRequest):
            check_channel(bad)


def test_data_over_the_limit_in_bytes_is_refused_though_short_in_characters() -> None:
    config = AppConfig(id="1", key="k", secret="s", max_event_payload_bytes=100)
    body = {"name": "e", "channel": "c", "data": "é" * 60}  # 60 characters, 120 bytes
    with pytest.raises(ApiError) as refused:
        parse_trigger(config, body, multi_channel=True)
    assert refused.value.status == 413
    assert parse_trigger(config, {**body, "data": "é" * 50}, multi_channel=True).data == "é" * 50
    assert parse_trigger(config, {**body, "data": {"a": 1}}, multi_channel=True).data == '{"a":1}'


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "A", "b", "auth_key", "", "x%41", "y+z"]), st.text()),
        max_size=6,
    )
)
def test_query_parsing_keeps_the_first_value_of_each_lower_case_key(
    pairs: list[tuple[str, str]],
) -> None:
    from urllib.parse import unquote

    text = "&".join(f"{k}={v.replace('&', '').replace('#', '')}" for k, v in pairs)
    _, query = parse_target("/p?" + text)
    expected: dict[str, str] = {}
    escaped = "%" in text or "+" in text
    for pair in text.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if escaped:
            key, value = unquote(key.replace("+", " ")), unquote(value.replace("+", " "))
        expected.setdefault(key.lower(), value)
    assert query == expected


def test_sign_with_the_keyed_state_equals_a_one_shot_hmac() -> None:
    for secret in ("s", "7ad3773142a6692b25b8", "é" * 100, "", "k" * 64, "k" * 65):
        for message in ("", "POST\n/apps/1/events\nauth_key=k", "x" * 1000):
            expected = hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()
            assert sign(secret, message) == expected
            assert sign(secret, message.encode()) == expected


@given(st.text(max_size=150), st.binary(max_size=300))
def test_sign_equals_hmac_on_any_secret_and_message(secret: str, message: bytes) -> None:
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    assert sign(secret, message) == expected
    assert sign(secret, message) == expected  # from the cached pads too


@given(
    st.dictionaries(
        st.sampled_from(["a", "a_b", "auth_signature", "b", "body_md5", "é"]), st.text()
    )
)
def test_the_signed_query_is_the_params_sorted_by_key(params: dict[str, str]) -> None:
    expected = "&".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "auth_signature")
    assert signatures.signed_query(params) == expected


@given(st.binary(max_size=5000))
def test_the_body_md5_is_hashlibs(body: bytes) -> None:
    assert signatures.md5_hex(body) == hashlib.md5(body).hexdigest()


def test_the_keyed_state_cache_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(signatures, "MAX_KEYED", 3)
    for i in range(10):
        assert (
            sign(f"secret-{i}", "m")
            == hmac.new(f"secret-{i}".encode(), b"m", hashlib.sha256).hexdigest()
        )
        assert len(signatures._keyed) <= 3


CHANNEL_ITEMS = (
    st.text(NAME_ALPHABET, max_size=210)
    | st.sampled_from(["a", "#server-to-user-1", "a" * 201, ""])
    | st.integers()
    | st.none()
)


@given(
    st.one_of(
        st.lists(CHANNEL_ITEMS, max_size=5),
        st.none(),
        st.text(max_size=5),
        st.integers(),
        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    ),
    st.one_of(st.none(), CHANNEL_ITEMS),
    st.booleans(),
    st.booleans(),
)
def test_the_channel_list_shortcut_agrees_with_the_full_checks(
    channels: object, channel: object, give_channels: bool, multi_channel: bool
) -> None:
    """`parse_trigger` takes a list of plain names without a call per channel; anything
    else goes through `_checked_channels`, which raises the error the full checks pick."""
    from pyserver.api.triggers import _checked_channels

    config = AppConfig(id="1", key="k", secret="s", max_channels_per_event=3)
    body: dict[str, object] = {"name": "e", "data": "d"}
    if give_channels:
        body["channels"] = channels
    if channel is not None:
        body["channel"] = channel
    try:
        expected: object = _checked_channels(config, body, multi_channel)
    except BadRequest as exc:
        expected = exc.message
    try:
        got: object = parse_trigger(config, body, multi_channel=multi_channel).channels
    except BadRequest as exc:
        got = exc.message
    assert got == expected


PREFIXED = st.builds(
    lambda prefix, rest: prefix + rest,
    st.sampled_from(
        [
            "",
            "private-",
            "private-encrypted-",
            "private-encrypted-cache-",
            "private-cache-",
            "presence-",
            "presence-cache-",
            "cache-",
            "#server-to-user-",
            "cache",
            "privatE-",
        ]
    ),
    st.text(NAME_ALPHABET, max_size=8),
)


@given(PREFIXED)
def test_the_cache_prefixes_are_the_cache_channel_types(name: str) -> None:
    from pyserver.protocol.names import CACHE_PREFIXES, channel_type

    assert name.startswith(CACHE_PREFIXES) == channel_type(name).cache


@given(
    st.sampled_from(["127.0.0.1:5000", "[::1]:80", "10.0.0.1:5000", "::ffff:127.0.0.1:1", "x"]),
    st.dictionaries(
        st.sampled_from(["x-forwarded-for", "forwarded", "x-real-ip", "connection", "origin"]),
        st.sampled_from(["127.0.0.1", "10.1.2.3", "for=127.0.0.1", "for=10.0.0.1", "", "a, b"]),
        max_size=3,
    ),
)
def test_the_protected_mode_shortcut_agrees_with_the_header_loop(
    peer: str, headers: dict[str, str]
) -> None:
    """Without a forwarding header `from_this_machine` skips the per-header loop: the
    answer is the peer's alone, as the loop would find."""
    from pyserver.auth.protected import (
        FORWARDING_HEADERS,
        _is_loopback,
        _named_clients,
        from_this_machine,
    )

    expected = _is_loopback(peer.rpartition(":")[0]) and all(
        all(map(_is_loopback, _named_clients(name, headers[name])))
        for name in FORWARDING_HEADERS
        if name in headers
    )
    assert from_this_machine(peer, headers) == expected


def test_the_prefix_marks_are_in_every_prefix() -> None:
    """`CACHE_MARK in name` and `RESERVED_MARK in name` only rule names out before the
    `startswith` over the prefixes: each mark must be in every prefix it stands for."""
    from pyserver.protocol.names import (
        CACHE_MARK,
        CACHE_PREFIXES,
        RESERVED_EVENT_PREFIXES,
        RESERVED_MARK,
    )

    assert CACHE_PREFIXES and all(CACHE_MARK in prefix for prefix in CACHE_PREFIXES)
    assert all(RESERVED_MARK in prefix for prefix in RESERVED_EVENT_PREFIXES)


@given(st.text(st.sampled_from("pusher_internal:cache-privatex"), max_size=30))
def test_reserved_event_names_are_refused_with_the_mark_first(name: str) -> None:
    from pyserver.protocol.names import RESERVED_EVENT_PREFIXES

    config = AppConfig(id="1", key="k", secret="s")
    body = {"name": name, "channel": "c", "data": "d"}
    try:
        parse_trigger(config, body, multi_channel=False)
    except BadRequest:
        assert not name or name.startswith(RESERVED_EVENT_PREFIXES) or len(name) > 200
    else:
        assert name and not name.startswith(RESERVED_EVENT_PREFIXES)


def test_the_plain_channel_memo_keeps_only_plain_names_and_stays_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pyserver.api import triggers

    monkeypatch.setattr(triggers, "MAX_PLAIN_SEEN", 3)
    monkeypatch.setattr(triggers, "_plain_seen", set())
    config = AppConfig(id="1", key="k", secret="s")
    for _ in range(2):  # the second round finds some names remembered
        for i in range(10):
            body = {"name": "e", "channels": [f"c{i}", "c0"], "data": "d"}
            assert parse_trigger(config, body, multi_channel=True).channels == [f"c{i}", "c0"]
            assert len(triggers._plain_seen) <= 3
    for bad in ("a b", "a" * 201, "#server-to-user-"):
        with pytest.raises(BadRequest):
            parse_trigger(config, {"name": "e", "channels": ["c0", bad], "data": "d"}, True)
        assert bad not in triggers._plain_seen
    server_to_user = {"name": "e", "channels": ["#server-to-user-1"], "data": "d"}
    assert parse_trigger(config, server_to_user, multi_channel=True).channels == [
        "#server-to-user-1"
    ]
    assert "#server-to-user-1" not in triggers._plain_seen
