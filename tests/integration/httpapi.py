"""Signed HTTP API requests made by hand (independently of pyserver's own signing code),
for the cases the SDKs refuse to send: wrong keys, old timestamps, bad bodies."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
from typing import Any
from urllib.parse import quote

from tests.integration.conftest import MAIN, AppCreds


def sign_params(
    method: str,
    path: str,
    params: dict[str, str],
    body: bytes,
    app: AppCreds = MAIN,
    with_md5: bool = True,
) -> dict[str, str]:
    params = {
        "auth_key": app.key,
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        **params,
    }
    if body and with_md5:
        params["body_md5"] = hashlib.md5(body).hexdigest()
    query = "&".join(f"{k}={params[k]}" for k in sorted(params))
    string = f"{method}\n{path}\n{query}"
    params["auth_signature"] = hmac.new(
        app.secret.encode(), string.encode(), hashlib.sha256
    ).hexdigest()
    return params


def request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any, http.client.HTTPResponse]:
    query = "&".join(f"{k}={quote(v, safe=',')}" for k, v in (params or {}).items())
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(
        method,
        f"{path}?{query}" if query else path,
        body=body or None,
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw
    return response.status, value, response


def signed(
    port: int,
    method: str,
    path: str,
    body: Any = None,
    params: dict[str, str] | None = None,
    app: AppCreds = MAIN,
) -> tuple[int, Any]:
    raw = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    status, value, _ = request(
        port, method, path, raw, sign_params(method, path, params or {}, raw, app)
    )
    return status, value


def signed_post(port: int, path: str, body: Any, app: AppCreds = MAIN) -> tuple[int, Any]:
    return signed(port, "POST", path, body, app=app)
