"""Protected mode without sockets: who counts as this machine, and what the API answers.

The addresses are strings here: 203.0.113.7 (TEST-NET-3) stands for a remote client and is
never contacted.
"""

from __future__ import annotations

import json
import time

import pytest

from pyserver.api.routes import Api
from pyserver.auth.protected import REFUSAL, exposure_warning, from_this_machine
from pyserver.auth.signatures import md5_hex, request_string_to_sign, sign
from pyserver.channels.app import App
from pyserver.cluster.local import LocalAdapter
from pyserver.config import DEFAULT_SECRET, AppConfig, Settings
from pyserver.http import Request, Response
from pyserver.server.server import Server

REMOTE = "203.0.113.7"


@pytest.mark.parametrize(
    "peer", ["127.0.0.1:50000", "127.4.5.6:50000", "::1:50000", "::ffff:127.0.0.1:50000"]
)
def test_a_loopback_peer_without_forwarding_headers_is_this_machine(peer: str) -> None:
    assert from_this_machine(peer, {})


@pytest.mark.parametrize(
    "peer", [f"{REMOTE}:50000", f"::ffff:{REMOTE}:50000", "2001:db8::7:50000", "", "garbage"]
)
def test_any_other_peer_is_not(peer: str) -> None:
    assert not from_this_machine(peer, {})


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-forwarded-for", REMOTE),
        ("x-forwarded-for", f"127.0.0.1, {REMOTE}"),
        ("x-forwarded-for", f"{REMOTE}:41000"),
        ("x-forwarded-for", "unknown"),
        ("x-real-ip", REMOTE),
        ("forwarded", f"for={REMOTE};proto=https"),
        ("forwarded", f'for=127.0.0.1, For="{REMOTE}:41000"'),
        ("forwarded", 'for="[2001:db8::7]:4711"'),
        ("forwarded", "for=_hidden"),
    ],
)
def test_a_proxy_on_this_host_forwarding_another_client_is_not(header: str, value: str) -> None:
    assert not from_this_machine("127.0.0.1:50000", {header: value})


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-forwarded-for", "127.0.0.1"),
        ("x-forwarded-for", "127.0.0.1, ::1,"),
        ("x-real-ip", "127.0.0.1"),
        ("forwarded", 'for="[::1]:4711";proto=http, for=127.0.0.1:80'),
        ("forwarded", "proto=http"),
    ],
)
def test_a_proxy_on_this_host_forwarding_a_local_client_is_this_machine(
    header: str, value: str
) -> None:
    assert from_this_machine("127.0.0.1:50000", {header: value})


def test_headers_never_admit_a_remote_peer() -> None:
    local = {"x-forwarded-for": "127.0.0.1", "x-real-ip": "127.0.0.1", "forwarded": "for=::1"}
    assert not from_this_machine(f"{REMOTE}:50000", local)


# --- through the API handler ---------------------------------------------------------------


def make_api(secret: str = DEFAULT_SECRET, protected: bool = True) -> Api:
    app = App(AppConfig(id="app-id", key="app-key", secret=secret), LocalAdapter())
    return Api(
        {"app-id": app},
        {"app-key": app},
        600,
        console=lambda request: Response(200, b'{"console":true}'),
        protected=protected,
    )


def signed_trigger(peer: str, headers: dict[str, str] | None = None) -> Request:
    body = json.dumps({"name": "e", "channel": "c", "data": "x"}).encode()
    params = {
        "auth_key": "app-key",
        "auth_timestamp": str(int(time.time())),
        "auth_version": "1.0",
        "body_md5": md5_hex(body),
    }
    path = "/apps/app-id/events"
    params["auth_signature"] = sign(DEFAULT_SECRET, request_string_to_sign("POST", path, params))
    return Request("POST", path, params, headers or {}, body, peer=peer)


def answer(api: Api, request: Request) -> tuple[int, object]:
    response = api.handle(request)
    assert isinstance(response, Response)
    return response.status, json.loads(response.body)


def test_the_api_refuses_a_remote_peer_with_403_naming_the_option() -> None:
    status, body = answer(make_api(), signed_trigger(f"{REMOTE}:50000"))
    assert (status, body) == (403, {"error": REFUSAL, "status": 403})
    assert "protected_mode = false" in REFUSAL and "PYSERVER_PROTECTED_MODE=false" in REFUSAL
    assert "PYSERVER_APP_SECRET" in REFUSAL and DEFAULT_SECRET not in REFUSAL


def test_the_api_serves_loopback_and_refuses_what_a_local_proxy_forwards() -> None:
    api = make_api()
    assert answer(api, signed_trigger("127.0.0.1:50000")) == (200, {})
    forwarded = signed_trigger("127.0.0.1:50000", {"x-forwarded-for": REMOTE})
    assert answer(api, forwarded)[0] == 403


def test_every_route_but_health_is_protected() -> None:
    api = make_api()
    remote = f"{REMOTE}:50000"
    for path in ("/console", "/console/api/state", "/users/42/terminate_connections"):
        assert answer(api, Request("GET", path, {}, {}, peer=remote))[0] == 403, path
    for path in ("/", "/up", "/ready", "/health"):
        assert answer(api, Request("GET", path, {}, {}, peer=remote))[0] == 200, path
    assert answer(api, Request("GET", "/console", {}, {}, peer="127.0.0.1:1")) == (
        200,
        {"console": True},
    )


def test_protected_mode_off_lets_a_remote_peer_in() -> None:
    assert answer(make_api(protected=False), signed_trigger(f"{REMOTE}:50000")) == (200, {})


@pytest.mark.parametrize(
    ("secrets", "protected_mode", "protected"),
    [
        (["s3cr3t"], True, False),
        ([DEFAULT_SECRET], True, True),
        (["s3cr3t", DEFAULT_SECRET], True, True),
        ([DEFAULT_SECRET], False, False),
    ],
)
def test_the_server_is_protected_while_any_app_uses_the_default_secret(
    secrets: list[str], protected_mode: bool, protected: bool
) -> None:
    apps = [AppConfig(id=str(i), key=f"k{i}", secret=s) for i, s in enumerate(secrets)]
    settings = Settings(apps=apps, protected_mode=protected_mode)
    assert Server(settings).api.protected is protected
    assert settings.default_secret_apps() == [a.id for a in apps if a.secret == DEFAULT_SECRET]


def test_protected_mode_is_on_by_default() -> None:
    assert Settings.model_fields["protected_mode"].default is True


def test_the_warning_says_what_is_exposed_and_how_to_fix_it() -> None:
    on = exposure_warning(["app-id"], protected=True)
    assert on.startswith("app app-id uses the well-known default secret")
    for exposed in ("sign private and presence subscriptions", "trigger events", "403"):
        assert exposed in on
    off = exposure_warning(["1", "2"], protected=False)
    assert off.startswith("apps 1, 2 use the well-known default secret and protected_mode is")
    for exposed in (
        "trigger events",
        "read channel and presence data",
        "terminate users",
        "open the console",
        "sign private and presence subscriptions",
    ):
        assert exposed in off
    assert all("PYSERVER_APP_SECRET" in w and DEFAULT_SECRET not in w for w in (on, off))
