"""The test database servers (tests/dbproc.py) survive a taken port: a first start moves to
another port, a restart waits for its own port (the tests hold its URL), and something else
answering on the port is never taken for the server."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests import dbproc
from tests.apps.conftest import database_server


@pytest.fixture
def held_port() -> Iterator[socket.socket]:
    """A loopback port bound (not listening) by this test: binding it fails, connecting to it
    is refused, as with a port an outgoing connection holds."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    yield sock
    sock.close()


def test_a_first_start_on_a_taken_port_moves_to_another(
    held_port: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    taken = held_port.getsockname()[1]
    picks = iter([taken])
    fallback = dbproc._pick_port
    monkeypatch.setattr(dbproc, "_pick_port", lambda: next(picks, None) or fallback())
    server = dbproc.MariadbProcess()
    try:
        assert server.port != taken and server.started
        url = server.create_database()
        assert f":{server.port}/" in url
        server.drop_database(url)
    finally:
        server.destroy()


@pytest.mark.parametrize("kind", ["postgresql", "mariadb"])
def test_a_restart_waits_for_its_own_port(kind: str) -> None:
    server = database_server(kind)
    port = server.port
    server.stop()
    logged = server.log_path.stat().st_size
    holder = socket.socket()  # listening: no other bind succeeds, SO_REUSEADDR or not
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT
    holder.bind(("127.0.0.1", port))
    holder.listen(1)
    refused = threading.Event()
    done = threading.Event()

    def release_once_refused() -> None:
        """Hold the port until the server has logged that it could not bind it."""
        while not done.wait(0.05):
            with server.log_path.open("rb") as f:
                f.seek(logged)
                if any(marker.encode() in f.read() for marker in dbproc._CLASH):
                    refused.set()
                    break
        holder.close()

    releaser = threading.Thread(target=release_once_refused)
    releaser.start()
    try:
        server.start()
    finally:
        done.set()
        releaser.join()
    assert refused.is_set(), "the server never met the taken port"
    assert server.port == port
    url = server.create_database()
    server.drop_database(url)
