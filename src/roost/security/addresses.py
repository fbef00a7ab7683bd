"""IP address helpers shared by every guard on where the server connects (the knowledge
fetcher's SSRF guard, the LLM providers' base URLs): one reading of the IPv6 forms that
tunnel to an IPv4 host, so a refused IPv4 address is refused in every spelling."""

from __future__ import annotations

import ipaddress
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

NAT64: Final = ipaddress.ip_network("64:ff9b::/96")


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address reaches, if it tunnels to one: IPv4-mapped, 6to4,
    Teredo, NAT64 or the deprecated IPv4-compatible ``::a.b.c.d`` ("::" and "::1" are
    IPv6's own)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    if int(ip) >> 32 == 0 and int(ip) > 1:
        return ipaddress.IPv4Address(int(ip))
    return None
