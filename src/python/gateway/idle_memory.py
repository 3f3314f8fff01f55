"""Give freed memory back to the kernel once the gateway has gone quiet.

While requests come, the allocator keeps what they free for the next ones (`memory_reuse`,
GATEWAY_KEEP_FREED_MB): after a burst of large photos that is hundreds of MB. Once no
classification has been admitted for `idle_seconds`, it is handed back (glibc's malloc_trim, in
the decode pool), once per quiet period, so an idle pod's memory drops back towards its start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import Executor

from gateway.classify import ConcurrencyLimit
from memory_reuse import give_back_freed_memory

IDLE_SECONDS = 10.0


async def give_back_when_idle(
    limit: ConcurrencyLimit,
    pool: Executor,
    idle_seconds: float = IDLE_SECONDS,
    give_back: Callable[[], object] = give_back_freed_memory,
) -> None:
    """Run until cancelled: after each quiet period that follows some work, call `give_back` once."""
    loop = asyncio.get_running_loop()
    seen = limit.admitted
    given_back = True  # nothing to give back before the first request
    while True:
        await asyncio.sleep(idle_seconds)
        if limit.in_flight or limit.admitted != seen:
            seen = limit.admitted
            given_back = False
        elif not given_back:
            await loop.run_in_executor(pool, give_back)
            given_back = True
