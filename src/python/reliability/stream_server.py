"""An asyncio stream server on its own thread and event loop, for synchronous tests to drive.

The fault proxy and the hostile image host are both raw TCP servers that must keep running while a
test blocks on HTTP calls; this is their shared lifecycle: start and wait for the port, stop by
cancelling and awaiting every connection task before the loop closes (so nothing is left open).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Self


class ThreadedStreamServer:
    """Subclasses implement `_handle(reader, writer)` for one connection."""

    thread_name = "stream-server"

    def __init__(self, host: str, port: int, *, backlog: int = 100) -> None:
        self._bind = (host, port)
        self._backlog = backlog
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError(f"the {self.thread_name} did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self) -> None:
        """Run on the calling thread until interrupted (a `python -m` form)."""
        self._run()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        server = loop.run_until_complete(
            asyncio.start_server(self._connection, self._bind[0], self._bind[1], backlog=self._backlog)
        )
        self.port = int(server.sockets[0].getsockname()[1])
        self._started.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                loop.run_until_complete(asyncio.gather(*self._tasks, return_exceptions=True))
            loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError
