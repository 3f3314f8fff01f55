"""Which IP addresses an image URL may reach: public unicast only, unless explicitly allowed.

The check looks through the IPv6 forms that carry an IPv4 address (IPv4-mapped, IPv4-compatible,
6to4, Teredo, NAT64), so `::ffff:127.0.0.1` or `64:ff9b::a9fe:a9fe` cannot smuggle a loopback or
the cloud metadata address past it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"),)
# RFC 8215 local-use NAT64: the IPv4 address inside is not at a fixed place, so refuse the prefix.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
# 100.64.0.0/10 carrier-grade NAT is neither private nor global to Python; it is internal here.
_SHARED = ipaddress.IPv4Network("100.64.0.0/10")


def parse_address(text: str) -> IPAddress | None:
    """The address in `text` (an IPv6 zone such as `%eth0` dropped), or None if it is a name."""
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None


def blocked_reason(address: IPAddress) -> str | None:
    """Why `address` must not be fetched from, or None if it is public unicast."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            reason = blocked_reason(embedded)
            return f"{reason} (inside an IPv6 address)" if reason else None
        if address in _LOCAL_NAT64:
            return "a local-use NAT64 address"
        if address.is_site_local:
            return "a site-local address"
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        # 169.254.169.254 is the cloud metadata service (AWS, GCP, Azure all answer there).
        return "a link-local address (this includes the cloud metadata service)"
    if address.is_multicast:
        return "a multicast address"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "a carrier-grade NAT address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private:
        return "a private address"
    if not address.is_global:
        return "a reserved address"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        # (server, client): the client address is the one traffic reaches.
        return address.teredo[1]
    if any(address in net for net in _NAT64):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        # Deprecated IPv4-compatible form ::a.b.c.d (:: and ::1 are handled as themselves).
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class AddressPolicy:
    """Public unicast addresses, plus the networks a deployment explicitly allows."""

    def __init__(self, allow: Iterable[IPNetwork] = ()) -> None:
        self._allow = tuple(allow)

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` is refused, or None if it may be fetched from."""
        if any(address.version == net.version and address in net for net in self._allow):
            return None
        return blocked_reason(address)
