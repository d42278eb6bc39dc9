"""Issue item 6: the HTTP API through the official Python SDK and hand-signed requests."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time

import pusher
import pytest

from tests.integration.conftest import LIMITED, MAIN, sdk
from tests.integration.httpapi import request, sign_params, signed, signed_post


def test_trigger_to_many_channels_with_socket_exclusion(connect, uid, py_sdk) -> None:
    a, b = connect(), connect()
    channels = [f"one-{uid}", f"two-{uid}"]
    for ch in channels:
        a.subscribe(ch)
        b.subscribe(ch)
    assert py_sdk.trigger(channels, "ev", {"k": "v"}, socket_id=a.socket_id) == {}
    got = sorted(b.recv()["channel"] for _ in channels)
    assert got == sorted(channels)
    a.assert_silent()


def test_trigger_data_is_forwarded_verbatim(connect, uid, server) -> None:
    s = connect()
    s.subscribe(f"c-{uid}")
    data = '{"spaced" : [1, 2],  "x": "\\u00e9"}'
    assert (
        signed_post(
            server.api_port, "/apps/1001/events", {"name": "e", "channel": f"c-{uid}", "data": data}
        )[0]
        == 200
    )
    assert s.recv()["data"] == data


def test_trigger_info_counts(connect, uid, py_sdk) -> None:
    pres, pub = f"presence-{uid}", f"pub-{uid}"
    for user in ("u1", "u1", "u2"):
        connect().signed_subscribe(pres, user)
    connect().subscribe(pub)
    connect().subscribe(pub)
    # pusher-http-python 3.x has no `info` argument: sign the request by hand
    _, result = signed_post(
        py_sdk._pusher_client.port,
        "/apps/1001/events",
        {
            "name": "ev",
            "channels": [pres, pub],
            "data": "{}",
            "info": "user_count,subscription_count",
        },
    )
    assert result == {"channels": {pres: {"user_count": 2}, pub: {"subscription_count": 2}}}


def test_batch_events_with_info(connect, uid, server) -> None:
    s = connect()
    s.subscribe(f"a-{uid}")
    status, body = signed_post(
        server.api_port,
        "/apps/1001/batch_events",
        {
            "batch": [
                {"name": "e1", "channel": f"a-{uid}", "data": "1", "info": "subscription_count"},
                {"name": "e2", "channel": f"b-{uid}", "data": "2"},
            ]
        },
    )
    assert status == 200
    assert body == {"batch": [{"subscription_count": 1}, {}]}
    assert s.recv() == {"event": "e1", "channel": f"a-{uid}", "data": "1"}


def test_batch_through_the_sdk(connect, uid, py_sdk) -> None:
    s = connect()
    s.subscribe(f"a-{uid}")
    assert (
        py_sdk.trigger_batch(
            [
                {"channel": f"a-{uid}", "name": "x", "data": {"n": 1}},
                {"channel": f"a-{uid}", "name": "y", "data": {"n": 2}},
            ]
        )
        == {}
    )
    assert [s.recv()["event"], s.recv()["event"]] == ["x", "y"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "e", "channels": [], "data": "x"}, 400),
        ({"name": "e", "channels": [f"c{i}" for i in range(101)], "data": "x"}, 400),
        ({"name": "e", "channel": "c", "data": "x" * 10_241}, 413),
        ({"channel": "c", "data": "x"}, 400),
        ({"name": "e", "channel": "c"}, 400),
        ({"name": "e", "channel": "bad name", "data": "x"}, 400),
        ({"name": "e", "channel": "c", "data": "x", "socket_id": "abc"}, 400),
        ({"name": "e", "channel": "c", "data": "x", "info": "bogus"}, 400),
        ({"name": "x" * 201, "channel": "c", "data": "x"}, 400),
        ({"name": "pusher:error", "channel": "c", "data": "x"}, 400),
        ({"name": "e", "channel": "c", "data": json.loads("[" * 300 + "]" * 300)}, 400),
        ({"name": "pusher_internal:member_added", "channel": "presence-c", "data": "{}"}, 400),
        ([1, 2], 400),
    ],
)
def test_trigger_validation(server, body, status) -> None:
    code, answer = signed_post(server.api_port, "/apps/1001/events", body)
    assert code == status
    assert isinstance(answer["error"], str) and answer["error"]


def test_batch_limits(server) -> None:
    too_many = {"batch": [{"name": "e", "channel": "c", "data": "x"}] * 11}
    assert signed_post(server.api_port, "/apps/1001/batch_events", too_many)[0] == 400
    big = {"batch": [{"name": "e", "channel": "c", "data": "x" * 10_241}]}
    assert signed_post(server.api_port, "/apps/1001/batch_events", big)[0] == 413
    assert signed_post(server.api_port, "/apps/1001/batch_events", {"batch": []})[0] == 400


def test_channels_listing_and_filters(connect, uid, py_sdk) -> None:
    connect().subscribe(f"list-{uid}-a")
    connect().signed_subscribe(f"presence-list-{uid}", "u1")
    listed = py_sdk.channels_info(prefix_filter=f"list-{uid}")
    assert listed == {"channels": {f"list-{uid}-a": {}}}
    with_users = py_sdk.channels_info(
        prefix_filter=f"presence-list-{uid}", attributes=["user_count"]
    )
    assert with_users == {"channels": {f"presence-list-{uid}": {"user_count": 1}}}
    with pytest.raises(pusher.errors.PusherBadRequest):
        py_sdk.channels_info(prefix_filter=f"list-{uid}", attributes=["user_count"])


def test_channel_info_rules(connect, uid, py_sdk) -> None:
    connect().subscribe(f"info-{uid}")
    connect().signed_subscribe(f"presence-info-{uid}", "u")
    assert py_sdk.channel_info(f"info-{uid}", ["subscription_count"]) == {
        "occupied": True,
        "subscription_count": 1,
    }
    assert py_sdk.channel_info(f"presence-info-{uid}", ["user_count"]) == {
        "occupied": True,
        "user_count": 1,
    }
    assert py_sdk.channel_info(f"empty-{uid}") == {"occupied": False}
    for channel, attribute in (
        (f"info-{uid}", "user_count"),
        (f"presence-info-{uid}", "subscription_count"),
        (f"info-{uid}", "cache"),
    ):
        with pytest.raises(pusher.errors.PusherBadRequest):
            py_sdk.channel_info(channel, [attribute])


def test_users_of_presence_channel_only(connect, uid, py_sdk) -> None:
    for user in ("u1", "u2", "u1"):
        connect().signed_subscribe(f"presence-users-{uid}", user)
    users = py_sdk.users_info(f"presence-users-{uid}")
    assert sorted(u["id"] for u in users["users"]) == ["u1", "u2"]
    with pytest.raises(pusher.errors.PusherBadRequest):
        py_sdk.users_info(f"plain-{uid}")


def test_terminate_routes_exist_and_are_signed(server, py_sdk) -> None:
    # pusher-http-python posts to /users/{id}/terminate_connections (no /apps prefix)
    assert py_sdk.terminate_user_connections("someone") == {}
    assert (
        signed_post(server.api_port, "/apps/1001/users/someone/terminate_connections", {})[0] == 200
    )
    status, _, _ = request(
        server.api_port, "POST", "/apps/1001/users/someone/terminate_connections", b"{}"
    )
    assert status == 401


def _events_path_params(**overrides: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"name": "e", "channel": "c", "data": "x"}).encode()
    params = sign_params("POST", "/apps/1001/events", {}, body)
    params.update(overrides)
    return body, params


def test_signature_failures_are_401_with_reasons(server) -> None:
    body, params = _events_path_params(auth_signature="0" * 64)
    status, answer, _ = request(server.api_port, "POST", "/apps/1001/events", body, params)
    assert status == 401
    assert "POST\n/apps/1001/events\nauth_key=app-key" in answer["error"]

    body, params = _events_path_params(auth_key="other")
    assert request(server.api_port, "POST", "/apps/1001/events", body, params)[0] == 401

    old = json.dumps({"name": "e", "channel": "c", "data": "x"}).encode()
    params = sign_params(
        "POST", "/apps/1001/events", {"auth_timestamp": str(int(time.time()) - 700)}, old
    )
    status, answer, _ = request(server.api_port, "POST", "/apps/1001/events", old, params)
    assert status == 401 and "Timestamp" in answer["error"]

    unsigned = json.dumps({"name": "e", "channel": "c", "data": "x"}).encode()
    params = sign_params("POST", "/apps/1001/events", {}, unsigned, with_md5=False)
    assert request(server.api_port, "POST", "/apps/1001/events", unsigned, params)[0] == 401


def test_body_that_does_not_match_its_md5_is_401(server) -> None:
    # the signature covers body_md5, not the body: a changed body is an authentication failure
    body, params = _events_path_params()
    status, answer, _ = request(server.api_port, "POST", "/apps/1001/events", body + b" ", params)
    actual = hashlib.md5(body + b" ").hexdigest()
    assert (status, answer) == (
        401,
        {
            "error": f"body_md5 {params['body_md5']} does not match the body's MD5 {actual}",
            "status": 401,
        },
    )


def test_body_md5_on_get_is_checked_too(server) -> None:
    params = sign_params("GET", "/apps/1001/channels", {"body_md5": "0" * 32}, b"")
    assert request(server.api_port, "GET", "/apps/1001/channels", b"", params)[0] == 401
    status, _ = signed(
        server.api_port,
        "GET",
        "/apps/1001/channels",
        params={"body_md5": "d41d8cd98f00b204e9800998ecf8427e"},
    )
    assert status == 200


def test_unknown_app_disabled_app_and_unknown_route(server) -> None:
    assert signed(server.api_port, "GET", "/apps/9999/channels")[0] == 404
    from tests.integration.conftest import AppCreds

    disabled = AppCreds("1002", "disabled-key", "disabled-secret")
    assert signed(server.api_port, "GET", "/apps/1002/channels", app=disabled)[0] == 403
    assert signed(server.api_port, "GET", "/apps/1001/nothing")[0] == 404
    assert signed(server.api_port, "GET", "/apps/1001/events")[0] == 405


def test_keep_alive_serves_many_requests_on_one_connection(server) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.api_port, timeout=5)
    for _ in range(3):
        body = json.dumps({"name": "e", "channel": "c", "data": "x"}).encode()
        params = sign_params("POST", "/apps/1001/events", {}, body)
        query = "&".join(f"{k}={v}" for k, v in params.items())
        conn.request("POST", f"/apps/1001/events?{query}", body=body)
        response = conn.getresponse()
        assert response.status == 200 and response.read() == b"{}"
        assert response.getheader("Connection") == "keep-alive"
        assert response.getheader("Content-Type") == "application/json"
    conn.close()


def test_legacy_channel_events_route(connect, uid, server) -> None:
    s = connect()
    s.subscribe(f"legacy-{uid}")
    path = f"/apps/1001/channels/legacy-{uid}/events"
    params = sign_params("POST", path, {"name": "old"}, b'{"a":1}')
    assert request(server.api_port, "POST", path, b'{"a":1}', params)[0] == 202
    assert s.recv() == {"event": "old", "channel": f"legacy-{uid}", "data": '{"a":1}'}


def test_legacy_channel_stats_route(connect, uid, server) -> None:
    connect().subscribe(f"stats-{uid}")
    connect().subscribe(f"stats-{uid}")
    connect().signed_subscribe(f"presence-stats-{uid}", "u1")
    connect().signed_subscribe(f"presence-stats-{uid}", "u1")
    port = server.api_port
    assert signed(port, "GET", f"/apps/1001/channels/stats-{uid}/stats") == (
        200,
        {"occupied": True, "connection_count": 2},
    )
    assert signed(port, "GET", f"/apps/1001/channels/presence-stats-{uid}/stats") == (
        200,
        {"occupied": True, "user_count": 1, "connection_count": 2},
    )
    assert signed(port, "GET", f"/apps/1001/channels/empty-{uid}/stats") == (
        200,
        {"occupied": False, "connection_count": 0},
    )
    assert signed(port, "GET", "/apps/1001/channels/bad%20name/stats")[0] == 400


def test_malformed_http_gets_400(server) -> None:
    with socket.create_connection(("127.0.0.1", server.api_port), timeout=5) as sock:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert sock.recv(1024).startswith(b"HTTP/1.1 400")


def test_request_body_over_the_limit_is_413(server) -> None:
    body = b'{"name":"e","channel":"c","data":"' + b"x" * 1_100_000 + b'"}'
    params = sign_params("POST", "/apps/1001/events", {}, body)
    assert request(server.api_port, "POST", "/apps/1001/events", body, params)[0] == 413


def test_health_endpoint(server) -> None:
    status, body, _ = request(server.api_port, "GET", "/up")
    assert status == 200 and body["ok"] is True


def test_app_key_in_creds_matches_main() -> None:
    assert MAIN.key == "app-key"


def test_per_app_rate_limits_answer_429_with_retry_after(server, uid) -> None:
    port = server.api_port
    event = {"name": "e", "channels": [f"a-{uid}", f"b-{uid}"], "data": "{}"}
    for _ in range(2):  # two events to two channels: the 4 events of one second
        assert signed_post(port, "/apps/1008/events", event, app=LIMITED)[0] == 200
    path = "/apps/1008/events"
    body = json.dumps(event).encode()
    status, answer, response = request(
        port, "POST", path, body, sign_params("POST", path, {}, body, LIMITED)
    )
    assert status == 429 and "4 events published per second" in answer["error"]
    assert response.getheader("Retry-After") == "1"
    for _ in range(3):
        assert signed(port, "GET", "/apps/1008/channels", app=LIMITED)[0] == 200
    assert signed(port, "GET", "/apps/1008/channels", app=LIMITED)[0] == 429
    with pytest.raises(pusher.errors.PusherError):
        sdk(port, LIMITED).channels_info()
    # other apps are not limited, and the budget comes back
    assert signed(port, "GET", "/apps/1001/channels")[0] == 200
    time.sleep(1.1)
    assert signed_post(port, "/apps/1008/events", event, app=LIMITED)[0] == 200
    assert signed(port, "GET", "/apps/1008/channels", app=LIMITED)[0] == 200


def test_a_trigger_body_that_is_not_a_json_object_is_refused(server) -> None:
    """The events route reads its body without `json_object` (the hot path): the same 400."""
    for raw in (b"not json", b"[1, 2]", b'"text"', b"{"):
        status, value = signed(server.api_port, "POST", "/apps/1001/events", raw)
        assert status == 400, raw
        assert value["error"] == "The body must be a JSON object", raw
