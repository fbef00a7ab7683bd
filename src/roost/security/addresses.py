"""IP address helpers shared by every guard on where the server connects (the knowledge
fetcher's SSRF guard, the LLM providers' base URLs): one reading of the IPv6 forms that
tunnel to an IPv4 host, so a refused IPv4 address is refused in every spelling."""

from __future__ import annotations

import ipaddress
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
# RFC 8215's local-use NAT64 prefix: an operator picks a prefix length inside it, and RFC
# 6052 places the IPv4 address differently for each (u-octet skipped).
LOCAL_NAT64: Final = ipaddress.ip_network("64:ff9b:1::/48")
# SIIT's "IPv4-translated" addresses (RFC 2765, RFC 6145): ::ffff:0:a.b.c.d.
IPV4_TRANSLATED: Final = ipaddress.ip_network("::ffff:0:0:0/96")


def _bits(value: int, start: int, length: int) -> int:
    """``length`` bits of a 128-bit address from bit ``start`` (0: the leftmost)."""
    return (value >> (128 - start - length)) & ((1 << length) - 1)


def embedded_ipv4s(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """The IPv4 addresses an IPv6 address may reach, if it tunnels to one: IPv4-mapped,
    IPv4-translated, 6to4, Teredo, NAT64 (the well-known prefix; the local-use one in each
    RFC 6052 layout it may use: every reading counts) or the deprecated IPv4-compatible
    ``::a.b.c.d`` ("::" and "::1" are IPv6's own)."""
    value = int(ip)
    if ip.ipv4_mapped is not None:
        return (ip.ipv4_mapped,)
    if ip in IPV4_TRANSLATED:
        return (ipaddress.IPv4Address(value & 0xFFFFFFFF),)
    if ip.sixtofour is not None:
        return (ip.sixtofour,)
    if ip.teredo is not None:
        return (ip.teredo[1],)
    if ip in NAT64:
        return (ipaddress.IPv4Address(value & 0xFFFFFFFF),)
    if ip in LOCAL_NAT64:
        readings = ((_bits(value, 48, 16) << 16) | _bits(value, 72, 16),  # a /48 prefix
                    (_bits(value, 56, 8) << 24) | _bits(value, 72, 24),  # /56
                    _bits(value, 72, 32),  # /64
                    value & 0xFFFFFFFF)  # /96
        return tuple(dict.fromkeys(ipaddress.IPv4Address(r) for r in readings))
    if value >> 32 == 0 and value > 1:
        return (ipaddress.IPv4Address(value),)
    return ()
