"""A TCP proxy on loopback that can make the service behind it slow, without touching the service.

Put between the gateway and the model server, it turns the real model server into a slow one:
with `delay` set, every chunk in either direction is held that long before it is passed on (order
kept), which is what an overloaded or distant TF Serving looks like to a gRPC client. Setting the
delay back to 0 releases the held bytes at once and the service is healthy again. It works on bytes,
so it needs no knowledge of HTTP/2 or gRPC, and the model server runs unmodified.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from reliability.stream_server import ThreadedStreamServer
from testing_support.ports import LOOPBACK


class FaultProxy(ThreadedStreamServer):
    """Listens on 127.0.0.1:`port` (0: any free port) and forwards to `upstream_port`."""

    thread_name = "fault proxy"

    def __init__(self, upstream_port: int, *, port: int = 0) -> None:
        super().__init__(LOOPBACK, port)
        self.upstream_port = upstream_port
        self.delay = 0.0
        self._open = 0

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def open_connections(self) -> int:
        return self._open

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._open += 1
        try:
            try:
                up_r, up_w = await asyncio.open_connection(LOOPBACK, self.upstream_port)
            except OSError:
                return  # nothing listens upstream: the client sees the connection close
            pumps = {
                asyncio.create_task(self._pump(client_r, up_w)),
                asyncio.create_task(self._pump(up_r, client_w)),
            }
            try:
                # One side hanging up ends the pair, as a dying server's connections end for its
                # clients (gRPC does not half-close).
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pump in pumps:
                    pump.cancel()
                await asyncio.gather(*pumps, return_exceptions=True)
                up_w.close()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._open -= 1
            client_w.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction; each chunk leaves `delay` seconds after it arrived, in order.

        The delay is read when a chunk is due, not when it arrives, so changing it applies to the
        bytes already held too.
        """
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def release() -> None:
            while True:
                arrived, data = await queue.get()
                if not data:
                    break
                wait = arrived + self.delay - time.monotonic()
                while wait > 0:
                    await asyncio.sleep(min(wait, 0.05))
                    wait = arrived + self.delay - time.monotonic()
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.write_eof()

        sender = asyncio.create_task(release())
        try:
            while data := await reader.read(65536):
                await queue.put((time.monotonic(), data))
            await queue.put((0.0, b""))
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await sender
