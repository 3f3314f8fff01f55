"""Name resolution for image URLs that hands aiohttp only addresses the SSRF policy allows.

aiohttp opens its sockets to the addresses its resolver returns and keeps the host name for the
Host header and for TLS (SNI and certificate checks). This resolver resolves each name once per new
connection, checks every address, and returns those checked addresses: the socket goes to an
address that passed the check, and a DNS answer that changes between the check and the connect
(rebinding) cannot slip through, because the name is never handed to the OS again.

aiohttp does not ask a resolver about address literals (`http://10.0.0.1/`); the fetcher checks
those itself with `refuse_literal` before any request.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable, Sequence

from aiohttp.abc import AbstractResolver, ResolveResult

from gateway.addresses import AddressPolicy, IPAddress, parse_address
from gateway.errors import ImageHostFailed, UrlNotAllowed

# host, port -> the addresses (text) the host name resolves to.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's resolver (getaddrinfo), without blocking the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def refuse_literal(policy: AddressPolicy, host: str) -> None:
    """Raise UrlNotAllowed if `host` is an address literal the policy refuses."""
    address = parse_address(host)
    if address is not None:
        reason = policy.refusal(address)
        if reason is not None:
            raise UrlNotAllowed(f"the image host {host} is {reason}")


class GuardedResolver(AbstractResolver):
    """aiohttp resolver: resolve, refuse the name if any address is internal, return the rest."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver) -> None:
        self._policy = policy
        self._resolver = resolver

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_UNSPEC) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host,
                host=str(address),
                port=port,
                family=socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in await self.checked(host, port)
        ]

    async def checked(self, host: str, port: int) -> list[IPAddress]:
        try:
            names = list(await self._resolver(host, port))
        except (OSError, UnicodeError) as e:
            raise ImageHostFailed(f"the image host {host} cannot be resolved ({e})") from None
        if not names:
            raise ImageHostFailed(f"the image host {host} has no addresses")
        checked = []
        for name in names:
            address = parse_address(name)
            if address is None:
                raise ImageHostFailed(f"the resolver answered {name!r} for {host}, not an address")
            reason = self._policy.refusal(address)
            if reason is not None:
                # Refuse the name outright if any of its addresses is internal: picking only the
                # public ones would still let a hostile name steer some connections inside.
                # The answer says what was refused, not where the name points: that would map
                # internal names for anyone who asks. The address goes to the log.
                raise UrlNotAllowed(
                    "the image host resolves to a private, loopback or reserved address",
                    detail=f"the image host {host} resolves to {address}, {reason}",
                )
            checked.append(address)
        return checked

    async def close(self) -> None:
        """Nothing to release: the resolver holds no connections of its own."""
