"""HMAC-SHA256 signatures of the Pusher protocol, verified in constant time.

Invariants (`spec/protocol.md` §7, §8.1, §11.1, §12.2):
- Signatures are computed over the exact raw strings clients sent; nothing is re-serialised.
- An `auth` value is `<app_key>:<hex digest>`; the key part must equal the app's key.
- Every comparison of secrets-derived values uses `hmac.compare_digest`.
- Failure messages name the string that was expected to be signed (as hosted Pusher does),
  never the secret or the expected digest.
- A secret's keyed HMAC state is computed once and copied per message (`_keyed`): the
  same digest as a one-shot HMAC, without deriving the key pads again. At most
  `MAX_KEYED` secrets are kept; past that the cache starts over.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Protocol

MAX_KEYED = 4096
"""Secrets whose keyed HMAC state is kept (a few per app, with rotation)."""


class _Keyed(Protocol):
    def copy(self) -> _Keyed: ...

    def update(self, data: bytes) -> None: ...

    def hexdigest(self) -> str: ...


_keyed: dict[str, _Keyed] = {}

try:  # OpenSSL's HMAC object: copy, update and hexdigest without hmac.py's Python wrappers
    from _hashlib import hmac_new as _hmac_new

    def _new_keyed(secret: str) -> _Keyed:
        return _hmac_new(secret.encode(), digestmod="sha256")

except ImportError:  # a Python built without OpenSSL's HMAC

    def _new_keyed(secret: str) -> _Keyed:
        return hmac.new(secret.encode(), digestmod=hashlib.sha256)


def sign(secret: str, message: str | bytes) -> str:
    """Lower-case hex HMAC-SHA256 of `message` keyed by `secret`."""
    keyed = _keyed.get(secret)
    if keyed is None:
        if len(_keyed) >= MAX_KEYED:
            _keyed.clear()
        keyed = _keyed[secret] = _new_keyed(secret)
    mac = keyed.copy()
    mac.update(message.encode() if isinstance(message, str) else message)
    return mac.hexdigest()


def channel_string_to_sign(socket_id: str, channel: str, channel_data: str | None) -> str:
    """`<socket_id>:<channel>` or, for presence, `<socket_id>:<channel>:<channel_data>`."""
    if channel_data is None:
        return f"{socket_id}:{channel}"
    return f"{socket_id}:{channel}:{channel_data}"


def user_string_to_sign(socket_id: str, user_data: str) -> str:
    """`<socket_id>::user::<user_data>`."""
    return f"{socket_id}::user::{user_data}"


def auth_problem(
    app_key: str,
    secret: str,
    string_to_sign: str,
    auth: str | None,
    previous_secret: str | None = None,
) -> str | None:
    """Why `auth` does not sign `string_to_sign` for this app, or None when it does.
    `previous_secret`: the secret a rotation replaced, still accepted (docs/apps.md)."""
    if not auth:
        return "Missing auth: a signature is required for this channel"
    key, sep, signature = auth.partition(":")
    if not sep or not hmac.compare_digest(key.encode(), app_key.encode()):
        return f"Invalid key in auth: expected '<app key>:<signature>', got key '{key[:64]}'"
    given = signature.encode()
    if not hmac.compare_digest(sign(secret, string_to_sign).encode(), given) and (
        previous_secret is None
        or not hmac.compare_digest(sign(previous_secret, string_to_sign).encode(), given)
    ):
        return (
            "Invalid signature: Expected HMAC SHA256 hex digest of "
            f"{string_to_sign}, but got {signature[:128]}"
        )
    return None


def request_string_to_sign(method: str, path: str, params: Mapping[str, str]) -> str:
    """`METHOD\\nPATH\\nk=v&...`: sorted params without `auth_signature`, values unescaped."""
    return f"{method.upper()}\n{path}\n{signed_query(params)}"


def signed_query(params: Mapping[str, str]) -> str:
    """`k=v&...` of a request's string to sign: the params sorted by key (each key once),
    without `auth_signature`."""
    return "&".join([f"{k}={v}" for k, v in sorted(params.items()) if k != "auth_signature"])


def md5_hex(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def webhook_signature(secret: str, body: bytes) -> str:
    """`X-Pusher-Signature`: hex HMAC-SHA256 of the raw webhook body."""
    return sign(secret, body)
