"""Host-name lookups for image URLs, bounded so that a hung DNS answer costs only the requests that
need it.

The operating system's resolver (getaddrinfo) blocks a thread until the name's servers answer or
it gives up (glibc: `timeout` × `attempts` per nameserver, ten seconds and more), and a blocked
thread cannot be interrupted. Run in asyncio's default pool (shared, a handful of threads), a few
URLs whose DNS never answers held every thread long after their requests had timed out, and a
legitimate fetch by name then waited behind them. Here:

- lookups run in their own pool of `threads` threads, which nothing else uses;
- a request waits at most `timeout` seconds for its lookup, queueing included (504 after that);
  the thread may stay busy, but the request does not wait for it;
- at most `per_domain` lookups run at once for names under one domain, and a lookup keeps its
  place until its thread returns, even after its request gave up. Further lookups for that domain
  wait for a place (within their own timeout) without taking a thread. A domain whose servers
  never answer therefore holds at most `per_domain` threads; the others serve every other name.
- concurrent lookups of the same name share one thread and one answer (a batch of images on one
  host opens several connections at once).

The "domain" is a name's last two labels, or three under a two-letter country code whose second
label is short (`images.example.co.uk` -> `example.co.uk`): close to the registrable domain, where
an attacker's own zone starts, without a public-suffix list.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import socket
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from gateway.errors import ImageHostTimeout

# host, port -> the addresses (text) the name resolves to, blocking (run in the pool's threads).
BlockingLookup = Callable[[str, int], Sequence[str]]


def getaddrinfo_addresses(host: str, port: int) -> list[str]:
    """The operating system's answer for `host` (blocking): its addresses, each once, in order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def domain_of(host: str) -> str:
    """The part of a host name an owner controls below, as far as that can be told without a list."""
    labels = host.lower().rstrip(".").split(".")
    keep = 2
    if len(labels) >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3:
        keep = 3  # example.co.uk, example.com.au
    return ".".join(labels[-keep:])


@dataclass(frozen=True)
class LookupLimits:
    threads: int = 32
    timeout: float = 3.0
    per_domain: int = 2

    def __post_init__(self) -> None:
        if self.threads < 1 or self.per_domain < 1 or self.timeout <= 0:
            raise ValueError(f"unusable lookup limits: {self}")


_Job = tuple[Callable[[], Sequence[str]], "asyncio.Future[Sequence[str]]"]


class _LookupThreads:
    """A fixed set of daemon threads running blocking lookups for one event loop.

    Not a ThreadPoolExecutor: Python joins those threads at exit, so one lookup that never ends
    would hold up the process's shutdown. These are abandoned instead.
    """

    def __init__(self, count: int) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        for index in range(count):
            threading.Thread(target=self._work, name=f"dns-{index}", daemon=True).start()
        self._count = count

    def submit(self, call: Callable[[], Sequence[str]]) -> asyncio.Future[Sequence[str]]:
        future: asyncio.Future[Sequence[str]] = asyncio.get_running_loop().create_future()
        self._jobs.put((call, future))
        return future

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            call, future = job
            if self._closed:
                continue
            loop = future.get_loop()
            try:
                result = call()
            except Exception as e:  # the lookup's own error goes to whoever waits for it
                _settle(loop, future, None, e)
            else:
                _settle(loop, future, result, None)

    def close(self) -> None:
        self._closed = True
        for _ in range(self._count):
            self._jobs.put(None)


def _settle(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Sequence[str]],
    result: Sequence[str] | None,
    error: Exception | None,
) -> None:
    def settle() -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result or [])

    # A closed loop (RuntimeError) has nobody waiting any more.
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(settle)


class _Places:
    """The places one domain holds in the pool, and the lookups waiting for one, first come first."""

    def __init__(self) -> None:
        self.held = 0
        self.waiting: deque[asyncio.Future[None]] = deque()


class BoundedResolver:
    """A `guarded_resolver.Resolver`: `await resolver(host, port)` -> addresses, within the limits.

    Create it in the running event loop's lifespan; `close()` it at shutdown (threads still blocked
    in a lookup are abandoned, not waited for, and never hold up the process's exit).
    """

    def __init__(self, limits: LookupLimits, lookup: BlockingLookup = getaddrinfo_addresses) -> None:
        self._limits = limits
        self._lookup = lookup
        self._threads = _LookupThreads(limits.threads)
        self._domains: dict[str, _Places] = {}
        self._running: dict[tuple[str, int], asyncio.Future[Sequence[str]]] = {}

    @property
    def limits(self) -> LookupLimits:
        return self._limits

    def held(self, domain: str) -> int:
        """Threads lookups for `domain` hold now (those abandoned by their requests included)."""
        places = self._domains.get(domain)
        return places.held if places is not None else 0

    async def __call__(self, host: str, port: int) -> list[str]:
        try:
            async with asyncio.timeout(self._limits.timeout):
                running = self._running.get((host, port))
                if running is None:
                    running = await self._start(host, port)
                # shield: a request that gives up leaves the lookup to finish for the others.
                return list(await asyncio.shield(running))
        except TimeoutError:
            raise ImageHostTimeout(
                f"the image host's name did not resolve within {self._limits.timeout:g} s",
                detail=f"DNS lookup for {host} timed out after {self._limits.timeout:g} s",
            ) from None

    async def _start(self, host: str, port: int) -> asyncio.Future[Sequence[str]]:
        domain = domain_of(host)
        await self._take_place(domain)
        # Another request may have started the same lookup while this one waited for a place.
        running = self._running.get((host, port))
        if running is not None:
            self._give_back(domain)
            return running
        lookup = self._lookup
        work = self._threads.submit(lambda: lookup(host, port))
        self._running[(host, port)] = work

        def finished(done: asyncio.Future[Sequence[str]]) -> None:
            if self._running.get((host, port)) is done:
                del self._running[(host, port)]
            self._give_back(domain)
            if not done.cancelled():
                done.exception()  # retrieved: nobody may be left waiting for this answer

        work.add_done_callback(finished)
        return work

    async def _take_place(self, domain: str) -> None:
        places = self._domains.setdefault(domain, _Places())
        if places.held < self._limits.per_domain and not places.waiting:
            places.held += 1
            return
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        places.waiting.append(turn)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self._give_back(domain)  # handed a place just as this request gave up
            else:
                places.waiting.remove(turn)
                self._forget_if_idle(domain)
            raise

    def _give_back(self, domain: str) -> None:
        places = self._domains[domain]
        while places.waiting:
            turn = places.waiting.popleft()
            if not turn.done():
                turn.set_result(None)  # the place passes to the next lookup waiting
                return
        places.held -= 1
        self._forget_if_idle(domain)

    def _forget_if_idle(self, domain: str) -> None:
        places = self._domains.get(domain)
        if places is not None and places.held == 0 and not places.waiting:
            del self._domains[domain]

    def close(self) -> None:
        self._threads.close()
