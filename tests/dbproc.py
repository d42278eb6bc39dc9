"""Real PostgreSQL and MariaDB servers for the app store tests, from Debian's packages.

Each server is a local process on a free loopback port with a throwaway data directory
(initdb / mariadb-install-db into a temporary directory), started once per test session and
stopped by its PID; `stop()` then `start()` restarts it on the same data and port (for tests
that take the database away). `scripts/test.sh` installs the packages (`postgresql`,
`mariadb-server`) when they are missing.

Neither server runs as root (PostgreSQL refuses to, and CI runs as root): when the tests run
as root, the server runs as the package's own user (`postgres`, `mysql`) through `setpriv`,
which execs, so the PID we hold is the server's. Otherwise it runs as the current user.
Both are tuned for tests: no fsync, small buffers, TCP on 127.0.0.1 only.

Ports: a port found free now may be taken by the time the server binds it (by another test
process, or by an outgoing connection: the kernel hands out ports of its ephemeral range to
those). So the port is drawn at random below the ephemeral range (`_pick_port`), a server
that fails to bind is started again on another port (on the same one when restarting: the
tests hold its URL), and readiness asks the server for its own data directory, so a server
of someone else's that answers on the port is never taken for ours.
"""

from __future__ import annotations

import asyncio
import glob
import itertools
import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.redisproc import free_port

USER = "pyserver"
PASSWORD = "pyserver-test"
_names = itertools.count(1)
START_ATTEMPTS = 5
"""Starts tried before giving up when the port turns out to be taken (`PortClash`)."""
_CLASH = ("Address already in use", "Bind on TCP/IP port")
"""What PostgreSQL and MariaDB log when their port is taken."""


class PortClash(RuntimeError):
    """The server exited because something else holds its port."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_port() -> int:
    """A loopback port free now, drawn at random below the kernel's ephemeral range, where
    no outgoing connection takes it meanwhile and other tests' `free_port()` never looks."""
    low, _ = _ephemeral_range()
    if low > 11_000:
        for _ in range(50):
            port = random.randrange(10_000, low)
            if _bindable(port):
                return port
    return free_port()


def _run_as(user: str) -> tuple[list[str], int | None, int | None]:
    """The command prefix that runs a server as `user` when we are root; its uid and gid."""
    if os.geteuid() != 0:
        return [], None, None
    entry = pwd.getpwnam(user)
    prefix = [
        "setpriv",
        f"--reuid={entry.pw_uid}",
        f"--regid={entry.pw_gid}",
        "--clear-groups",
        "--",
    ]
    return prefix, entry.pw_uid, entry.pw_gid


def _give(path: Path, uid: int | None, gid: int | None) -> None:
    if uid is not None and gid is not None:
        os.chown(path, uid, gid)


class _ServerProcess:
    name = "database"
    os_user = ""
    data: Path

    def __init__(self) -> None:
        self.port = _pick_port()
        self.started = False
        """Whether it ever started: from then on the port is kept (tests hold the URL)."""
        self.base = Path(tempfile.mkdtemp(prefix=f"pyserver-{self.name}-"))
        self.prefix, self.uid, self.gid = _run_as(self.os_user)
        _give(self.base, self.uid, self.gid)
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.base / "server.log"

    def _command(self) -> list[str]:
        raise NotImplementedError

    def _admin(self, *statements: str) -> None:
        """Run statements as the test user, on a connection of their own."""
        raise NotImplementedError

    def url(self, database: str = "") -> str:
        raise NotImplementedError

    def _data_directory(self) -> str:
        """The data directory of the server that answers on `port`."""
        raise NotImplementedError

    def _ready(self) -> bool:
        """Whether our server answers on the port (not another one that holds it)."""
        return Path(self._data_directory()).resolve() == self.data.resolve()

    def _initialise(self, command: list[str]) -> None:
        """Create the data directory (initdb, mariadb-install-db) as the server's user."""
        subprocess.run(
            [*self.prefix, *command],
            check=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.base,
        )

    def create_database(self) -> str:
        """A new empty database; its URL."""
        name = f"apps_{os.getpid()}_{next(_names)}"
        self._admin(f"CREATE DATABASE {name}")
        return self.url(name)

    def start(self) -> None:
        """Start the server and wait until it answers. When its port is taken, start it again:
        on another port the first time, on the same one (once it is free) for a restart."""
        for attempt in range(START_ATTEMPTS):
            try:
                self._start_once()
            except PortClash:
                if attempt == START_ATTEMPTS - 1:
                    raise
                if not self.started:
                    self.port = _pick_port()
                else:
                    deadline = time.monotonic() + 10
                    while not _bindable(self.port) and time.monotonic() < deadline:
                        time.sleep(0.1)
                continue
            self.started = True
            return

    def _start_once(self) -> None:
        logged = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [*self.prefix, *self._command()],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.base,
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if self._ready():
                    return
            except Exception:
                pass
            time.sleep(0.1)
        with self.log_path.open("rb") as f:
            f.seek(logged)
            output = f.read().decode(errors="replace")
        self.stop()
        if any(marker in output for marker in _CLASH):
            raise PortClash(f"{self.name}: port {self.port} is taken")
        raise RuntimeError(f"{self.name} did not start:\n{output[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


# --- PostgreSQL ---------------------------------------------------------------------------------


def postgres_bin(program: str) -> str:
    """A PostgreSQL program: Debian keeps them in /usr/lib/postgresql/N/bin, off PATH."""
    versions = sorted(
        glob.glob(f"/usr/lib/postgresql/*/bin/{program}"),
        key=lambda path: int(Path(path).parts[-3]) if Path(path).parts[-3].isdigit() else 0,
    )
    found = versions[-1] if versions else shutil.which(program)
    assert found, f"{program} is missing: scripts/test.sh installs postgresql (apt-get)"
    return found


class PostgresProcess(_ServerProcess):
    name = "postgresql"
    os_user = "postgres"

    def __init__(self) -> None:
        super().__init__()
        self.data = self.base / "data"
        password_file = self.base / "password"
        password_file.write_text(PASSWORD + "\n")
        _give(password_file, self.uid, self.gid)
        self._initialise(
            [
                postgres_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                USER,
                "--auth=scram-sha-256",
                f"--pwfile={password_file}",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ]
        )
        self.start()

    def _command(self) -> list[str]:
        return [
            postgres_bin("postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "fsync=off",
            "-c",
            "synchronous_commit=off",
            "-c",
            "full_page_writes=off",
            "-c",
            "shared_buffers=16MB",
            "-c",
            "max_connections=200",
        ]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _admin(self, *statements: str) -> None:
        self._run(*statements)

    def _data_directory(self) -> str:
        return self._run("SHOW data_directory")

    def _run(self, *statements: str) -> str:
        """Run statements; the first column of the last one's first row ("" if none)."""
        import asyncpg

        async def run() -> str:
            conn = await asyncpg.connect(self.url(), timeout=5)
            value = ""
            try:
                for statement in statements:
                    value = str(await conn.fetchval(statement) or "")
            finally:
                await conn.close()
            return value

        # in a thread of its own: a test may start or stop the server from inside its loop
        with ThreadPoolExecutor(max_workers=1) as thread:
            return thread.submit(asyncio.run, run()).result()

    def stop(self, sig: int = signal.SIGINT) -> None:
        super().stop(sig)  # SIGINT: PostgreSQL's fast shutdown (SIGTERM waits for clients)

    def drop_database(self, url: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")


# --- MariaDB ------------------------------------------------------------------------------------


def mariadb_bin(program: str) -> str:
    found = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/usr/bin/{program}") if os.access(p, os.X_OK)),
        None,
    )
    assert found, f"{program} is missing: scripts/test.sh installs mariadb-server (apt-get)"
    return found


class MariadbProcess(_ServerProcess):
    name = "mariadb"
    os_user = "mysql"

    def __init__(self) -> None:
        super().__init__()
        self.data = self.base / "data"
        self.init_file = self.base / "init.sql"
        self.init_file.write_text(
            f"CREATE USER IF NOT EXISTS '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}';\n"
            f"GRANT ALL PRIVILEGES ON *.* TO '{USER}'@'127.0.0.1';\n"
        )
        _give(self.init_file, self.uid, self.gid)
        self._initialise(
            [
                mariadb_bin("mariadb-install-db"),
                "--no-defaults",
                f"--datadir={self.data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
            ]
        )
        self.start()

    def _command(self) -> list[str]:
        return [
            mariadb_bin("mariadbd"),
            "--no-defaults",
            f"--datadir={self.data}",
            f"--port={self.port}",
            "--bind-address=127.0.0.1",
            f"--socket={self.base / 'mariadbd.sock'}",
            f"--pid-file={self.base / 'mariadbd.pid'}",
            f"--init-file={self.init_file}",
            "--skip-name-resolve",
            "--innodb-buffer-pool-size=16M",
            "--innodb-flush-log-at-trx-commit=0",
            "--skip-innodb-doublewrite",
            "--max-connections=200",
        ]

    def url(self, database: str = "") -> str:
        return f"mysql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def _admin(self, *statements: str) -> None:
        self._run(*statements)

    def _data_directory(self) -> str:
        return self._run("SELECT @@datadir")

    def _run(self, *statements: str) -> str:
        """Run statements; the first column of the last one's first row ("" if none)."""
        import pymysql

        conn = pymysql.connect(
            host="127.0.0.1",
            port=self.port,
            user=USER,
            password=PASSWORD,
            connect_timeout=5,
            read_timeout=5,  # a silent listener on the port must not hang the start
            write_timeout=5,
        )
        value = ""
        try:
            with conn.cursor() as cursor:
                for statement in statements:
                    cursor.execute(statement)
                    row = cursor.fetchone()
                    value = str(row[0]) if row else ""
        finally:
            conn.close()
        return value

    def drop_database(self, url: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]}")
