"""The loopback guard. No test here connects anywhere or asks a real DNS server: names are
resolved by fake resolvers."""

import socket
from typing import Any

import pytest

from bench import cli
from bench.netguard import RemoteTargetRefused, check_target, is_loopback


def fake_resolver(table: dict[str, list[str]]) -> Any:
    def resolve(host: str, port: int, *_args: Any) -> list[tuple[Any, ...]]:
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in table[host]
        ]

    return resolve


def forbid_resolving(*_args: Any) -> Any:
    raise AssertionError("IP literals must not be resolved")


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "127.1.2.3", "127.255.255.254", "::1", "::ffff:127.0.0.1"]
)
def test_loopback_literals_are_accepted(address: str) -> None:
    assert is_loopback(address)
    assert check_target(address, 6001, False, forbid_resolving) == address


@pytest.mark.parametrize(
    "address", ["10.0.0.1", "192.168.1.1", "172.16.0.1", "8.8.8.8", "0.0.0.0", "::", "fe80::1"]
)
def test_other_literals_are_refused(address: str) -> None:
    assert not is_loopback(address)
    with pytest.raises(RemoteTargetRefused, match="not loopback"):
        check_target(address, 6001, False, forbid_resolving)


def test_a_public_name_is_refused() -> None:
    resolver = fake_resolver({"example.com": ["93.184.215.14", "2606:2800:21f:cb07::1"]})
    with pytest.raises(RemoteTargetRefused, match="--allow-remote"):
        check_target("example.com", 6001, False, resolver)


def test_a_name_resolving_partly_outside_loopback_is_refused() -> None:
    resolver = fake_resolver({"sneaky.test": ["127.0.0.1", "10.0.0.1"]})
    with pytest.raises(RemoteTargetRefused, match=r"10\.0\.0\.1"):
        check_target("sneaky.test", 6001, False, resolver)


def test_an_unresolvable_name_is_refused() -> None:
    with pytest.raises(RemoteTargetRefused, match="does not resolve"):
        check_target("nowhere.invalid", 6001, False, fake_resolver({}))


def test_localhost_resolves_to_a_pinned_loopback_address() -> None:
    resolver = fake_resolver({"localhost": ["::1", "127.0.0.1"]})
    assert check_target("localhost", 6001, False, resolver) == "127.0.0.1"


def test_allow_remote_lets_anything_through_unresolved() -> None:
    assert check_target("example.com", 6001, True, forbid_resolving) == "example.com"
    assert check_target("10.0.0.1", 6001, True, forbid_resolving) == "10.0.0.1"


def test_the_cli_refuses_a_private_address(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["fanout", "--host", "10.0.0.1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "refusing --host 10.0.0.1" in err and "--allow-remote" in err


def test_the_cli_refuses_a_public_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(socket, "getaddrinfo", fake_resolver({"example.com": ["93.184.215.14"]}))
    with pytest.raises(SystemExit) as exc:
        cli.main(["--scenario", "http", "--host", "example.com"])
    assert exc.value.code == 2
    assert "refusing --host example.com" in capsys.readouterr().err
