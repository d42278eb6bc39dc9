"""The listening socket and the accept loop that obeys `capacity.Admission`.

`pyserver --workers N` creates one listening socket in the supervisor and passes it to every
worker (the pre-fork model): its descriptor number is in `PYSERVER_LISTEN_FD`, and the
capacity board's in `PYSERVER_CAPACITY_BOARD`. All workers wait on the same accept queue, so
a worker that is full simply stops accepting and the others take the connections. With
SO_REUSEPORT the kernel would instead hash each connection to one worker's own queue,
whether that worker has a descriptor left or not.

Invariants:
- `Acceptor` accepts at most `Admission.budget()` connections per wake-up (and at most
  `ACCEPT_BATCH`, so workers sharing the queue take turns); at 0 it stops watching the socket
  until a connection closes (`connection_closed`) or, while others may fill up, the next
  re-check.
- An accept error for lack of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM) stops
  accepting for a back-off that doubles up to `MAX_BACKOFF`: it never spins, and it is logged
  once per back-off series.
- Accepted connections become asyncio transports through `loop.connect_accepted_socket`, so
  uvloop and the default loop behave alike.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import ssl
from collections.abc import Callable

from pyserver.server.capacity import Admission, Board

log = logging.getLogger("pyserver.listener")

LISTEN_FD_ENV = "PYSERVER_LISTEN_FD"
BOARD_FD_ENV = "PYSERVER_CAPACITY_BOARD"
BACKLOG = 4096
"""Listen backlog asked for; the kernel caps it at net.core.somaxconn."""
ACCEPT_BATCH = 64
RECHECK = 0.5
"""Seconds between re-checks while paused because other workers had room."""
LOG_EVERY = 10.0
MIN_BACKOFF = 0.05
MAX_BACKOFF = 2.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def shared_socket(host: str, port: int) -> socket.socket:
    """A listening socket for the workers to inherit (the supervisor's; no SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
        sock.set_inheritable(True)
    except OSError:
        sock.close()
        raise
    return sock


def bound_socket(host: str, port: int, reuse_port: bool) -> list[socket.socket]:
    """Listening sockets of a process that listens on its own (one per address of `host`)."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address[0]) in seen:
                continue
            seen.add((family, address[0]))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            # Every address on the same port (the first one's, when asked for port 0).
            sock.bind((address[0], port, *address[2:]))
            sock.listen(BACKLOG)
            sock.setblocking(False)
            port = sock.getsockname()[1]
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def inherited() -> tuple[socket.socket | None, Board | None]:
    """The listening socket and capacity board passed by `--workers`' supervisor, if any."""
    fd = os.environ.get(LISTEN_FD_ENV)
    if not fd:
        return None, None
    sock = socket.socket(fileno=int(fd))
    sock.setblocking(False)
    board_fd = os.environ.get(BOARD_FD_ENV)
    index = int(os.environ.get("PYSERVER_WORKER_INDEX", "0"))
    board = Board.attach(int(board_fd), index) if board_fd else None
    if board is not None:
        board.set_full(False)
    return sock, board


class Acceptor:
    """Accepts on listening sockets while `admission` allows, for `factory`'s protocols."""

    def __init__(
        self,
        sockets: list[socket.socket],
        factory: Callable[[], asyncio.Protocol],
        admission: Admission,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.sockets = sockets
        self.factory = factory
        self.admission = admission
        self.tls = tls
        self.pending = 0
        """Accepted, not yet `connection_made` (connect_accepted_socket runs as a Task)."""
        self.watching = False
        self.closed = False
        self._backoff = 0.0
        """The last back-off delay (0 once an accept succeeds)."""
        self._backing_off = False
        self._logged_at = -LOG_EVERY
        self._recheck: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self._loop = asyncio.get_running_loop()

    def start(self) -> None:
        self._watch()

    def close(self) -> None:
        """Stop accepting and close the sockets (other workers keep their copies)."""
        self.closed = True
        self._unwatch()
        if self._recheck is not None:
            self._recheck.cancel()
        for sock in self.sockets:
            sock.close()

    # --- hooks from the server -------------------------------------------------------------

    def made(self) -> None:
        """A connection this acceptor accepted reached connection_made."""
        if self.pending:
            self.pending -= 1

    def connection_closed(self) -> None:
        """A connection closed: room again, perhaps."""
        if not self.watching and not self.closed and not self._backing_off:
            self._on_readable(None)

    # --- accepting -------------------------------------------------------------------------

    def _watch(self) -> None:
        if self.watching or self.closed:
            return
        for sock in self.sockets:
            self._loop.add_reader(sock.fileno(), self._on_readable, sock)
        self.watching = True

    def _unwatch(self) -> None:
        if not self.watching:
            return
        for sock in self.sockets:
            self._loop.remove_reader(sock.fileno())
        self.watching = False

    def _pause(self) -> None:
        was = self.watching
        self._unwatch()
        if was and self._may_log():
            log.info(
                "%d connections open, at this process's capacity of %d: %s",
                self.admission.open + self.pending,
                self.admission.capacity,
                "accepting stops while other workers have room"
                if self.admission.others_have_room()
                else "extra connections are told 4100 (over capacity)",
            )
        if self._recheck is None and self.admission.board is not None:
            self._recheck = self._loop.call_later(RECHECK, self._rechecked)

    def _rechecked(self) -> None:
        self._recheck = None
        if not self.watching and not self.closed and not self._backing_off:
            self._on_readable(None)

    def _on_readable(self, ready: socket.socket | None) -> None:
        budget = min(self.admission.budget(self.pending), ACCEPT_BATCH)
        if budget <= 0:
            self._pause()
            return
        if not self.watching:
            if self._may_log():
                log.info("below capacity again (%d open): accepting", self.admission.open)
            self._watch()
            if ready is None:
                return  # the loop calls back when a connection waits
        assert ready is not None
        for _ in range(budget):
            try:
                conn, _address = ready.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                if exc.errno in _OUT_OF_RESOURCES:
                    self._back_off(exc)
                    return
                raise
            self._backoff = 0.0
            self._adopt(conn)
        if self.admission.budget(self.pending) <= 0:  # full now: stop being woken for nothing
            self._pause()

    def _adopt(self, conn: socket.socket) -> None:
        conn.setblocking(False)
        if conn.family != socket.AF_UNIX:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pending += 1
        task: asyncio.Task[object] = self._loop.create_task(
            self._loop.connect_accepted_socket(self.factory, conn, ssl=self.tls)
        )
        self._tasks.add(task)
        task.add_done_callback(self._adopted)

    def _adopted(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        # connection_made never ran: the connection is gone, and with it a pending count.
        self.made()
        log.debug("an accepted connection failed before it started: %s", task.exception())

    def _back_off(self, exc: OSError) -> None:
        first = not self._backoff
        self._backoff = min(MAX_BACKOFF, max(MIN_BACKOFF, self._backoff * 2))
        if first:
            log.warning(
                "accept failed (%s) with %d connections open: pausing accepts for %.2f s and "
                "longer while it lasts",
                os.strerror(exc.errno or 0),
                self.admission.open,
                self._backoff,
            )
        self._unwatch()
        self._backing_off = True
        self._loop.call_later(self._backoff, self._retry)

    def _retry(self) -> None:
        self._backing_off = False
        if self.closed:
            return
        self._watch()
        for sock in self.sockets:  # accept now if something waits; else the reader wakes us
            self._on_readable(sock)
            if not self.watching:
                break

    def _may_log(self) -> bool:
        """Pausing and resuming can alternate quickly at capacity: log every LOG_EVERY s."""
        now = self._loop.time()
        if now - self._logged_at < LOG_EVERY:
            return False
        self._logged_at = now
        return True
