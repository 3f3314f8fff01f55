from __future__ import annotations

import ipaddress

import pytest

from gateway.addresses import AddressPolicy, blocked_reason, parse_address

BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("0.0.0.0", "unspecified"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("169.254.169.254", "metadata"),
    ("169.254.0.1", "link-local"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("192.0.2.1", "private"),  # documentation range (Python counts it private)
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fec0::1", "site-local"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
    ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:10.0.0.1", "private"),
    ("::127.0.0.1", "loopback"),  # IPv4-compatible (deprecated)
    ("2002:7f00:1::1", "loopback"),  # 6to4 around 127.0.0.1
    ("2002:a9fe:a9fe::1", "metadata"),  # 6to4 around 169.254.169.254
    ("64:ff9b::7f00:1", "loopback"),  # NAT64 around 127.0.0.1
    ("64:ff9b::a9fe:a9fe", "metadata"),
    ("64:ff9b:1::1", "NAT64"),  # local-use NAT64
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),  # Teredo, client 127.0.0.1
    ("2001:db8::1", "private"),  # documentation
]

ALLOWED = [
    "93.184.215.14",
    "8.8.8.8",
    "1.1.1.1",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize(("text", "words"), BLOCKED)
def test_internal_addresses_are_refused_with_a_reason(text: str, words: str) -> None:
    address = parse_address(text)
    assert address is not None
    reason = blocked_reason(address)
    assert reason is not None
    assert words.lower() in reason.lower()


@pytest.mark.parametrize("text", ALLOWED)
def test_public_addresses_pass(text: str) -> None:
    address = parse_address(text)
    assert address is not None
    assert blocked_reason(address) is None


def test_zone_ids_are_ignored_when_parsing() -> None:
    assert parse_address("fe80::1%eth0") == ipaddress.IPv6Address("fe80::1")
    assert parse_address("images.example") is None


def test_the_allow_list_opens_only_the_networks_it_names() -> None:
    policy = AddressPolicy([ipaddress.ip_network("127.0.0.0/8")])
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("10.0.0.1")) is not None
    assert policy.refusal(ipaddress.ip_address("169.254.169.254")) is not None
    # An IPv4 network does not open IPv6 forms by accident (::1 stays refused).
    assert policy.refusal(ipaddress.ip_address("::1")) is not None
