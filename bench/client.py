"""A minimal Pusher client connection on top of `bench.wsclient`.

One `PusherClient` is one connection: `connect()` waits for `pusher:connection_established`,
`subscribe()` waits for `pusher_internal:subscription_succeeded`. Incoming messages are
handled synchronously as they are read: `pusher:ping` is answered with `pusher:pong`
(WebSocket ping frames are answered by the transport), subscription replies resolve their
waiters, and every other frame goes, with the time it was received (by the kernel or read,
by `latency_clock`), to `on_frame`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from bench import protocol, rxclock
from bench.clock import now_ns
from bench.protocol import Frame
from bench.wsclient import Gate, WSCore, open_ws

FrameHandler = Callable[["PusherClient", Frame, int], None]
CloseHandler = Callable[["PusherClient"], None]


class PusherError(Exception):
    """The server refused something; `code` is the Pusher error code when it gave one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class PusherClient:
    """One Pusher connection."""

    def __init__(
        self,
        url: str,
        on_frame: FrameHandler | None = None,
        on_close: CloseHandler | None = None,
        gate: Gate | None = None,
        source: str | None = None,
        latency_clock: str = rxclock.READ,
    ) -> None:
        self.url = url
        self.latency_clock = latency_clock
        """What the time handed to `on_frame` is: `rxclock.KERNEL` or `rxclock.READ`."""
        self.source = source
        """Local address the connection leaves from (None: the kernel's choice)."""
        self.gate = gate
        self.on_frame = on_frame
        self.on_close = on_close
        self.socket_id: str | None = None
        self.ws: WSCore | None = None
        self.closed = asyncio.Event()
        self.tag: Any = None
        """Free slot for the scenario (e.g. the channel this client listens on)."""
        self.counted = False
        """Set by the worker once the client counts as a live connection."""
        self.handler_errors = 0
        self._established: asyncio.Future[str] | None = None
        self._pending: dict[str, asyncio.Future[Frame]] = {}

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code if self.ws is not None else None

    async def connect(self, timeout: float) -> str:
        """Open the connection and wait for `connection_established`; returns the socket id."""
        self._established = asyncio.get_running_loop().create_future()
        self.ws = await open_ws(
            self.url, self._on_message, timeout, self.gate, self.source, self.latency_clock
        )
        self.ws.on_lost = self._mark_closed
        if self.ws.lost.done():
            self._mark_closed()
        try:
            return await asyncio.wait_for(asyncio.shield(self._established), timeout)
        except BaseException:
            self.abort()
            raise

    async def subscribe(
        self,
        channel: str,
        auth: str | None = None,
        channel_data: str | None = None,
        timeout: float = 10.0,
    ) -> Frame:
        """Subscribe and wait for `subscription_succeeded`; raises `PusherError` if refused."""
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._pending[channel] = future
        try:
            await self.send(protocol.subscribe(channel, auth, channel_data))
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(channel, None)

    async def unsubscribe(self, channel: str) -> None:
        await self.send(protocol.unsubscribe(channel))

    async def send(self, text: str) -> None:
        if self.ws is None:
            raise ConnectionError("not connected")
        await self.ws.send(text)

    @property
    def is_open(self) -> bool:
        return self.ws is not None and self.ws.is_open and not self.closed.is_set()

    async def close(self, timeout: float = 2.0) -> None:
        """Close politely, bounded by `timeout`, then drop the connection."""
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close(timeout)
        self.abort()

    def mute(self) -> None:
        """Stop looking at incoming messages (they are read and dropped unparsed)."""
        self.on_frame = None
        if self.ws is not None:
            self.ws.on_message = _ignore

    def start_close(self) -> None:
        """Send a close frame; `closed` is set once the server has closed too."""
        if self.ws is not None:
            self.ws.start_close()

    def abort(self) -> None:
        """Drop the connection at once."""
        if self.ws is not None:
            self.ws.abort()
        self._mark_closed()

    def _mark_closed(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        error = ConnectionError(f"connection closed (code {self.close_code})")
        if self._established is not None and not self._established.done():
            self._established.set_exception(error)
            self._established.exception()  # retrieved: nobody may be waiting any more
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        if self.on_close is not None:
            self.on_close(self)

    def _on_message(self, payload: bytes, now: int) -> None:
        try:
            frame = protocol.parse_frame(payload)
        except protocol.ProtocolError:
            return
        event = frame.event
        established = self._established
        if established is not None and not established.done():
            if event == "pusher:error":
                code = protocol.error_code(frame)
                established.set_exception(PusherError(protocol.error_message(frame), code))
            else:
                try:
                    self.socket_id, _ = protocol.connection_established(frame)
                    established.set_result(self.socket_id)
                except protocol.ProtocolError as exc:
                    established.set_exception(exc)
            return
        if event == "pusher:ping":
            if self.ws is not None and self.ws.is_open:
                self.ws.send_nowait(protocol.pong())
            return
        channel = frame.channel
        if channel is not None and channel in self._pending:
            if event == "pusher_internal:subscription_succeeded":
                _resolve(self._pending[channel], frame)
                return
            if event == "pusher:subscription_error":
                _fail(self._pending[channel], frame)
                return
        if self.on_frame is not None:
            try:
                self.on_frame(self, frame, now)
            except Exception:
                self.handler_errors += 1


def _ignore(_payload: bytes, _now: int) -> None:
    return None


def _resolve(future: asyncio.Future[Frame], frame: Frame) -> None:
    if not future.done():
        future.set_result(frame)


def _fail(future: asyncio.Future[Frame], frame: Frame) -> None:
    if not future.done():
        future.set_exception(PusherError(protocol.error_message(frame)))


async def run_bounded(
    jobs: Iterable[Callable[[], Awaitable[Any]]],
    concurrency: int,
    deadline_ns: int,
    on_error: Callable[[BaseException], None],
    rate: float = 0.0,
) -> int:
    """Run `jobs` at most `concurrency` at a time (and at most `rate` starts per second when
    `rate` > 0), starting none after `deadline_ns` and cancelling what still runs then.

    Returns how many jobs finished without raising; `on_error` sees every failure, and a
    `TimeoutError` for each job cut off or never started by the deadline.
    """
    queue = list(jobs)
    total = len(queue)
    ok = failed = 0
    next_index = 0
    start = now_ns()

    def fail(exc: BaseException) -> None:
        nonlocal failed
        failed += 1
        on_error(exc)

    async def lane() -> None:
        nonlocal ok, next_index
        while next_index < total:
            index = next_index
            next_index += 1
            if rate > 0:
                wait = (start + int(index * 1e9 / rate) - now_ns()) / 1e9
                if wait > 0:
                    await asyncio.sleep(wait)
            if now_ns() >= deadline_ns:
                fail(TimeoutError("not started before the deadline"))
                continue
            try:
                await queue[index]()
                ok += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                fail(exc)

    if total == 0:
        return 0
    lanes = [asyncio.create_task(lane()) for _ in range(max(1, min(concurrency, total)))]
    remaining = max(0.0, (deadline_ns - now_ns()) / 1e9)
    _done, pending = await asyncio.wait(lanes, timeout=remaining)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    for _ in range(total - ok - failed):
        on_error(TimeoutError("cut off by the deadline"))
    return ok
