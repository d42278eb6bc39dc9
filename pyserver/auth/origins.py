"""Which browser origins may open a WebSocket to an app (an extension; hosted Pusher has none).

A pattern is `*` (anyone), a host (`example.com`, any scheme and port), a host with a
leading wildcard label (`*.example.com`: subdomains only), or a whole origin with a scheme
(`https://app.example.com`, `https://*.example.com`, `http://localhost:3000`).

Invariants:
- No patterns means every origin is allowed (the default; hosted Pusher checks none).
- A connection without an `Origin` header is allowed: browsers always send one, and other
  clients (mobile SDKs, servers) could write any value, so the check protects browser users
  from other sites and is no authentication.
- Comparison is case-insensitive; a wildcard matches one or more whole labels, never a
  suffix of a label (`*.example.com` does not match `badexample.com`).
"""

from __future__ import annotations

from urllib.parse import urlsplit


def origin_allowed(origin: str | None, patterns: tuple[str, ...]) -> bool:
    """Whether a WebSocket with this `Origin` header may connect under these patterns."""
    if not patterns or origin is None:
        return True
    origin = origin.strip().lower()
    try:
        parts = urlsplit(origin)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return False
    for pattern in patterns:
        if pattern == "*":
            return True
        pattern = pattern.lower()
        if "://" not in pattern:
            if _host_matches(host, pattern):
                return True
            continue
        scheme, _, rest = pattern.partition("://")
        pattern_host, _, pattern_port = rest.partition(":")
        if scheme != parts.scheme or not _host_matches(host, pattern_host):
            continue
        if pattern_port and (port is None or pattern_port != str(port)):
            continue
        if not pattern_port and port is not None and port != _DEFAULT_PORTS.get(scheme):
            continue
        return True
    return False


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern
