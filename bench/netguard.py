"""The loopback guard: the bench only targets this machine unless told otherwise.

`check_target` accepts a host when every address it resolves to is loopback (127.0.0.0/8 or
::1, also as an IPv4-mapped IPv6 address) and returns one of those addresses, which the bench
then connects to, so a name cannot resolve differently later. Any other host, or a name that
does not resolve, is refused unless `allow_remote` is set.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any

Resolver = Callable[..., Sequence[tuple[Any, ...]]]


class RemoteTargetRefused(Exception):
    """The target is not loopback and `--allow-remote` was not given."""


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ::ffff:127.x.y.z; False for anything else or garbage."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def resolve(host: str, port: int, resolver: Resolver | None = None) -> list[str]:
    """Every address `host` resolves to for TCP (IP literals are returned unresolved).
    `resolver` defaults to `socket.getaddrinfo`."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        return [host]
    except ValueError:
        pass
    infos = (resolver or socket.getaddrinfo)(host, port, 0, socket.SOCK_STREAM)
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def check_target(host: str, port: int, allow_remote: bool, resolver: Resolver | None = None) -> str:
    """The address to connect to; raises `RemoteTargetRefused` for non-loopback targets.

    With `allow_remote` the host is returned unchanged and not resolved here.
    """
    if allow_remote:
        return host
    if not host:
        raise RemoteTargetRefused("empty --host")
    try:
        addresses = resolve(host, port, resolver)
    except OSError as exc:
        raise RemoteTargetRefused(
            f"refusing --host {host}: it does not resolve ({exc}), so it cannot be shown to "
            "be this machine. The bench only targets loopback (127.0.0.0/8, ::1) unless "
            "--allow-remote is given."
        ) from exc
    remote = [a for a in addresses if not is_loopback(a)]
    if not addresses or remote:
        shown = ", ".join(remote or addresses) or "nothing"
        raise RemoteTargetRefused(
            f"refusing --host {host}: it resolves to {shown}, which is not loopback. "
            "The bench only targets 127.0.0.0/8 and ::1 unless --allow-remote is given; "
            "load only servers you run or are allowed to test."
        )
    # Prefer IPv4 loopback when a name resolves to both, as most servers listen there.
    addresses.sort(key=lambda a: ":" in a)
    return addresses[0]
