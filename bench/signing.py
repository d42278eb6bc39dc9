"""Pusher request signing and channel authorization: pure functions, no I/O.

HTTP API requests are signed with HMAC-SHA256 over
`METHOD\\nPATH\\nk1=v1&k2=v2...` (query parameters sorted by key, values unescaped), see
https://pusher.com/docs/channels/library_auth_reference/rest-api/. Channel auth strings are
`key:hex(HMAC-SHA256(secret, socket_id:channel[:channel_data]))`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import quote


def hmac_sha256_hex(secret: str, message: str) -> str:
    """Hex HMAC-SHA256 of `message` keyed by `secret` (both UTF-8)."""
    return hmac.new(secret.encode(), message.encode(), hashlib.sha256).hexdigest()


def body_md5(body: bytes | str) -> str:
    """Hex MD5 of a request body, as the `body_md5` query parameter wants it."""
    if isinstance(body, str):
        body = body.encode()
    return hashlib.md5(body).hexdigest()


def string_to_sign(method: str, path: str, params: Mapping[str, str]) -> str:
    """`METHOD\\nPATH\\nsorted k=v pairs joined by &`, without `auth_signature`."""
    query = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "auth_signature")
    return f"{method.upper()}\n{path}\n{query}"


def sign_params(
    method: str,
    path: str,
    key: str,
    secret: str,
    timestamp: int,
    body: bytes | str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The query parameters of a signed request, `auth_signature` included."""
    params: dict[str, str] = dict(extra or {})
    params.update(auth_key=key, auth_timestamp=str(timestamp), auth_version="1.0")
    if body:
        params["body_md5"] = body_md5(body)
    params["auth_signature"] = hmac_sha256_hex(secret, string_to_sign(method, path, params))
    return params


def signed_path(
    method: str,
    path: str,
    key: str,
    secret: str,
    timestamp: int,
    body: bytes | str | None = None,
) -> str:
    """`path?query` ready for the request line of a signed request."""
    params = sign_params(method, path, key, secret, timestamp, body)
    return path + "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in params.items())


def events_path(app_id: str) -> str:
    """Path of the trigger endpoint of an app."""
    return f"/apps/{app_id}/events"


def channel_auth(
    key: str, secret: str, socket_id: str, channel: str, channel_data: str | None = None
) -> str:
    """The `auth` field of a `pusher:subscribe` for a private or presence channel."""
    message = f"{socket_id}:{channel}"
    if channel_data is not None:
        message += f":{channel_data}"
    return f"{key}:{hmac_sha256_hex(secret, message)}"
