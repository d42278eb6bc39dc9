"""Evidence for how catch-up knows what a dropped client received (docs/history.md, "What
counts as delivered"): a real WebSocket server streams events to a real WebSocket client
through a loopback proxy that goes silent mid-stream (no FIN), as a phone that changed
network does.

Measured on the server's socket while events keep flowing:
- the kernel's unacknowledged count (SIOCOUTQ) stays far below what the client missed,
  because the proxy's kernel acknowledges into its receive buffer data it never forwards;
  frames "acknowledged" by that count include many the client never got, so catch-up from
  there would leave a gap;
- a WebSocket pong to a ping proves the client read every frame written before the ping
  (TCP keeps order), and no pong comes back through the silent proxy.

Run with `-s` to see the numbers.
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass, field

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from tests.tcpproxy import TcpProxy, queued_in, unacknowledged

PAYLOAD = 200
WIRE = PAYLOAD + 4  # a server frame of 126..65535 bytes has a 4-byte header, no mask
PING_WIRE = 2 + 4  # websockets pings with 4 random bytes
FRAMES = 1_000
INTERVAL = 0.002
CONFIRM_AT, FREEZE_AT, PROBE_AT = 400, 600, 800


@dataclass
class Run:
    received: int = 0
    written_wire: list[int] = field(default_factory=list)
    """Bytes handed to the transport after each frame (pings included)."""
    confirmed: int | None = None
    """Frames written before the last ping whose pong came back."""
    samples: list[tuple[int, int, int, int]] = field(default_factory=list)
    """(frames written, bytes in the kernel's send queue, SIOCOUTQ, proxy's receive queue)."""
    closed_early: bool = False
    kernel_acked_frames: int = 0
    acked_bytes: int = 0


async def measure(receive_buffer: int) -> Run:
    run = Run()
    done = asyncio.Event()
    proxy: TcpProxy

    async def stream(ws: ServerConnection) -> None:
        sock: socket.socket = ws.transport.get_extra_info("socket")
        written = 0
        pong_tasks = []
        for i in range(FRAMES):
            if i in (CONFIRM_AT, PROBE_AT):
                waiter = await ws.ping()
                written += PING_WIRE
                pong_tasks.append((i, waiter))
            if i == FREEZE_AT:
                proxy.freeze()
            await ws.send(f"{i:08d}".ljust(PAYLOAD, "."))
            written += WIRE
            run.written_wire.append(written)
            if i % 100 == 99:
                in_kernel = written - ws.transport.get_write_buffer_size()
                upstream = proxy.upstream_sockets[0]
                run.samples.append((i + 1, in_kernel, unacknowledged(sock), queued_in(upstream)))
            await asyncio.sleep(INTERVAL)
        for at, waiter in pong_tasks:
            try:
                await asyncio.wait_for(asyncio.shield(waiter), 1.0)
                run.confirmed = at
            except TimeoutError:
                pass  # the ping after the freeze: no pong ever comes
        in_kernel = written - ws.transport.get_write_buffer_size()
        run.acked_bytes = in_kernel - unacknowledged(sock)
        run.kernel_acked_frames = sum(1 for end in run.written_wire if end <= run.acked_bytes)
        run.closed_early = ws.state.name != "OPEN"
        done.set()
        await asyncio.sleep(0.2)
        ws.transport.abort()

    async with serve(stream, "127.0.0.1", 0, ping_interval=None, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        proxy = TcpProxy(port, receive_buffer)
        await proxy.start()
        client = await connect(f"ws://127.0.0.1:{proxy.port}", ping_interval=None, compression=None)

        async def read() -> None:
            try:
                async for _ in client:
                    run.received += 1
            except Exception:
                pass

        reader = asyncio.create_task(read())
        await asyncio.wait_for(done.wait(), 30)
        reader.cancel()
        client.transport.abort()
        await proxy.close()
    return run


@pytest.mark.parametrize("receive_buffer", [0, 8_192])
def test_kernel_acknowledgements_overstate_delivery_and_pongs_do_not(receive_buffer: int) -> None:
    run = asyncio.run(measure(receive_buffer))
    print(f"\nproxy SO_RCVBUF={receive_buffer or 'default'}")
    print("frames written | bytes in kernel | SIOCOUTQ | proxy receive queue")
    for sample in run.samples:
        print(" | ".join(str(v) for v in sample))
    print(
        f"client received {run.received} frames; SIOCOUTQ says {run.kernel_acked_frames} "
        f"acknowledged; last pong confirms {run.confirmed}"
    )
    assert not run.closed_early, "the proxy sent no FIN: the server still sees an open socket"
    assert FREEZE_AT - 5 <= run.received <= FREEZE_AT + 5, "nothing passes the frozen proxy"
    assert run.confirmed == CONFIRM_AT, "the ping before the freeze was answered, not the one after"
    assert run.confirmed <= run.received, "a pong proves receipt of everything before its ping"
    assert run.kernel_acked_frames > run.received + 20, (
        "SIOCOUTQ counts frames as delivered that the client never got"
    )
