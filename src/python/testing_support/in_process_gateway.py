"""The gateway app in this process, for tests: `create_app(settings)` under uvicorn in a thread.

It binds 127.0.0.1 on a free port; `resolver_from` gives it name lookups the test controls.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

import uvicorn

from gateway import Settings, create_app
from gateway.guarded_resolver import Resolver
from testing_support.ports import free_port


def resolver_from(answers: Mapping[str, list[str]], calls: list[str] | None = None) -> Resolver:
    """A resolver the test controls: name -> addresses; unknown names fail like NXDOMAIN."""

    async def resolve(name: str, port: int) -> list[str]:
        if calls is not None:
            calls.append(name)
        if name not in answers:
            raise OSError(f"[Errno -2] Name or service not known: {name}")
        return list(answers[name])

    return resolve


class RunningGateway:
    """`create_app(settings)` served by uvicorn in a thread on a free loopback port."""

    def __init__(self, settings: Settings, resolver: Resolver | None = None) -> None:
        port = free_port()
        app = create_app(settings, resolver=resolver) if resolver else create_app(settings)
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.url = f"http://127.0.0.1:{port}"
        self._thread = threading.Thread(target=self.server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(30)
