"""Protected mode: while an app uses the well-known default secret, only this machine may use
the HTTP API and the console (after Redis's protected mode, which refuses other hosts while no
password is set).

With no configuration, pyserver listens on every interface with the default app, whose secret
is in the documentation. Anyone who could reach the port could then trigger events, read
channel and presence data, terminate users and open the console. In protected mode those
answer requests from anywhere else with 403 and a message naming what to set; `/up`, `/ready`
and WebSocket connections are not affected. Sans-I/O: the caller passes the peer address and
the request headers.

Invariants:
- A request is from this machine when its TCP peer is a loopback address and every client
  that `X-Forwarded-For`, `Forwarded` (`for=`) or `X-Real-IP` names is one too. Anyone can
  send these headers, so they can only refuse a request, never admit one: a reverse proxy on
  this host forwarding a remote client is refused, a remote peer claiming loopback is too.
- What is not an IP address (an empty peer, `unknown`, an obfuscated `Forwarded` name) is not
  loopback.
- Neither the 403 message nor the warning shows the secret.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from functools import lru_cache

FORWARDING_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
"""Request headers (lower-case) in which proxies name the client they forward."""
_XFF, _FORWARDED, _X_REAL_IP = FORWARDING_HEADERS

_FIX = (
    "give every app a secret of its own (PYSERVER_APP_SECRET, or `secret` in [[apps]] / "
    "PYSERVER_APPS)"
)

REFUSAL = (
    "Protected mode: an app uses the well-known default secret, so the HTTP API and the "
    "console answer only requests from this machine (loopback, not through a proxy). To fix "
    f"it, {_FIX}; or, on a network you trust, set protected_mode = false "
    "(PYSERVER_PROTECTED_MODE=false)."
)
"""The `error` of the 403 answer: what is refused, and the options that lift it."""


def from_this_machine(peer: str, headers: Mapping[str, str]) -> bool:
    """Whether a request came from a loopback peer and names no other client in the
    forwarding headers. `peer` is `host:port` as the connection records it."""
    if not _loopback_peer(peer):
        return False
    if _XFF not in headers and _FORWARDED not in headers and _X_REAL_IP not in headers:
        return True  # no proxy named (three lookups cost less than `keys().isdisjoint`)
    for name in FORWARDING_HEADERS:
        value = headers.get(name)
        if value is not None and not all(map(_is_loopback, _named_clients(name, value))):
            return False
    return True


def exposure_warning(app_ids: Sequence[str], protected: bool) -> str:
    """The start-up warning for apps that use the default secret: what is open to whom."""
    apps = f"app{'s' if len(app_ids) > 1 else ''} {', '.join(app_ids)}"
    uses = "use" if len(app_ids) > 1 else "uses"
    if not protected:
        return (
            f"{apps} {uses} the well-known default secret and protected_mode is false: "
            "anyone who can reach this server's port can trigger events, read channel and "
            "presence data, terminate users, open the console, and sign private and presence "
            f"subscriptions with the public secret. To fix it, {_FIX}."
        )
    return (
        f"{apps} {uses} the well-known default secret: anyone who can reach this server's "
        "port can sign private and presence subscriptions with the public secret. Protected "
        "mode keeps the rest to this machine: the HTTP API and the console answer other hosts, "
        "and requests through a proxy, with 403; without it, anyone could trigger events, read "
        "channel and presence data, terminate users and open the console. To fix it, "
        f"{_FIX}."
    )


def _named_clients(header: str, value: str) -> list[str]:
    """The client addresses a forwarding header names, as written (ports and quotes kept)."""
    if header != "forwarded":
        return [part for part in (p.strip() for p in value.split(",")) if part]
    clients = []
    for element in value.split(","):
        for pair in element.split(";"):
            key, _, named = pair.strip().partition("=")
            if key.strip().lower() == "for":
                clients.append(named.strip())
    return clients


@lru_cache(maxsize=1024)
def _loopback_peer(peer: str) -> bool:
    """Whether a connection's `host:port` is a loopback address (one cached call a request)."""
    return _is_loopback(peer.rpartition(":")[0])


@lru_cache(maxsize=1024)
def _is_loopback(address: str) -> bool:
    """`127.0.0.1`, `::1`, `::ffff:127.0.0.1`, each also quoted, bracketed or with a port."""
    text = address.strip().strip('"')
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback
