"""HMAC-SHA256 signatures of the Pusher protocol, verified in constant time.

Invariants (`spec/protocol.md` §7, §8.1, §11.1, §12.2):
- Signatures are computed over the exact raw strings clients sent; nothing is re-serialised.
- An `auth` value is `<app_key>:<hex digest>`; the key part must equal the app's key.
- Every comparison of secrets-derived values uses `hmac.compare_digest`.
- Failure messages name the string that was expected to be signed (as hosted Pusher does),
  never the secret or the expected digest.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping


def sign(secret: str, message: str | bytes) -> str:
    """Lower-case hex HMAC-SHA256 of `message` keyed by `secret`."""
    data = message.encode() if isinstance(message, str) else message
    return hmac.digest(secret.encode(), data, "sha256").hex()


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
    query = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "auth_signature")
    return f"{method.upper()}\n{path}\n{query}"


def md5_hex(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def webhook_signature(secret: str, body: bytes) -> str:
    """`X-Pusher-Signature`: hex HMAC-SHA256 of the raw webhook body."""
    return sign(secret, body)
