"""Bounds on what one client connection can hold: bytes and time before a request is dispatched,
time between body bytes, idle time, and how many connections are open at all.

uvicorn cannot enforce most of these: its httptools protocol has no limit on header bytes (httptools
concatenates a header value for as long as it grows), no deadline for a request head or between
body bytes, no timer on a connection that never sends anything, and only a 503 *after* a request
head when its `limit_concurrency` is full, by which time the descriptor is spent. So the limits
live in a subclass of that protocol (`protocol_class`, passed as `uvicorn.Config(http=…)`), which
sees every byte before the parser does and owns the per-connection timers, and in `LimitedServer`,
which sizes the connection cap to the process's descriptor limit and keeps asyncio's
`socket.accept() out of system resource` from being logged once per failed accept.

The normal path stays httptools': a request whose head arrives in one read costs a few attribute
updates and a dictionary pop and insert, and arms no timer beyond uvicorn's keep-alive one.

Past a bound the client gets a JSON error where an answer is still possible (408, 431, 400, 503)
and the connection is closed; the log gets one summary line per interval, never one per event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import socket
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.settings import ConnectionLimits

log = logging.getLogger("uvicorn.error")

# Descriptors the process needs besides client connections: the listening socket, epoll, the
# gRPC channel, image-host connections, log files, the decode threads' files.
_OTHER_DESCRIPTORS = 256
# asyncio accepts up to `backlog` connections per wake-up before any of them reaches the cap
# check, so that many descriptors must be free on top of the cap.
_MAX_BACKLOG = 2048
# A refused client gets this long to read its answer while the rest of what it sends is discarded
# (closing with unread bytes makes the kernel send a reset, which can destroy the answer).
_LINGER_SECONDS = 2.0

# Where a connection is, for the timers: what the client owes the gateway next.
_IDLE = 0  # nothing: between requests, or before the first one (idle timeout)
_HEAD = 1  # the rest of a request head (header timeout)
_BODY = 2  # the rest of a request body (body timeout)
_DONE = 3  # nothing: a request is being answered
_REFUSED = 4  # nothing any more: an error was sent, whatever else arrives is discarded


def _answer(status: int, reason: str, code: str, message: str, extra: str = "") -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Refusal(Exception):
    """Raised inside a parser callback to stop parsing; `kind` names the answer to send."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


# What the log calls each refusal (one summary line per interval counts them).
_EVENTS = {
    "header_timeout": "head not received in time (408)",
    "body_timeout": "body stalled (408)",
    "header_bytes": "head too large (431)",
    "header_count": "too many headers (431)",
    "malformed": "malformed request (400)",
}


class ConnectionGuard:
    """State shared by all connections of one server: the cap, the evictable connections, and the
    counts behind the rate-limited log."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.max_connections = limits.max_connections
        self.open = 0
        # Connections with no request being answered (idle, or sending a head), oldest first: at
        # the cap, the oldest of them is closed to make room. A client that sends its request at
        # once is almost never the oldest; one that holds a connection without a request is.
        self.waiting: dict[LimitedHttpToolsProtocol, None] = {}
        self._counts: Counter[str] = Counter()
        self._flush: asyncio.TimerHandle | None = None
        kb = limits.max_header_bytes
        self.answers = {
            "header_timeout": _answer(
                408, "Request Timeout", "request_timeout",
                f"the request head did not arrive within {limits.header_timeout:g} s",
            ),
            "body_timeout": _answer(
                408, "Request Timeout", "request_timeout",
                f"no request body bytes arrived for {limits.body_timeout:g} s",
            ),
            "header_bytes": _answer(
                431, "Request Header Fields Too Large", "headers_too_large",
                f"the request line and headers are over {kb} bytes",
            ),
            "header_count": _answer(
                431, "Request Header Fields Too Large", "headers_too_large",
                f"the request has more than {limits.max_headers} headers",
            ),
            "malformed": _answer(400, "Bad Request", "bad_request", "malformed HTTP request"),
            "connection_cap": _answer(
                503, "Service Unavailable", "too_many_connections",
                "the gateway has too many open connections; try again",
                "retry-after: 1\r\n",
            ),
        }  # fmt: skip

    def protocol_class(self) -> type[LimitedHttpToolsProtocol]:
        """The protocol for `uvicorn.Config(http=…)`, bound to this guard."""
        return type("GuardedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"guard": self})

    def note(self, event: str) -> None:
        """Count a refused or closed connection; logged now if the log was quiet for an interval,
        otherwise in the summary at the end of the current interval."""
        self._counts[event] += 1
        if self._flush is None:
            self._log_counts()

    def _log_counts(self) -> None:
        self._flush = None
        if not self._counts:
            return
        summary = ", ".join(f"{n} {event}" for event, n in sorted(self._counts.items()))
        self._counts.clear()
        log.warning(
            "connection limits: %s (open connections: %d of %d; next summary in %g s at the earliest)",
            summary, self.open, self.max_connections, self.limits.log_interval,
        )  # fmt: skip
        self._flush = asyncio.get_running_loop().call_later(self.limits.log_interval, self._log_counts)

    def loop_exception_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio reports every accept() that fails for want of descriptors, up to `backlog` times
        # per wake-up, each with a traceback: counted here instead.
        if context.get("message") == "socket.accept() out of system resource":
            self.note("accepts failed: out of descriptors")
        else:
            loop.default_exception_handler(context)


# uvicorn's callbacks, called directly from the overrides (cheaper than super() per request).
_on_message_begin = HttpToolsProtocol.on_message_begin
_on_headers_complete = HttpToolsProtocol.on_headers_complete
_on_message_complete = HttpToolsProtocol.on_message_complete
_on_response_complete = HttpToolsProtocol.on_response_complete


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the connection limits of `guard` enforced."""

    guard: ClassVar[ConnectionGuard]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        limits = self.guard.limits
        self.timeout_keep_alive = limits.idle_timeout  # type: ignore[assignment]
        self._phase = _IDLE
        # Copied here: read on every request.
        self._max_header_bytes = limits.max_header_bytes
        self._max_headers = limits.max_headers
        self._head_room = limits.max_header_bytes
        self._heads = 0  # heads parsed on this connection
        self._head_started = 0.0
        self._body_seen = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._write_timer: asyncio.TimerHandle | None = None
        self._counted = False
        self._close_when_body_ends = False
        self._linger_until = 0.0

    # --- connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        guard = self.guard
        if guard.open >= guard.max_connections:
            victim = next(iter(guard.waiting), None)
            if victim is None:
                # Every connection has a request being answered: this one cannot have a turn.
                guard.note("refused at the connection cap (503)")
                self._phase = _REFUSED
                transport.write(guard.answers["connection_cap"])
                transport.close()
                return
            victim._evict()
        guard.open += 1
        self._counted = True
        guard.waiting[self] = None
        # uvicorn arms its keep-alive timer only after a response; a connection that never sends
        # a byte gets the same idle timeout.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._forget()
        super().connection_lost(exc)

    def _forget(self) -> None:
        if self._counted:
            self._counted = False
            self.guard.open -= 1
        self.guard.waiting.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _evict(self) -> None:
        self.guard.note("closed for a newer connection at the cap")
        self._forget()
        self._phase = _REFUSED
        self.transport.close()

    def timeout_keep_alive_handler(self) -> None:
        # A kept-alive connection closed after its requests is routine; one that never sent a
        # request is what a flood of idle connections looks like.
        if self._heads == 0 and not self.transport.is_closing():
            self.guard.note("closed idle before any request")
        super().timeout_keep_alive_handler()

    # --- bytes in ---------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        phase = self._phase
        if phase == _REFUSED:
            return
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        if phase != _BODY:
            if phase == _IDLE:
                self._phase = _HEAD
                self._head_started = self.loop.time()
            room = self._head_room
            if len(data) > room:
                # Only the bytes that may still belong to the head go to the parser; if the head
                # has not ended within them, it is too large. This keeps a huge header from
                # ever being held (httptools would concatenate it in memory).
                heads = self._heads
                if not self._feed(data[:room]):
                    return
                if self._phase == _HEAD and self._heads == heads:
                    self._refuse("header_bytes")
                    return
                # A head ended within them (pipelined requests): the rest is parsed as usual,
                # and the next head's share of this read is not counted (at most one read).
                data = data[room:]
            else:
                self._head_room = room - len(data)
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as e:
            if not self._parse_failed(e):
                return
        phase = self._phase
        if phase == _HEAD:
            if self._timer is None:
                self._timer = self.loop.call_at(
                    self._head_started + self.guard.limits.header_timeout, self._on_timer
                )
        elif phase == _BODY:
            self._body_seen = self.loop.time()
            if self._timer is None:
                self._timer = self.loop.call_later(self.guard.limits.body_timeout, self._on_timer)

    def _feed(self, data: bytes) -> bool:
        """Parse `data`; False if the connection was refused on the way."""
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserUpgrade, httptools.HttpParserError) as e:
            return self._parse_failed(e)
        return True

    def _parse_failed(self, e: Exception) -> bool:
        """Handle what the parser raised; False if the connection was refused for it."""
        if isinstance(e, httptools.HttpParserUpgrade):
            # No WebSocket here (ws="none"): the request is answered as a plain one.
            return True
        refusal = e.__context__
        self._refuse(refusal.kind if isinstance(refusal, _Refusal) else "malformed")
        return False

    def _refuse(self, kind: str) -> None:
        """Answer `guard.answers[kind]`, then close once the client has had a moment to read it.

        The connection stays counted as open while it lingers: its descriptor is not free yet.
        """
        self.guard.note(_EVENTS[kind])
        self.guard.waiting.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._phase = _REFUSED
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # The app's task must not write after this answer: to it the client has gone.
            cycle.disconnected = True
            cycle.message_event.set()
        transport = self.transport
        if transport.is_closing():
            return
        transport.write(self.guard.answers[kind])
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = self.loop.call_later(_LINGER_SECONDS, transport.close)

    # --- parser callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._phase != _HEAD:
            # A pipelined request begins while an earlier one is answered (an idle connection's
            # first byte already made it _HEAD, and it is already among the waiting).
            self._phase = _HEAD
            self._head_started = self.loop.time()
            if self.cycle is None or self.cycle.response_complete:
                self.guard.waiting[self] = None
        _on_message_begin(self)

    def on_headers_complete(self) -> None:
        if len(self.headers) > self._max_headers:
            raise _Refusal("header_count")
        self._phase = _BODY
        self._heads += 1
        self.guard.waiting.pop(self, None)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        _on_headers_complete(self)

    def on_message_complete(self) -> None:
        self._phase = _DONE
        self._head_room = self._max_header_bytes
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._close_when_body_ends:
            # The rest of a body answered early arrived within the linger: the answer went out
            # without `connection: close`, so the client may send its next request here; the
            # connection goes idle like any other (closing it now would race that request).
            self._close_when_body_ends = False
            if self.cycle is None or not self.cycle.keep_alive:
                self.transport.close()
                return
            self._phase = _IDLE
            self.guard.waiting[self] = None
            self.timeout_keep_alive_task = self.loop.call_later(
                self.timeout_keep_alive, self.timeout_keep_alive_handler
            )
            return
        _on_message_complete(self)

    def on_response_complete(self) -> None:
        # With pipelined requests queued, uvicorn starts the next one here, and the parser's
        # phase belongs to that one or a later one, not to the request just answered.
        started_next = bool(self.pipeline)
        _on_response_complete(self)
        if started_next or self.transport.is_closing():
            return
        if self._phase == _BODY:
            # Answered before the client finished its body (an early 413, 429, …): the rest is
            # read and dropped, for one body timeout at most; then the connection is closed.
            self._unset_keepalive_if_required()
            self._close_when_body_ends = True
            self._linger_until = self.loop.time() + self.guard.limits.body_timeout
        elif self._phase == _DONE:
            self._phase = _IDLE
            self.guard.waiting[self] = None
        elif self._phase == _HEAD:
            self.guard.waiting[self] = None

    # --- bytes out --------------------------------------------------------------------------

    def pause_writing(self) -> None:
        # The client is not reading what the gateway sends: the response's task waits for it,
        # holding its connection (which the cap cannot take back) and its request slot.
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.guard.limits.body_timeout, self._on_write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _on_write_stalled(self) -> None:
        self._write_timer = None
        if not self.transport.is_closing():
            self.guard.note("closed: the client stopped reading its answer")
            # The buffer will never drain, so there is nothing left to send: drop it.
            self.transport.abort()

    # --- timers -----------------------------------------------------------------------------

    def _on_timer(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        limits = self.guard.limits
        if self._phase == _HEAD:
            due = self._head_started + limits.header_timeout
            if now >= due:
                self._refuse("header_timeout")
            else:
                self._timer = self.loop.call_at(due, self._on_timer)
        elif self._phase == _BODY:
            if self._close_when_body_ends and now >= self._linger_until:
                self.guard.note("closed: body still coming after the answer")
                self._forget()
                self.transport.close()
                return
            cycle = self.cycle
            if self.flow.read_paused or (cycle is not None and cycle.waiting_for_100_continue):
                # The gateway is not reading (the app has not taken the body yet) or the client
                # waits for "100 Continue": the silence is not the client's.
                self._body_seen = now
            due = self._body_seen + limits.body_timeout
            if now >= due:
                if cycle is not None and cycle.response_started:
                    self.guard.note("closed: body stalled after the answer")
                    self._forget()
                    self.transport.close()
                else:
                    self._refuse("body_timeout")
            else:
                if self._close_when_body_ends:
                    due = min(due, self._linger_until)
                self._timer = self.loop.call_at(due, self._on_timer)


@dataclass(frozen=True)
class DescriptorBudget:
    max_connections: int  # the cap in force: the setting, or lower if descriptors are short
    backlog: int  # listen backlog, also how many connections asyncio accepts per wake-up
    descriptor_limit: int  # RLIMIT_NOFILE after raising the soft limit to the hard one


def descriptor_budget(wanted_connections: int) -> DescriptorBudget:
    """Raise the soft descriptor limit to the hard one, and fit the cap and backlog under it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    limit = soft if soft != resource.RLIM_INFINITY else 1 << 20
    backlog = max(16, min(_MAX_BACKLOG, limit // 8))
    room = max(1, limit - backlog - _OTHER_DESCRIPTORS)
    return DescriptorBudget(min(wanted_connections, room), backlog, limit)


class LimitedServer(uvicorn.Server):
    """uvicorn's server with asyncio's accept-failure reports counted by the guard."""

    def __init__(self, config: uvicorn.Config, guard: ConnectionGuard) -> None:
        super().__init__(config)
        self.guard = guard

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        asyncio.get_running_loop().set_exception_handler(self.guard.loop_exception_handler)
        await super().startup(sockets)


def limited_config(
    app: Any, limits: ConnectionLimits, **options: Any
) -> tuple[uvicorn.Config, ConnectionGuard]:
    """A uvicorn config serving `app` over the guarded httptools protocol, and its guard."""
    guard = ConnectionGuard(limits)
    budget = descriptor_budget(limits.max_connections)
    guard.max_connections = budget.max_connections
    config = uvicorn.Config(
        app,
        http=guard.protocol_class(),
        ws="none",
        backlog=budget.backlog,
        timeout_keep_alive=max(1, round(limits.idle_timeout)),
        **options,
    )
    # After uvicorn.Config, which sets up the log.
    if budget.max_connections < limits.max_connections:
        log.warning(
            "GATEWAY_MAX_CONNECTIONS=%d does not fit the descriptor limit (%d): at most %d connections",
            limits.max_connections, budget.descriptor_limit, budget.max_connections,
        )  # fmt: skip
    return config, guard
