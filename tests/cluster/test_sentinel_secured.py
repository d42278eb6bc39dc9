"""Sentinels with a password, and everything on TLS (issue 14: "an optional Sentinel password
and TLS"), through two real server nodes and real Redis processes (tests/redisprocs.py).

- Sentinels with their own `requirepass` and data nodes with theirs: both nodes connect,
  follow a `SENTINEL FAILOVER` (a trigger on node B reaches a client on node A again within
  the Sentinels' own failover plus 5 s), and presence is whole afterwards.
- The same with the data nodes and the Sentinels on TLS only for the topology (a throwaway CA
  made with `openssl`): `redis_sentinel_tls` with `redis_sentinel_tls_ca`, and a `rediss://`
  `redis_url` with `?ssl_ca_certs=`.
- A wrong Sentinel password: the node keeps running and retrying (503 on /ready), and says
  once, in a short line, which Sentinels refused the password and which option to check;
  no traceback.
- A certificate that does not verify (signed by another CA than the one configured, or not
  naming the host connected to), of the Sentinels, of the master they name, or of a single
  server: the node keeps running and retrying, and every log line about it names the
  option that holds the CA, its environment variable, and that the host must match.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.test_failover import SLACK, Listener, _ready, _wait
from tests.integration.conftest import MAIN, PusherSocket, deploy, sdk
from tests.integration.serverproc import ServerProcess
from tests.redisprocs import Proc, SentinelSetup, command, free_port, make_tls

DATA_PASSWORD = "data-secret"
SENTINEL_PASSWORD = "sentinel-secret"

CONFIG = f"""
[[apps]]
id = "{MAIN.id}"
key = "{MAIN.key}"
secret = "{MAIN.secret}"
"""


@pytest.fixture(scope="module")
def tls_dir() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="pyserver-tls-"))
    yield directory
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


def _prefix(output: str) -> str:
    """The node's Redis key prefix, from its start-up line."""
    return next(
        line.split("prefix=")[1].split()[0] for line in output.splitlines() if "prefix=" in line
    )


def _env(setup: SentinelSetup, tls_ca: Path | None, sentinel_password: str) -> dict[str, str]:
    env = {
        "PYSERVER_REDIS_URL": f"redis://:{DATA_PASSWORD}@sentinel-names-the-host/0",
        "PYSERVER_REDIS_SENTINELS": ",".join(setup.sentinel_addresses),
        "PYSERVER_REDIS_SENTINEL_MASTER": setup.master_name,
        "PYSERVER_REDIS_SENTINEL_PASSWORD": sentinel_password,
    }
    if tls_ca is not None:
        env["PYSERVER_REDIS_URL"] = (
            f"rediss://:{DATA_PASSWORD}@sentinel-names-the-host/0?ssl_ca_certs={tls_ca}"
        )
        env["PYSERVER_REDIS_SENTINEL_TLS"] = "true"
        env["PYSERVER_REDIS_SENTINEL_TLS_CA"] = str(tls_ca)
    return env


@pytest.mark.parametrize("tls", [False, True], ids=["password", "password-and-tls"])
def test_secured_sentinels_follow_a_failover(tls_dir: Path, uid: str, tls: bool) -> None:
    files = make_tls(tls_dir) if tls else None
    setup = SentinelSetup(password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD, tls=files)
    deployment = None
    listener = None
    try:
        env = _env(setup, files.ca if files else None, SENTINEL_PASSWORD)
        deployment = deploy(CONFIG, "redis", env=env)
        a, b = deployment.nodes
        _wait(lambda: _ready(a.port) and _ready(b.port), 15, "both nodes ready")
        channel, presence = f"ticks-{uid}", f"presence-sec-{uid}"
        listener = Listener(a.port)
        listener.sock.subscribe(channel)
        listener.start()
        member_a, member_b = PusherSocket(a.port), PusherSocket(b.port)
        member_a.signed_subscribe(presence, "stay-a", {})
        member_b.signed_subscribe(presence, "stay-b", {})
        api = sdk(b.port)
        api.trigger(channel, "tick", {"n": 0})
        _wait(lambda: listener is not None and listener.events("tick"), 5, "a first trigger")

        old = setup.master_port()
        started = time.monotonic()
        setup.failover()
        setup.wait_for_new_master(old)
        promoted = time.monotonic() - started
        # Trigger on node B every 0.25 s until well after the bound; node A must get them.
        sent: dict[int, float] = {}
        seq = 0
        while time.monotonic() - started < promoted + SLACK + 2:
            seq += 1
            sent[seq] = time.monotonic()
            api.trigger(channel, "tick", {"n": seq})
            time.sleep(0.25)
        time.sleep(1.0)
        got = {e["n"] for e in listener.events("tick")}
        missing = [n for n in sent if n not in got]
        recovered = sent[max(missing) + 1] - started if missing else 0.0
        print(
            f"\ntls={tls}: the Sentinels named the new master after {promoted:.2f} s, "
            f"triggers crossed again after {recovered:.2f} s ({len(missing)} of {seq} missed)"
        )
        assert max(missing, default=0) < seq, "the last triggers never crossed"
        assert recovered <= promoted + SLACK
        # Both nodes' buses listen on the new master, over TLS when asked to.
        new = setup.server(setup.master_port())
        assert new.served_port != old
        bus = f"{_prefix(deployment.output())}:bus"
        assert command(new.port, "PUBSUB", "NUMSUB", bus).endswith(":2"), bus
        _wait(lambda: _ready(a.port) and _ready(b.port), 15, "both nodes ready")
        for port in (a.port, b.port):
            node_api = sdk(port)
            users = node_api.users_info(presence)["users"]
            assert sorted(u["id"] for u in users) == ["stay-a", "stay-b"]
            assert node_api.channel_info(presence, ["user_count"])["user_count"] == 2
        member_a.close()
        member_b.close()
    finally:
        if listener is not None:
            listener.close()
        if deployment is not None:
            deployment.stop()
        setup.stop()
    output = deployment.output()
    assert "Traceback" not in output, output[-3000:]
    assert "Sentinel names a new master" in output


def test_wrong_sentinel_password_is_named_not_crashed() -> None:
    setup = SentinelSetup(password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD)
    node = None
    try:
        node = ServerProcess(
            CONFIG,
            env={"PYSERVER_ADAPTER": "redis", **_env(setup, None, "not-the-password")},
        )
        time.sleep(4.0)  # several retries of the adapter, the bus and the console
        assert node.proc.poll() is None, "the node keeps running and retrying"
        assert not _ready(node.port)
        output = node.output()
    finally:
        if node is not None:
            node.stop()
        setup.stop()
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if "redis_sentinel_password" in line]
    assert lines, output[-3000:]
    first = lines[0]
    assert "unreachable" in first and first.count("check redis_sentinel_password") == 3, first
    for sentinel in setup.sentinel_addresses:
        assert sentinel in first
    assert all(len(line) < 1_000 for line in output.splitlines()), max(output.splitlines(), key=len)
    assert SENTINEL_PASSWORD not in output and "not-the-password" not in output


SERVER_HINT = (
    "check TLS: redis_url must name the CA that signed the server's certificate as "
    "?ssl_ca_certs=/path/ca.pem (PYSERVER_REDIS_URL), the certificate must name the host "
    "connected to"
)
SENTINEL_HINT = (
    "check TLS: redis_sentinel_tls_ca (PYSERVER_REDIS_SENTINEL_TLS_CA) must name the CA "
    "that signed the Sentinel's certificate, the certificate must name the host as "
    "redis_sentinels writes it"
)


def _refused_certificate_lines(env: dict[str, str]) -> list[str]:
    """Run a node with `env` for a few seconds (it must keep running, not ready) and return
    its log lines about a certificate that did not verify."""
    node = ServerProcess(CONFIG, env={"PYSERVER_ADAPTER": "redis", **env})
    try:
        time.sleep(4.0)  # several retries of the adapter, the bus and the console
        assert node.proc.poll() is None, "the node keeps running and retrying"
        assert not _ready(node.port)
        output = node.output()
    finally:
        node.stop()
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in output.splitlines() if "certificate verify failed" in line]
    assert lines, output[-3000:]
    assert all(len(line) < 1_200 for line in lines), max(lines, key=len)
    return lines


@pytest.mark.parametrize("wrong", ["other-ca", "other-host"])
def test_server_certificate_that_does_not_verify_is_explained(tmp_path: Path, wrong: str) -> None:
    names = "DNS:redis.invalid" if wrong == "other-host" else "IP:127.0.0.1,DNS:localhost"
    files = make_tls(tmp_path, names)
    trusted = files.ca
    if wrong == "other-ca":
        (tmp_path / "other").mkdir()
        trusted = make_tls(tmp_path / "other").ca
    server = Proc([], free_port(), tls=files)
    try:
        server.start()
        server.wait_ready()
        url = f"rediss://127.0.0.1:{server.tls_port}/0?ssl_ca_certs={trusted}"
        lines = _refused_certificate_lines({"PYSERVER_REDIS_URL": url})
    finally:
        server.cleanup()
    reason = "IP address mismatch" if wrong == "other-host" else "self-signed certificate"
    assert any(reason in line for line in lines), lines
    assert any("redis adapter: Redis at" in line for line in lines), lines
    assert any("redis bus: subscription lost" in line for line in lines), lines
    for line in lines:
        assert SERVER_HINT in line, line


@pytest.mark.parametrize("wrong", ["sentinels", "master"])
def test_sentinel_certificate_that_does_not_verify_is_explained(tmp_path: Path, wrong: str) -> None:
    """The CA of the Sentinels, or the CA in the URL for the master they name, is another
    one than the CA that signed their certificates."""
    files = make_tls(tmp_path)
    (tmp_path / "other").mkdir()
    other = make_tls(tmp_path / "other").ca
    setup = SentinelSetup(password=DATA_PASSWORD, sentinel_password=SENTINEL_PASSWORD, tls=files)
    try:
        env = _env(setup, files.ca, SENTINEL_PASSWORD)
        if wrong == "sentinels":
            env["PYSERVER_REDIS_SENTINEL_TLS_CA"] = str(other)
        else:
            env["PYSERVER_REDIS_URL"] = env["PYSERVER_REDIS_URL"].replace(str(files.ca), str(other))
        lines = _refused_certificate_lines(env)
    finally:
        setup.stop()
    if wrong == "sentinels":
        first = lines[0]
        assert "unreachable" in first and first.count(SENTINEL_HINT) == 1, first
        for sentinel in setup.sentinel_addresses:
            assert sentinel in first
        assert all(SERVER_HINT not in line for line in lines), lines
    else:
        for line in lines:
            assert SERVER_HINT in line and SENTINEL_HINT not in line, line


def test_an_unreachable_redis_is_logged_without_the_password_of_its_url() -> None:
    port = free_port()  # nothing listens there
    node = ServerProcess(
        CONFIG,
        env={
            "PYSERVER_ADAPTER": "redis",
            "PYSERVER_REDIS_URL": f"redis://worker:hunter2@127.0.0.1:{port}/0",
        },
    )
    try:
        time.sleep(3.0)  # the adapter's first try and a retry
        assert node.proc.poll() is None, "the node keeps running and retrying"
        output = node.output()
    finally:
        node.stop()
    unreachable = [line for line in output.splitlines() if "is unreachable" in line]
    assert unreachable, output[-3000:]
    assert f"redis://worker:***@127.0.0.1:{port}/0" in unreachable[0], unreachable[0]
    assert "hunter2" not in output, output[-3000:]
