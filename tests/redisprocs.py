"""Real Redis topologies on loopback for the high-availability tests: a single server, a
master with a replica watched by three Sentinels, and a three-master Redis Cluster.

Invariants:
- Every process is a `redis-server` started here (Sentinels run as `redis-server
  --sentinel`, so no `redis-sentinel` package is needed), bound to 127.0.0.1 on a free port,
  with a throwaway data directory; `stop()` ends exactly the processes it started, by PID.
- Processes of one topology start in parallel; a topology is returned only when it serves
  (PONG, replication linked, every Sentinel knows the master, cluster_state:ok).
- Cluster ports leave room for the cluster bus (port + 10000), which is checked free too.
- A Sentinel setup may be secured: Sentinels with their own `requirepass`, data nodes with
  theirs, and TLS (a throwaway CA from `make_tls`). A TLS process keeps its plain `port` for
  the helpers here and serves the topology on `tls_port`: replication, the Sentinels' links
  and the addresses they name all use TLS (`tls-replication yes`).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SENTINEL_DOWN_AFTER_MS = 1_000
"""How long the Sentinels wait before calling the master down."""
SENTINEL_FAILOVER_TIMEOUT_MS = 5_000


def _binary(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is missing: scripts/test.sh installs it (apt-get redis-server)"
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(bus: bool = False) -> int:
    """A free loopback port; with `bus`, one below 55536 whose port + 10000 is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not bus:
            return port
        if port < 55_536 and _port_free(port + 10_000):
            return port
        # The kernel hands out high ports; walk down from a random-ish one instead.
        candidate = 20_000 + port % 30_000
        if _port_free(candidate) and _port_free(candidate + 10_000):
            return candidate
    raise RuntimeError("no free port pair for a cluster node")


_passwords: dict[int, str] = {}
"""The `requirepass` of the processes that have one, by plain port: `command` signs in."""


def _resp(*args: str) -> bytes:
    payload = f"*{len(args)}\r\n".encode()
    for arg in args:
        data = arg.encode()
        payload += b"$%d\r\n%s\r\n" % (len(data), data)
    return payload


def command(port: int, *args: str, timeout: float = 2.0) -> str:
    """One command over RESP, the reply as text (bulk, simple or error line); signs in
    first on a process started with a password."""
    payload = _resp(*args)
    password = _passwords.get(port)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        reply = b""
        if password is not None:
            sock.sendall(_resp("AUTH", password))
            while not reply.endswith(b"\r\n"):
                chunk = sock.recv(1024)
                assert chunk, f"redis :{port} closed the connection at AUTH"
                reply += chunk
            assert reply == b"+OK\r\n", reply
            reply = b""
        sock.sendall(payload)
        while True:
            chunk = sock.recv(65_536)
            if not chunk:
                break
            reply += chunk
            if _complete(reply):
                break
    head, _, rest = reply.partition(b"\r\n")
    if head.startswith(b"$"):
        return rest[: int(head[1:])].decode() if int(head[1:]) >= 0 else ""
    return reply.decode().strip()


def _complete(reply: bytes) -> bool:
    if not reply.endswith(b"\r\n"):
        return False
    if reply.startswith(b"$"):
        head, _, rest = reply.partition(b"\r\n")
        return int(head[1:]) < 0 or len(rest) >= int(head[1:]) + 2
    if reply.startswith(b"*"):
        return True  # arrays are only asked for where the first chunk holds them
    return True


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway CA and one certificate it signed (for 127.0.0.1 and localhost unless
    `make_tls` was given other names)."""

    ca: Path
    cert: Path
    key: Path


def make_tls(directory: Path, names: str = "IP:127.0.0.1,DNS:localhost") -> TlsFiles:
    """Make a CA and a server certificate for `names` (its subjectAltName) in `directory`
    with `openssl` (EC keys: fast)."""
    files = TlsFiles(directory / "ca.crt", directory / "server.crt", directory / "server.key")
    openssl = _binary("openssl")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    (directory / "san.cnf").write_text(f"subjectAltName={names}\n")
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
         "-subj", "/CN=pyserver test CA"],
        [openssl, "req", *ec, "-keyout", "server.key", "-out", "server.csr",
         "-subj", "/CN=127.0.0.1"],
        [openssl, "x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "san.cnf"],
    ]  # fmt: skip
    for step in steps:
        subprocess.run(step, cwd=directory, check=True, capture_output=True, timeout=30)
    return files


class Proc:
    """One `redis-server` process (server or Sentinel) with its own directory; with
    `password`, `command` signs in to it; with `tls`, it serves TLS on `tls_port` too."""

    def __init__(
        self,
        args: list[str],
        port: int,
        config: str | None = None,
        password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="pyserver-redis-"))
        self.args = args
        self.config = config
        self.proc: subprocess.Popen[bytes] | None = None
        self.tls = tls
        self.tls_port = free_port() if tls is not None else None
        if password is not None:
            _passwords[port] = password

    @property
    def served_port(self) -> int:
        """The port the topology uses: replication, the Sentinels, the clients under test."""
        return self.tls_port if self.tls_port is not None else self.port

    def start(self) -> None:
        argv = [_binary("redis-server")]
        if self.config is not None:
            path = self.dir / "redis.conf"
            path.write_text(self.config)
            argv.append(str(path))
        argv += [
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        if self.tls is not None:
            argv += [
                "--tls-port",
                str(self.tls_port),
                "--tls-cert-file",
                str(self.tls.cert),
                "--tls-key-file",
                str(self.tls.key),
                "--tls-ca-cert-file",
                str(self.tls.ca),
                "--tls-auth-clients",
                "no",
                "--tls-replication",
                "yes",
            ]
        argv += self.args
        log = (self.dir / "log").open("ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        log.close()

    def wait_ready(self, timeout: float = 10) -> None:
        try:
            wait_until(
                lambda: command(self.port, "PING") == "+PONG", timeout, f"redis :{self.port}"
            )
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; its log:\n{self.log()[-2000:]}") from None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        _passwords.pop(self.port, None)
        shutil.rmtree(self.dir, ignore_errors=True)

    def log(self) -> str:
        path = self.dir / "log"
        return path.read_text(errors="replace") if path.exists() else ""


class SingleRedis:
    def __init__(self) -> None:
        self.server = Proc([], free_port())
        self.server.start()
        self.server.wait_ready()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.server.port}/0"

    def stop(self) -> None:
        self.server.cleanup()


class SentinelSetup:
    """A master, one replica and three Sentinels (quorum 2) watching them as `master_name`.

    `password`: the data nodes' `requirepass` (and `masterauth`, `sentinel auth-pass`);
    `sentinel_password`: the Sentinels' own `requirepass`, which they also use among
    themselves; `tls`: everything on TLS (see the module's invariants)."""

    master_name = "mymaster"

    def __init__(
        self,
        password: str | None = None,
        sentinel_password: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        auth = ["--requirepass", password, "--masterauth", password] if password else []
        self.servers = [Proc(list(auth), free_port(), password=password, tls=tls) for _ in range(2)]
        master_port = self.servers[0].served_port
        self.servers[1].args += ["--replicaof", "127.0.0.1", str(master_port)]
        config = (
            f"sentinel monitor {self.master_name} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {self.master_name} {SENTINEL_DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {self.master_name} {SENTINEL_FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {self.master_name} 1\n"
        )
        if password:
            config += f"sentinel auth-pass {self.master_name} {password}\n"
        if sentinel_password:
            config += f"requirepass {sentinel_password}\n"
        self.sentinels = [
            Proc(["--sentinel"], free_port(), config=config, password=sentinel_password, tls=tls)
            for _ in range(3)
        ]
        try:
            for proc in self.servers + self.sentinels:
                proc.start()
            for proc in self.servers + self.sentinels:
                proc.wait_ready()
            self.wait_linked()
        except BaseException:
            self.stop()
            raise

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.served_port}" for s in self.sentinels]

    def wait_linked(self, timeout: float = 30) -> None:
        """Until the replica is in sync with the master and every Sentinel knows both and
        the other Sentinels: the state a failover needs."""
        wait_until(self._linked, timeout, "the replica to sync and the Sentinels to see it")

    def _linked(self) -> bool:
        master = self.master_port()
        replicas = [p for p in self.servers if p.served_port != master and p.proc is not None]
        for replica in replicas:
            info = command(replica.port, "INFO", "replication")
            if "master_link_status:up" not in info or f"master_port:{master}" not in info:
                return False
        for sentinel in self.sentinels:
            info = command(sentinel.port, "INFO", "sentinel")
            if f"127.0.0.1:{master},slaves={len(replicas)},sentinels=3" not in info:
                return False
        return True

    def master_port(self) -> int:
        """The port the Sentinels currently name as master (its `served_port`)."""
        reply = command(
            self.sentinels[0].port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
        )
        lines = reply.split("\r\n")
        return int(lines[-1])

    def master(self) -> Proc:
        port = self.master_port()
        return self.server(port)

    def server(self, served_port: int) -> Proc:
        """The data node the Sentinels name by `served_port`."""
        return next(p for p in self.servers if p.served_port == served_port)

    def failover(self) -> None:
        """`SENTINEL FAILOVER`, repeated while the Sentinel does not yet trust the replica
        (NOGOODSLAVE right after a start or a previous failover)."""
        deadline = time.monotonic() + 15
        while True:
            reply = command(self.sentinels[0].port, "SENTINEL", "FAILOVER", self.master_name)
            if reply == "+OK":
                return
            assert reply.startswith("-NOGOODSLAVE") and time.monotonic() < deadline, reply
            time.sleep(0.1)

    def wait_for_new_master(self, old_port: int, timeout: float = 30) -> int:
        """Wait until every Sentinel names a master other than `old_port` and that server
        answers as a master; the new port."""

        def moved() -> bool:
            ports = set()
            for sentinel in self.sentinels:
                reply = command(
                    sentinel.port, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name
                )
                ports.add(int(reply.split("\r\n")[-1]))
            if len(ports) != 1 or old_port in ports:
                return False
            server = self.server(ports.pop())
            return "role:master" in command(server.port, "INFO", "replication")

        wait_until(moved, timeout, "the Sentinels to promote a new master")
        return self.master_port()

    def stop(self) -> None:
        for proc in self.sentinels + self.servers:
            proc.cleanup()


class ClusterSetup:
    """Three masters, slots spread evenly by `redis-cli --cluster create`; with `replicas`,
    that many replicas of each master, so that the cluster fails over by itself."""

    NODE_TIMEOUT_MS = 2_000
    """`cluster-node-timeout`: how long a silent master is waited for before failover."""

    def __init__(self, masters: int = 3, replicas: int = 0) -> None:
        self.masters = masters
        self.replicas = replicas
        total = masters * (1 + replicas)
        ports: list[int] = []
        while len(ports) < total:
            port = free_port(bus=True)
            if port not in ports:
                ports.append(port)
        self.nodes = [
            Proc(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    str(self.NODE_TIMEOUT_MS),
                ],
                port,
            )
            for port in ports
        ]
        try:
            for proc in self.nodes:
                proc.start()
            for proc in self.nodes:
                proc.wait_ready()
            subprocess.run(
                [
                    _binary("redis-cli"),
                    "--cluster",
                    "create",
                    *[f"127.0.0.1:{port}" for port in ports],
                    "--cluster-replicas",
                    str(replicas),
                    "--cluster-yes",
                ],
                check=True,
                capture_output=True,
                timeout=30,
            )
            wait_until(self._ok, 20, "cluster_state:ok on every node")
        except BaseException:
            self.stop()
            raise

    def _ok(self) -> bool:
        return (
            all("cluster_state:ok" in command(p.port, "CLUSTER", "INFO") for p in self.nodes)
            and all(
                f"cluster_known_nodes:{len(self.nodes)}\r\n" in command(p.port, "CLUSTER", "INFO")
                for p in self.nodes
            )
            and all(self._replicas_synced())
        )

    def _replicas_synced(self) -> list[bool]:
        synced = []
        for proc in self.nodes:
            info = command(proc.port, "INFO", "replication")
            if "role:slave" in info:
                synced.append("master_link_status:up" in info)
        return synced if len(synced) == self.masters * self.replicas else [False]

    def node(self, port: int) -> Proc:
        return next(p for p in self.nodes if p.port == port)

    def owner(self, slot: int) -> int:
        """Port of the master that serves `slot` now, as the live nodes agree."""
        for proc in self.nodes:
            if proc.proc is None:
                continue
            for line in command(proc.port, "CLUSTER", "NODES").splitlines():
                fields = line.split()
                if "master" not in fields[2] or "fail" in fields[2]:
                    continue
                for part in fields[8:]:
                    low, _, high = part.partition("-")
                    if part[0].isdigit() and int(low) <= slot <= int(high or low):
                        return int(fields[1].split(":")[1].split("@")[0])
            break
        raise LookupError(slot)

    def ok(self) -> bool:
        """cluster_state:ok on every live node."""
        return all(
            "cluster_state:ok" in command(p.port, "CLUSTER", "INFO")
            for p in self.nodes
            if p.proc is not None
        )

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    def stop(self) -> None:
        for proc in self.nodes:
            proc.cleanup()


# --- one of each topology per test session, made on first use --------------------------------

_shared: dict[str, SingleRedis | SentinelSetup | ClusterSetup] = {}


def shared_sentinel() -> SentinelSetup:
    """The session's Sentinel setup (the fixture's and the integration `deploy`'s)."""
    if "sentinel" not in _shared:
        _shared["sentinel"] = SentinelSetup()
    setup = _shared["sentinel"]
    assert isinstance(setup, SentinelSetup)
    return setup


def shared_cluster() -> ClusterSetup:
    """The session's three-master cluster (the fixture's and the integration `deploy`'s)."""
    if "cluster" not in _shared:
        _shared["cluster"] = ClusterSetup()
    setup = _shared["cluster"]
    assert isinstance(setup, ClusterSetup)
    return setup


def stop_shared() -> None:
    """At the end of the session (tests/conftest.py)."""
    for setup in _shared.values():
        setup.stop()
    _shared.clear()


# --- pytest fixtures, shared by the whole session (tests/conftest.py re-exports them) ---------


@pytest.fixture(scope="session")
def redis_single() -> Iterator[SingleRedis]:
    setup = SingleRedis()
    yield setup
    setup.stop()


@pytest.fixture(scope="session")
def redis_sentinel() -> SentinelSetup:
    """Shared: a test that fails over or kills the master leaves a working pair behind
    (the killed server comes back as a replica), so tests must ask who the master is."""
    return shared_sentinel()


@pytest.fixture(scope="session")
def redis_cluster() -> ClusterSetup:
    return shared_cluster()
