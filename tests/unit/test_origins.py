"""Origin patterns of `allowed_origins`."""

from __future__ import annotations

import pytest

from pyserver.auth.origins import origin_allowed


@pytest.mark.parametrize(
    ("origin", "patterns", "allowed"),
    [
        ("https://evil.example", (), True),  # no list: everyone, like hosted Pusher
        (None, ("example.com",), True),  # not a browser
        ("https://example.com", ("*",), True),
        ("https://example.com", ("example.com",), True),
        ("http://EXAMPLE.com:8080", ("example.com",), True),  # a host: any scheme and port
        ("https://app.example.com", ("example.com",), False),
        ("https://app.example.com", ("*.example.com",), True),
        ("https://a.b.example.com", ("*.example.com",), True),
        ("https://example.com", ("*.example.com",), False),
        ("https://badexample.com", ("*.example.com",), False),
        ("https://app.example.com", ("https://app.example.com",), True),
        ("http://app.example.com", ("https://app.example.com",), False),
        ("https://app.example.com:444", ("https://app.example.com",), False),
        ("https://app.example.com:443", ("https://app.example.com",), True),
        ("http://localhost:3000", ("http://localhost:3000",), True),
        ("http://localhost:3001", ("http://localhost:3000",), False),
        ("https://x.example.com", ("https://*.example.com",), True),
        ("null", ("example.com",), False),  # sandboxed iframes, file:// pages
        ("https://evil.example", ("example.com", "other.org"), False),
        ("http://[::1", ("example.com",), False),  # unparsable
    ],
)
def test_origin_patterns(origin: str | None, patterns: tuple[str, ...], allowed: bool) -> None:
    assert origin_allowed(origin, patterns) is allowed
