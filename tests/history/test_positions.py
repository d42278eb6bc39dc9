"""Positions (pyserver/protocol/history.py): one spelling each, URL-safe, ordered like their
serials within an epoch, and anything else refused as a bad position."""

from __future__ import annotations

import string
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyserver.protocol.history import (
    MAX_SERIAL,
    MAX_STAMP,
    BadPosition,
    Position,
    decode_position,
    new_epoch,
    valid_epoch,
)

UNRESERVED = set(string.ascii_letters + string.digits + "-._~")

epochs = st.text(alphabet="0123456789abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=24)
serials = st.integers(min_value=0, max_value=MAX_SERIAL)
stamps = st.integers(min_value=0, max_value=MAX_STAMP)
positions = st.builds(Position, epochs, serials, stamps)


@given(positions)
def test_round_trip(position: Position) -> None:
    text = position.encode()
    assert decode_position(text) == position
    assert str(position) == text


@given(positions)
def test_only_unreserved_url_characters(position: Position) -> None:
    text = position.encode()
    assert set(text) <= UNRESERVED
    assert quote(text, safe="") == text, "an SDK may put it in a URL unescaped"


@given(epochs, serials, serials, stamps, stamps)
def test_strings_sort_like_serials_within_an_epoch(
    epoch: str, a: int, b: int, stamp_a: int, stamp_b: int
) -> None:
    pa, pb = Position(epoch, a, stamp_a), Position(epoch, b, stamp_b)
    if a != b:  # a store never gives one serial two stamps
        assert (pa.encode() < pb.encode()) == (a < b)
    assert pb.follows(pa) == (b > a)


@given(st.text(max_size=60))
def test_any_text_is_a_canonical_position_or_refused(text: str) -> None:
    try:
        position = decode_position(text)
    except BadPosition:
        return
    assert position.encode() == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "abc.10",
        "abc.10.0.0",
        "ABC.10.0",  # upper case
        "abc.2a.0",  # length prefix says 2 digits, there is 1
        "abc.201.0",  # leading zero
        "abc.11.00",  # stamp with a leading zero
        "abc.d" + "z" * 13 + ".0",  # above 2**63 - 1
        "a" * 25 + ".10.0",  # epoch too long
        "abc.10.0 ",
        "abc%2E10.0",
    ],
)
def test_malformed_positions_are_refused(text: str) -> None:
    with pytest.raises(BadPosition):
        decode_position(text)


def test_follows_is_false_across_epochs() -> None:
    assert not Position("b", 5).follows(Position("a", 1))


def test_new_epochs_are_valid_and_differ() -> None:
    first = new_epoch(1_760_000_000_000_000, 1)
    assert valid_epoch(first)
    assert first != new_epoch(1_760_000_000_000_000, 2)
    assert first != new_epoch(1_760_000_000_000_001, 1)
    assert valid_epoch(new_epoch(0, 0))
