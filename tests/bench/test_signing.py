"""Request signing and channel auth against the worked examples of the Pusher docs."""

from bench import signing

KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
BODY = '{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'


def test_body_md5() -> None:
    assert signing.body_md5(BODY) == "ec365a775a4cd0599faeb73354201b6f"
    assert signing.body_md5(BODY.encode()) == "ec365a775a4cd0599faeb73354201b6f"


def test_string_to_sign_and_signature() -> None:
    params = {
        "auth_key": KEY,
        "auth_timestamp": "1353088179",
        "auth_version": "1.0",
        "body_md5": "ec365a775a4cd0599faeb73354201b6f",
    }
    text = signing.string_to_sign("POST", "/apps/3/events", params)
    assert text == (
        "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179"
        "&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
    )
    assert signing.hmac_sha256_hex(SECRET, text) == (
        "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
    )


def test_sign_params_matches_the_worked_example() -> None:
    params = signing.sign_params("POST", "/apps/3/events", KEY, SECRET, 1353088179, BODY)
    assert params == {
        "auth_key": KEY,
        "auth_timestamp": "1353088179",
        "auth_version": "1.0",
        "body_md5": "ec365a775a4cd0599faeb73354201b6f",
        "auth_signature": "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
    }


def test_signed_path_carries_every_parameter() -> None:
    path = signing.signed_path("POST", signing.events_path("3"), KEY, SECRET, 1353088179, BODY)
    assert path.startswith("/apps/3/events?")
    query = dict(part.split("=", 1) for part in path.split("?", 1)[1].split("&"))
    assert query["auth_signature"] == (
        "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
    )
    assert query["body_md5"] == "ec365a775a4cd0599faeb73354201b6f"


def test_string_to_sign_ignores_an_existing_signature_and_sorts() -> None:
    text = signing.string_to_sign("get", "/p", {"b": "2", "a": "1", "auth_signature": "x"})
    assert text == "GET\n/p\na=1&b=2"


def test_private_channel_auth() -> None:
    auth = signing.channel_auth(KEY, SECRET, "1234.1234", "private-foobar")
    assert auth == f"{KEY}:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4"


def test_presence_channel_auth_signs_channel_data() -> None:
    data = '{"user_id":10,"user_info":{"name":"Mr. Channels"}}'
    auth = signing.channel_auth(KEY, SECRET, "1234.1234", "presence-foobar", data)
    expected = signing.hmac_sha256_hex(SECRET, f"1234.1234:presence-foobar:{data}")
    assert auth == f"{KEY}:{expected}"
    assert auth != signing.channel_auth(KEY, SECRET, "1234.1234", "presence-foobar")


def test_trigger_target_matches_signed_path() -> None:
    from bench.httpclient import Trigger

    for key in (KEY, "a key/with+odd&chars"):
        trigger = Trigger("127.0.0.1", 1, "3", key, SECRET)
        body = BODY.encode()
        expected = signing.signed_path("POST", "/apps/3/events", key, SECRET, 1353088179, body)
        assert trigger.target(body, 1353088179) == expected


def test_response_parsing() -> None:
    from bench.httpclient import _parse_response

    ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n"
    parsed = _parse_response(bytearray(ok + b"\r\n{}rest"), False)
    assert parsed == ((200, b"{}", True), len(ok) + 4)
    assert _parse_response(bytearray(ok + b"\r\n{"), False) is None
    closing = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 3\r\nConnection: close\r\n\r\nabc"
    assert _parse_response(bytearray(closing), False) == ((401, b"abc", False), len(closing))
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
    assert _parse_response(bytearray(chunked), False) == ((200, b"{}", True), len(chunked))
    old = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n{}"
    assert _parse_response(bytearray(old), False) == ((200, b"{}", False), len(old))
