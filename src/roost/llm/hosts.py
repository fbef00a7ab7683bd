"""Where a provider's ``base_url`` may point.

Self-hosted models live on loopback and private addresses, so those stay allowed; what is
refused is a link-local address (``169.254.0.0/16``, ``fe80::/10``), the home of the
cloud metadata services that hand out instance credentials, in any spelling (an
IPv4-mapped, 6to4, Teredo, NAT64 or IPv4-compatible IPv6 address tunnels to the IPv4
one), and the other metadata addresses clouds use.  Only the URL's literal host is
checked: a host name is the operator's to choose (docs/chat.md, "Providers").
"""

from __future__ import annotations

import ipaddress
from typing import Final

from roost.security.addresses import IPAddress, embedded_ipv4s

_METADATA: Final = frozenset({
    ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
    ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
})


def address_refusal(ip: IPAddress) -> str | None:
    """Why a provider must not be reached at ``ip``, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
        inners = embedded_ipv4s(ip)
        for inner in inners:
            reason = address_refusal(inner)
            if reason:
                return f"{reason} (embedded in {ip})"
        if inners:
            return None
    if ip.is_link_local:
        return "a link-local address (where cloud metadata services live)"
    if ip in _METADATA:
        return "a cloud metadata address"
    return None


def host_refusal(host: str | None) -> str | None:
    """Why a URL whose host is ``host`` (as parsed: no brackets) must not be used as a
    provider's base URL, or None.  Host names are not resolved."""
    if not host:
        return None
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None
    return address_refusal(ip)
