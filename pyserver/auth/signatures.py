"""HMAC-SHA256 signatures of the Pusher protocol, verified in constant time.

Invariants (`spec/protocol.md` §7, §8.1, §11.1, §12.2):
- Signatures are computed over the exact raw strings clients sent; nothing is re-serialised.
- An `auth` value is `<app_key>:<hex digest>`; the key part must equal the app's key.
- Every comparison of secrets-derived values uses `hmac.compare_digest`.
- Failure messages name the string that was expected to be signed (as hosted Pusher does),
  never the secret or the expected digest.
- A secret's HMAC key pads are hashed once (`_keyed`: SHA-256 states after the inner and
  the outer pad) and copied per message: the same digest as a one-shot HMAC (RFC 2104),
  without deriving the pads again. At most `MAX_KEYED` secrets are kept; past that the
  cache starts over.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import importlib
from collections.abc import Callable, Mapping
from typing import Protocol


class _Hash(Protocol):
    def copy(self) -> _Hash: ...

    def update(self, data: bytes, /) -> None: ...

    def digest(self) -> bytes: ...

    def hexdigest(self) -> str: ...


md5: Callable[[bytes], _Hash] = hashlib.md5
# CPython's own MD5, when it was built with it: for a request body about 1.5x cheaper than
# OpenSSL's, whose digest context costs more to set up and copy than a small body to hash.
with contextlib.suppress(ImportError):
    md5 = importlib.import_module("_md5").md5

MAX_KEYED = 4096
"""Secrets whose keyed HMAC state is kept (a few per app, with rotation)."""


_BLOCK = 64
"""SHA-256's block size: HMAC's key pads are one block."""
_IPAD = bytes(x ^ 0x36 for x in range(256))
_OPAD = bytes(x ^ 0x5C for x in range(256))

_keyed: dict[str, tuple[_Hash, _Hash]] = {}
"""secret → (SHA-256 state after its inner pad, after its outer pad)."""


def _pads(secret: str) -> tuple[_Hash, _Hash]:
    """HMAC-SHA256's two keyed states, as `hmac.new` derives them (a key longer than a
    block is hashed first)."""
    key = secret.encode()
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    if len(_keyed) >= MAX_KEYED:
        _keyed.clear()
    pads = _keyed[secret] = (
        hashlib.sha256(key.translate(_IPAD)),
        hashlib.sha256(key.translate(_OPAD)),
    )
    return pads


def sign(secret: str, message: str | bytes) -> str:
    """Lower-case hex HMAC-SHA256 of `message` keyed by `secret`.

    HMAC written out over two copied SHA-256 states (`_pads`): with OpenSSL 3 this is
    about 15 % cheaper than copying an HMAC object, which copies three digest contexts
    per `copy()` and again per `hexdigest()`."""
    pads = _keyed.get(secret) or _pads(secret)
    inner = pads[0].copy()
    inner.update(message.encode() if isinstance(message, str) else message)
    outer = pads[1].copy()
    outer.update(inner.digest())
    return outer.hexdigest()


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
    # Sorting the keys, not the (key, value) pairs: the same order (keys are unique), cheaper.
    return "&".join([f"{k}={params[k]}" for k in sorted(params) if k != "auth_signature"])


def md5_hex(body: bytes) -> str:
    return md5(body).hexdigest()


def webhook_signature(secret: str, body: bytes) -> str:
    """`X-Pusher-Signature`: hex HMAC-SHA256 of the raw webhook body."""
    return sign(secret, body)
