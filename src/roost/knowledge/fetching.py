"""SSRF-safe HTTP(S) fetching for web ingestion.

A user-supplied URL must not let the server reach what only the server can reach:
loopback services, the private network, link-local cloud metadata.  So, for every hop
(the first request and each redirect):

1. the URL is parsed once with httpx; only allowed schemes, no embedded credentials;
2. the host is resolved (``getaddrinfo`` in a worker thread, or an injected resolver)
   and *every* address is checked; one bad address refuses the hop, so a name cannot
   mix a public and a private record;
3. the connection goes to the checked IP itself, with the name sent as ``Host`` and as
   TLS SNI (certificates are still verified against the name).  The name is never
   resolved again, which defeats DNS rebinding between check and connect;
4. redirects are followed by hand, at most ``max_redirects``, each re-checked.

The body is streamed and cut off past ``max_bytes`` of decoded content: it is decoded in
bounded pieces (:func:`roost.security.decompression.decoded_body`), so a compression bomb is
stopped at the cap, and a coding Roost did not ask for (only gzip and deflate) is refused.
One deadline covers the whole fetch.  Proxy variables from
the environment are ignored: a proxy would connect to the name on its own terms.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import httpx
import idna

from roost import __version__
from roost.errors import BadGateway, BadRequest, Forbidden, GatewayTimeout, PayloadTooLarge
from roost.security.addresses import IPAddress, embedded_ipv4s
from roost.security.decompression import ACCEPT_ENCODING, DecodingRefused, decoded_body

__all__ = [
    "FetchError",
    "FetchInvalidURL",
    "FetchRefused",
    "FetchTimeout",
    "FetchTooLarge",
    "FetchedDocument",
    "IPAddress",
    "Resolver",
    "address_refusal",
    "check_destination",
    "check_port",
    "fetch_url",
]

#: ``async (host, port) -> addresses``; tests inject one instead of touching DNS.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

DEFAULT_MAX_BYTES: Final = 20 * 1024 * 1024
DEFAULT_TIMEOUT_S: Final = 30.0
_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
# Addresses that serve cloud credentials.  Refused even with allow_private: an operator
# who allows intranet fetching still never wants instance credentials ingested.
_METADATA_ADDRESSES: Final = frozenset(
    {
        ipaddress.ip_address("169.254.169.254"),  # AWS, GCP, Azure, OpenStack, DO...
        ipaddress.ip_address("169.254.170.2"),  # AWS ECS task metadata
        ipaddress.ip_address("100.100.100.200"),  # Alibaba Cloud
        ipaddress.ip_address("fd00:ec2::254"),  # AWS IMDS over IPv6
    }
)
# Trying every A/AAAA record of a big site would stretch the deadline for nothing.
_MAX_CONNECT_ATTEMPTS: Final = 3


class FetchError(BadGateway):
    """The remote side failed: unreachable, HTTP error, too many redirects."""

    status, title, type_slug = 502, "Fetch failed", "fetch-failed"


class FetchInvalidURL(FetchError, BadRequest):
    status, title, type_slug = 400, "Invalid URL", "invalid-url"


class FetchRefused(FetchError, Forbidden):
    """The URL points somewhere the server must not go."""

    status, title, type_slug = 403, "Fetch refused", "fetch-refused"


class FetchTooLarge(FetchError, PayloadTooLarge):
    status, title, type_slug = 413, "Fetched document too large", "fetch-too-large"


class FetchTimeout(FetchError, GatewayTimeout):
    status, title, type_slug = 504, "Fetch timed out", "fetch-timeout"


@dataclass(frozen=True, slots=True)
class FetchedDocument:
    url: str  # as asked
    final_url: str  # after redirects, with the host name (not the pinned IP)
    content_type: str | None  # raw header, parameters included (charset matters)
    data: bytes
    status: int = 200  # 200, or 203 (a proxy's transformed copy of the page)

    @property
    def filename(self) -> str | None:
        """Last path segment of the final URL, for extension-based type detection."""
        name = httpx.URL(self.final_url).path.rsplit("/", 1)[-1]  # .path is already decoded
        return name or None


# --------------------------------------------------------------------------- addresses


def address_refusal(ip: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why the server must not connect to ``ip``, or ``None`` if it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(ip.compressed.split("%", 1)[0])
        inners = embedded_ipv4s(ip)
        for inner in inners:
            reason = address_refusal(inner, allow_private=allow_private)
            if reason:
                return f"{reason} (embedded in {ip})"
        if inners:
            return None
    if ip in _METADATA_ADDRESSES:
        return "a cloud metadata endpoint"
    if allow_private:
        return None
    checks: tuple[tuple[bool, str], ...] = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip.is_private, "a private network address"),
        (isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local, "a site-local address"),
        (ip.is_reserved, "a reserved address"),
        # Catches the rest: carrier-grade NAT 100.64/10, benchmarking, documentation...
        (not ip.is_global, "not a public internet address"),
    )
    for failed, reason in checks:
        if failed:
            return reason
    return None


async def _system_resolver(host: str, port: int) -> list[str]:
    # loop.getaddrinfo runs the blocking libc call in the default thread pool.
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


async def _resolve_checked(
    host: str, port: int, resolver: Resolver, *, allow_private: bool
) -> list[IPAddress]:
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        raw = [str(literal)]
    else:
        try:
            raw = list(await resolver(host, port))
        except (OSError, UnicodeError) as exc:
            raise FetchError(f"the host {host!r} could not be resolved ({exc})") from None
    addresses: list[IPAddress] = []
    for text in raw:
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            raise FetchError(f"the host {host!r} resolved to an invalid address") from None
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise FetchError(f"the host {host!r} has no addresses")
    for ip in addresses:
        reason = address_refusal(ip, allow_private=allow_private)
        if reason is not None:
            shown = host if literal is not None else f"{host} (resolves to {ip})"
            raise FetchRefused(
                f"fetching {shown} is not allowed: it is {reason}; only public internet "
                "addresses can be ingested"
            )
    return addresses


# --------------------------------------------------------------------------- urls


def url_host(url: str) -> str | None:
    """The host a URL names as the fetch will reach it (:func:`browser_host_form`: an
    allow-list check sees the host the fetch connects to, fullwidth forms mapped), or
    None for one that does not parse (``http://[::1``): the check and fetch that follow
    refuse such a URL with a clear message."""
    try:
        return httpx.URL(browser_host_form(url)).host or None
    except (httpx.InvalidURL, ValueError, TypeError):
        return None


def check_port(url: httpx.URL) -> None:
    """400 for a port outside 1-65535: httpx parses any digits, and the connection
    would fail deep inside its task group rather than as a clear fetch error."""
    if url.port is not None and not 1 <= url.port <= 65535:
        raise FetchInvalidURL(f"{_shown(url)} is not a valid URL: the port {url.port} is "
                              "outside 1-65535")


def browser_host_form(raw: str) -> str:
    """``raw`` with a non-ASCII host mapped as browsers map it (UTS #46: case folded,
    composed, fullwidth letters and dots made plain), so "cafe\u0301.example" typed in
    decomposed form or "example.com" in fullwidth letters reach the host a browser would; httpx's strict
    IDNA 2008 check refuses those forms.  A host UTS #46 cannot map is left for the URL
    parser to refuse."""
    scheme, sep, rest = raw.partition("://")
    if not sep:
        return raw
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority = rest[:end]
    if authority.isascii():
        return raw
    userinfo, at, host_port = authority.rpartition("@")
    host, colon, port = host_port, "", ""
    head, maybe_colon, tail = host_port.rpartition(":")
    if maybe_colon and tail.isdigit():
        host, colon, port = head, ":", tail
    try:
        mapped = idna.encode(host, uts46=True).decode("ascii")
    except (idna.IDNAError, UnicodeError, ValueError):
        return raw
    return f"{scheme}://{userinfo}{at}{mapped}{colon}{port}{rest[end:]}"


def _check_url(raw: str | httpx.URL, allowed_schemes: Sequence[str]) -> httpx.URL:
    try:
        url = raw if isinstance(raw, httpx.URL) else httpx.URL(browser_host_form(raw))
        host = url.host  # decoded on first read: "xn--" raises idna's error (a ValueError)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise FetchInvalidURL(f"{str(raw)[:200]!r} is not a valid URL") from None
    allowed = {s.lower() for s in allowed_schemes}
    if url.scheme not in allowed:
        shown = url.scheme or "no scheme"
        raise FetchRefused(f"URL scheme {shown!r} is not allowed; use one of: {', '.join(sorted(allowed))}")
    if url.scheme not in ("http", "https"):
        raise FetchRefused(f"URL scheme {url.scheme!r} cannot be fetched over HTTP")
    if not host:
        raise FetchInvalidURL(f"{str(raw)[:200]!r} has no host")
    if not _dns_name_fits(url):
        raise FetchInvalidURL(f"{str(raw)[:200]!r} is not a valid URL: a host name's labels "
                              "are at most 63 characters and the name at most 253")
    if url.userinfo:
        # Credentials in URLs end up in logs, and "http://good@evil/" confuses readers.
        raise FetchInvalidURL("URLs with a user name or password are not accepted")
    check_port(url)
    return url


def _dns_name_fits(url: httpx.URL) -> bool:
    """A host name DNS can carry (RFC 1035: labels of 1-63 octets, 253 in all; one trailing
    dot allowed), so an impossible one is the caller's invalid URL, not a failed lookup (the
    resolver's IDNA codec refused it: a 502).  IP literals are not names."""
    name = _host_for_dns(url)
    if ":" in name or (name.isascii() and name.replace(".", "").isdigit()):
        return True
    labels = name[:-1].split(".") if name.endswith(".") else name.split(".")
    return len(name.rstrip(".")) <= 253 and all(1 <= len(label) <= 63 for label in labels)


def _host_for_dns(url: httpx.URL) -> str:
    # raw_host is the ASCII (IDNA) form without IPv6 brackets: what DNS and SNI need.
    return url.raw_host.decode("ascii")


def _shown(url: httpx.URL) -> str:
    text = str(url.copy_with(query=None, fragment=None))
    return text if len(text) <= 200 else text[:199] + "…"


# --------------------------------------------------------------------------- fetching


@dataclass(slots=True)
class _Hop:
    redirect_to: str | None = None
    document: FetchedDocument | None = None


async def _fetch_hop(
    original: str,
    url: httpx.URL,
    addresses: list[IPAddress],
    *,
    max_bytes: int,
    timeout_s: float,
    user_agent: str,
    transport: httpx.AsyncBaseTransport | None,
) -> _Hop:
    host = _host_for_dns(url)
    headers = {
        "Host": url.netloc.decode("ascii"),
        "User-Agent": user_agent,
        "Accept": "text/html,application/xhtml+xml,text/plain,text/markdown,application/pdf,*/*;q=0.5",
        # Only what _read_response decodes itself; the size limit applies after decoding.
        "Accept-Encoding": ACCEPT_ENCODING,
    }
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    last_error: Exception | None = None
    for ip in addresses[:_MAX_CONNECT_ATTEMPTS]:
        pinned = url.copy_with(host=str(ip))
        # A fresh client per hop: a pooled TLS connection verified for one name must
        # never carry a request for another name that happens to share the IP.
        async with httpx.AsyncClient(
            transport=transport,
            trust_env=False,
            follow_redirects=False,
            timeout=httpx.Timeout(timeout_s),
        ) as client:
            request = client.build_request("GET", pinned, headers=headers, extensions=extensions)
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError as exc:
                last_error = exc
                continue  # next address of the same, already checked, name
            except (ValueError, httpx.InvalidURL):
                # httpx builds a redirect's next request even when it does not follow it:
                # a Location it cannot parse (a malformed IDNA host) fails in send.
                raise FetchInvalidURL(
                    f"{_shown(url)} redirected to a URL that is not valid") from None
            try:
                return await _read_response(original, url, response, max_bytes)
            finally:
                await response.aclose()
    detail = f": {str(last_error)[:200] or type(last_error).__name__}" if last_error else ""
    raise FetchError(f"could not connect to {_shown(url)}{detail}")


async def _read_response(original: str, url: httpx.URL, response: httpx.Response, max_bytes: int) -> _Hop:
    status = response.status_code
    if status in _REDIRECT_STATUSES:
        location = response.headers.get("location")
        if not location:
            raise FetchError(f"{_shown(url)} answered HTTP {status} without a Location")
        return _Hop(redirect_to=location)
    if status >= 400:
        raise FetchError(f"{_shown(url)} answered HTTP {status}")
    if status not in (200, 203):  # 203 Non-Authoritative Information: the page, via a proxy
        raise FetchError(f"{_shown(url)} answered HTTP {status}, expected 200")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isascii() and declared.isdigit() \
            and int(declared) > max_bytes:
        raise FetchTooLarge(f"{_shown(url)} is {int(declared)} bytes; the limit is {max_bytes} bytes")
    body = bytearray()
    try:
        async for piece in decoded_body(response):  # decoded in bounded pieces
            body += piece
            if len(body) > max_bytes:
                raise FetchTooLarge(f"{_shown(url)} is larger than the limit of {max_bytes} bytes")
    except DecodingRefused as exc:
        raise FetchError(f"the answer of {_shown(url)} {exc}") from None
    document = FetchedDocument(
        url=original,
        final_url=str(url),
        content_type=response.headers.get("content-type"),
        data=bytes(body),
        status=status,
    )
    return _Hop(document=document)


async def _fetch(
    url: str,
    *,
    allow_private: bool,
    max_bytes: int,
    timeout_s: float,
    allowed_schemes: Sequence[str],
    max_redirects: int,
    resolver: Resolver,
    user_agent: str,
    transport: httpx.AsyncBaseTransport | None,
) -> FetchedDocument:
    current = _check_url(url, allowed_schemes)
    for _ in range(max_redirects + 1):
        port = current.port or (443 if current.scheme == "https" else 80)
        addresses = await _resolve_checked(
            _host_for_dns(current), port, resolver, allow_private=allow_private
        )
        try:
            hop = await _fetch_hop(
                url,
                current,
                addresses,
                max_bytes=max_bytes,
                timeout_s=timeout_s,
                user_agent=user_agent,
                transport=transport,
            )
        except httpx.TimeoutException:
            raise FetchTimeout(f"{_shown(current)} did not answer within {timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"fetching {_shown(current)} failed: {type(exc).__name__}") from None
        if hop.document is not None:
            return hop.document
        assert hop.redirect_to is not None
        try:
            target = current.join(hop.redirect_to)
        except (httpx.InvalidURL, ValueError):
            raise FetchError(f"{_shown(current)} redirected to an invalid URL") from None
        current = _check_url(target.copy_with(fragment=None), allowed_schemes)
    raise FetchError(f"{url[:200]!r} redirected more than {max_redirects} times")


async def fetch_url(
    url: str,
    *,
    allow_private: bool = False,
    max_bytes: int = DEFAULT_MAX_BYTES,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    allowed_schemes: Sequence[str] = ("http", "https"),
    max_redirects: int = 5,
    resolver: Resolver | None = None,
    user_agent: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> FetchedDocument:
    """Fetch ``url`` for ingestion without letting it reach private addresses.

    ``allow_private`` lets an operator ingest from the intranet or loopback (cloud
    metadata addresses stay refused).  ``resolver`` and ``transport`` exist for tests:
    a fake DNS and an in-memory HTTP transport.  Raises :class:`FetchRefused` (403),
    :class:`FetchInvalidURL` (400), :class:`FetchTooLarge` (413),
    :class:`FetchTimeout` (504) or :class:`FetchError` (502).
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")
    try:
        # One deadline for DNS, every hop and the body: a slow-drip server cannot
        # hold an ingestion worker by sending one byte just inside each read timeout.
        async with asyncio.timeout(timeout_s):
            return await _fetch(
                url,
                allow_private=allow_private,
                max_bytes=max_bytes,
                timeout_s=timeout_s,
                allowed_schemes=allowed_schemes,
                max_redirects=max_redirects,
                resolver=resolver or _system_resolver,
                user_agent=user_agent or f"Roost/{__version__} (document ingestion)",
                transport=transport,
            )
    except TimeoutError:
        raise FetchTimeout(f"fetching {url[:200]!r} took longer than {timeout_s:g} s") from None


async def check_destination(
    url: str,
    *,
    allow_private: bool = False,
    allowed_schemes: Sequence[str] = ("http", "https"),
    resolver: Resolver | None = None,
) -> list[IPAddress]:
    """Check that the server may connect to ``url`` (scheme, no credentials, every
    address of the host public unless ``allow_private``), without fetching anything.

    For clients that make their own connections (the MCP client): returns the checked
    addresses; raises :class:`FetchInvalidURL` (400) or :class:`FetchRefused` (403).
    """
    checked = _check_url(url, allowed_schemes)
    port = checked.port or (443 if checked.scheme == "https" else 80)
    return await _resolve_checked(
        _host_for_dns(checked), port, resolver or _system_resolver, allow_private=allow_private
    )
