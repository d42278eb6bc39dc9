"""The worked signature examples of spec/protocol.md §7 and §11.1."""

from __future__ import annotations

import math

import pytest

from pyserver.auth.requests import verify_request
from pyserver.auth.signatures import (
    auth_problem,
    channel_string_to_sign,
    md5_hex,
    request_string_to_sign,
    sign,
    user_string_to_sign,
    webhook_signature,
)
from pyserver.http import Request
from pyserver.protocol.errors import Unauthorized

KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"


def test_private_channel_vector() -> None:
    signed = channel_string_to_sign("1234.1234", "private-foobar", None)
    assert signed == "1234.1234:private-foobar"
    digest = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"
    assert sign(SECRET, signed) == digest
    assert auth_problem(KEY, SECRET, signed, f"{KEY}:{digest}") is None


def test_presence_channel_vector_uses_raw_channel_data() -> None:
    data = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
    signed = channel_string_to_sign("1234.1234", "presence-foobar", data)
    digest = "31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80"
    assert sign(SECRET, signed) == digest
    # The same member with other whitespace is another string: it must not verify.
    respaced = channel_string_to_sign("1234.1234", "presence-foobar", data.replace(":", ": "))
    assert auth_problem(KEY, SECRET, respaced, f"{KEY}:{digest}") is not None


def test_user_signin_vector() -> None:
    signed = user_string_to_sign("1234.1234", '{"id":"12345"}')
    assert signed == '1234.1234::user::{"id":"12345"}'
    assert sign(SECRET, signed) == (
        "4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba"
    )


def test_auth_problem_checks_key_part_and_names_the_string() -> None:
    signed = "1.2:private-x"
    good = sign(SECRET, signed)
    assert auth_problem(KEY, SECRET, signed, f"other-key:{good}") is not None
    assert auth_problem(KEY, SECRET, signed, good) is not None  # no key part at all
    problem = auth_problem(KEY, SECRET, signed, f"{KEY}:{'0' * 64}")
    assert problem is not None and "1.2:private-x" in problem and SECRET not in problem
    assert auth_problem(KEY, SECRET, signed, None) is not None


def test_auth_problem_accepts_the_previous_secret_only_when_given() -> None:
    signed = "1.2:private-x"
    old = sign("old-secret", signed)
    assert auth_problem(KEY, SECRET, signed, f"{KEY}:{old}") is not None
    assert auth_problem(KEY, SECRET, signed, f"{KEY}:{old}", "old-secret") is None
    assert auth_problem(KEY, SECRET, signed, f"{KEY}:{sign(SECRET, signed)}", "old") is None
    problem = auth_problem(KEY, SECRET, signed, f"{KEY}:{'0' * 64}", "old-secret")
    assert problem is not None and "old-secret" not in problem


BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
PARAMS = {
    "auth_key": KEY,
    "auth_timestamp": "1353088179",
    "auth_version": "1.0",
    "body_md5": "ec365a775a4cd0599faeb73354201b6f",
}
SIGNATURE = "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"


def test_rest_vector() -> None:
    assert md5_hex(BODY) == PARAMS["body_md5"]
    signed = request_string_to_sign("POST", "/apps/3/events", PARAMS)
    assert signed == (
        "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179"
        "&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
    )
    assert sign(SECRET, signed) == SIGNATURE


def _verify(params: dict[str, str], body: bytes = BODY, now: float = 1353088179.0) -> None:
    verify_request(
        method="POST",
        paths=("/apps/3/events",),
        params=params,
        body=body,
        app_key=KEY,
        secret=SECRET,
        now=now,
    )


def test_verify_request_accepts_the_vector() -> None:
    _verify({**PARAMS, "auth_signature": SIGNATURE})


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"auth_key": "nope"}, Unauthorized),
        ({"auth_signature": "0" * 64}, Unauthorized),
        ({"body_md5": "0" * 32}, Unauthorized),
        ({"auth_version": "2.0"}, Unauthorized),
    ],
)
def test_verify_request_rejects(change: dict[str, str], error: type[Exception]) -> None:
    with pytest.raises(error):
        _verify({**PARAMS, "auth_signature": SIGNATURE, **change})


def test_verify_request_accepts_the_previous_secret_only_when_given() -> None:
    signed = request_string_to_sign("POST", "/apps/3/events", PARAMS)
    params = {**PARAMS, "auth_signature": sign("old-secret", signed)}
    with pytest.raises(Unauthorized):
        _verify(params)
    verify_request(
        method="POST",
        paths=("/apps/3/events",),
        params=params,
        body=BODY,
        app_key=KEY,
        secret=SECRET,
        now=1353088179.0,
        previous_secret="old-secret",
    )


def test_verify_request_rejects_old_and_future_timestamps() -> None:
    params = {**PARAMS, "auth_signature": SIGNATURE}
    with pytest.raises(Unauthorized, match="Timestamp"):
        _verify(params, now=1353088179 + 601)
    with pytest.raises(Unauthorized, match="Timestamp"):
        _verify(params, now=1353088179 - 601)
    _verify(params, now=1353088179 + 599)


@pytest.mark.parametrize("timestamp", ["nan", "NaN", "-nan", "inf", "-inf", "1e999", "soon", ""])
@pytest.mark.parametrize("max_skew", [600.0, math.inf])
def test_verify_request_rejects_timestamps_that_are_no_time(
    timestamp: str, max_skew: float
) -> None:
    # correctly signed over the odd value: "nan" used to pass the window check for ever
    params = {**PARAMS, "auth_timestamp": timestamp}
    params["auth_signature"] = sign(
        SECRET, request_string_to_sign("POST", "/apps/3/events", params)
    )
    with pytest.raises(Unauthorized, match="auth_timestamp must be a unix time"):
        verify_request(
            "POST", ("/apps/3/events",), params, BODY, KEY, SECRET, 1353088179.0, max_skew
        )


def test_verify_request_needs_body_md5_for_a_body() -> None:
    params = {k: v for k, v in PARAMS.items() if k != "body_md5"}
    params["auth_signature"] = sign(
        SECRET, request_string_to_sign("POST", "/apps/3/events", params)
    )
    with pytest.raises(Unauthorized, match="body_md5"):
        _verify(params)


def test_verify_request_accepts_body_md5_of_empty_get() -> None:
    params = {
        "auth_key": KEY,
        "auth_timestamp": "1353088179",
        "auth_version": "1.0",
        "body_md5": "d41d8cd98f00b204e9800998ecf8427e",
        "info": "user_count,subscription_count",
    }
    params["auth_signature"] = sign(
        SECRET, request_string_to_sign("GET", "/apps/3/channels", params)
    )
    verify_request(
        method="GET",
        paths=("/apps/3/channels",),
        params=params,
        body=b"",
        app_key=KEY,
        secret=SECRET,
        now=1353088179.0,
    )


def test_webhook_signature_is_hmac_of_raw_body() -> None:
    assert webhook_signature(SECRET, b"{}") == sign(SECRET, "{}")


@pytest.mark.parametrize(
    "signed_path",
    [
        "/pusher/apps/3/channels/a%40b",  # as received
        "/apps/3/channels/a%40b",  # a proxy added the prefix
        "/pusher/apps/3/channels/a@b",  # the SDK signed the decoded path
        "/apps/3/channels/a@b",
    ],
)
def test_every_candidate_path_verifies(signed_path: str) -> None:
    request = Request("GET", "/apps/3/channels/a%40b", {}, {}, prefix="/pusher")
    params = {"auth_key": KEY, "auth_timestamp": "1353088179", "auth_version": "1.0"}

    def verify(signature: str) -> None:
        verify_request(
            method="GET",
            paths=request.signed_paths,
            params={**params, "auth_signature": signature},
            body=b"",
            app_key=KEY,
            secret=SECRET,
            now=1353088179.0,
        )

    verify(sign(SECRET, request_string_to_sign("GET", signed_path, params)))
    # a wrong signature is answered with the string for the path as received
    with pytest.raises(Unauthorized, match="of GET\n/pusher/apps/3/channels/a%40b\n"):
        verify("0" * 64)
