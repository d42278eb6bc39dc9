"""Verification of signed HTTP API requests (`spec/protocol.md` §11.1).

`verify_request` decides whether a request was signed by an app's secret. It is sans-I/O:
the caller passes what it parsed from the request and the current time.

Invariants:
- `auth_key` must be the app's key, `auth_version` 1.0 when present, `auth_timestamp`
  within `max_skew` seconds of now.
- `body_md5`, when present, must match the body, on every method (pusher-http-python sends
  it on GETs too); a non-empty body requires it. A mismatch is an authentication failure
  (401), like a bad signature: the signed body is not the body that arrived.
- The signature is recomputed over the parameters actually received, lower-cased keys,
  sorted, values unescaped, and each of the caller's candidate paths in turn (the raw path,
  its percent-decoded form, each with and without a configured prefix), so channel names
  with escapes verify either way; a failure names the string for the first candidate.
"""

from __future__ import annotations

import hmac
import math
from collections.abc import Mapping, Sequence

from pyserver.auth.signatures import md5, sign, signed_query
from pyserver.protocol.errors import Unauthorized


def verify_request(
    method: str,
    paths: Sequence[str],
    params: Mapping[str, str],
    body: bytes,
    app_key: str,
    secret: str,
    now: float,
    max_skew: float = 600.0,
    previous_secret: str | None = None,
) -> None:
    """Raise `Unauthorized` unless the request is signed correctly; return None when it is.
    `previous_secret`: the secret a rotation replaced, still accepted (docs/apps.md)."""
    get = params.get
    auth_key = get("auth_key")
    if auth_key is None:
        raise Unauthorized("Missing auth_key query parameter")
    # The key is public (clients send it in every WebSocket URL): no constant time needed.
    if auth_key != app_key:
        raise Unauthorized(f"Invalid auth_key '{auth_key[:64]}': it is not this app's key")
    signature = get("auth_signature")
    if not signature:
        raise Unauthorized("Missing auth_signature query parameter")
    timestamp = get("auth_timestamp")
    if timestamp is None:
        raise Unauthorized("Missing auth_timestamp query parameter")
    try:
        skew = abs(now - float(timestamp))
    except ValueError:
        skew = math.nan
    # `not skew < inf` is true for inf and for "nan", which would pass any other comparison
    if not skew < math.inf or skew > max_skew:
        if not math.isfinite(skew):  # a request replayable for ever
            raise Unauthorized("auth_timestamp must be a unix time in seconds")
        raise Unauthorized(
            f"Timestamp expired: auth_timestamp {timestamp} is more than {int(max_skew)} s "
            "from the server's time; check the clock of the signing machine"
        )
    version = get("auth_version")
    if version is not None and version != "1.0":
        raise Unauthorized("auth_version must be 1.0")
    body_md5 = get("body_md5")
    if body_md5 is not None:
        actual = md5(body).hexdigest()  # `md5_hex`, without the call
        if body_md5 != actual:  # the body's digest is no secret either
            raise Unauthorized(f"body_md5 {body_md5[:64]} does not match the body's MD5 {actual}")
    elif body:
        raise Unauthorized("body_md5 is required for a request with a body")

    # The query part is the same for every candidate path: built once. A signature that is
    # not ASCII cannot be a hex digest (and `compare_digest` takes only ASCII strings).
    query = signed_query(params)
    method = method.upper()
    if signature.isascii():
        tried = None
        for path in paths:
            if path == tried:  # raw and decoded paths are usually the same string
                continue
            tried = path
            message = f"{method}\n{path}\n{query}"
            if hmac.compare_digest(sign(secret, message), signature):
                return
            if previous_secret is not None and hmac.compare_digest(
                sign(previous_secret, message), signature
            ):
                return
    raise Unauthorized(
        "Invalid signature: Expected HMAC SHA256 hex digest of "
        f"{method}\n{paths[0]}\n{query}, but got {signature[:128]}"
    )
