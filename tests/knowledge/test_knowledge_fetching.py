"""SSRF-safe fetching.  Real traffic goes only to the loopback server; "public" hosts are
answered by an injected resolver and an in-memory httpx transport, never the network."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

import httpx
import pytest

from roost.knowledge.fetching import (
    FetchError,
    FetchInvalidURL,
    FetchRefused,
    FetchTimeout,
    FetchTooLarge,
    address_refusal,
    fetch_url,
)
from roost.knowledge.parsing import parse_document
from tests.knowledge.helpers import HTML_PAGE, LoopbackServer

PUBLIC_IP = "93.184.216.34"  # never contacted: the mock transport answers instead

# --------------------------------------------------------------------------- address policy


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.1.1",
        "0.0.0.0",  # noqa: S104 - an address under test, not a bind
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "100.64.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.1.2.3",
        "::ffff:169.254.169.254",
        "2002:7f00:1::1",  # 6to4 wrapping 127.0.0.1
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::a00:1",  # local-use NAT64 (RFC 8215) of 10.0.0.1, a /96 prefix
        "64:ff9b:1:a00:0:100::",  # the same, a /48 prefix (RFC 6052's layout)
        "::ffff:0:a00:1",  # IPv4-translated (SIIT) 10.0.0.1
        "fd00:ec2::254",
    ],
)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_allow_private_still_refuses_cloud_metadata() -> None:
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allow_private=True) is None
    assert address_refusal(ipaddress.ip_address("10.0.0.1"), allow_private=True) is None
    for metadata in ("169.254.169.254", "::ffff:169.254.169.254", "fd00:ec2::254"):
        reason = address_refusal(ipaddress.ip_address(metadata), allow_private=True)
        assert reason is not None and "metadata" in reason


# --------------------------------------------------------------------------- loopback server


async def test_fetch_loopback_with_allow_private(loopback: LoopbackServer) -> None:
    url = loopback.url("/doc.html")
    doc = await fetch_url(url, allow_private=True, max_bytes=10_000, timeout_s=5)
    assert doc.url == url and doc.final_url == url
    assert doc.content_type == "text/html; charset=utf-8"
    assert doc.data == HTML_PAGE
    assert doc.filename == "doc.html"
    parsed = parse_document(doc.data, filename=doc.filename, mime=doc.content_type)
    assert parsed.title == "Loopback page" and "Menu" not in parsed.text


async def test_pinned_connection_sends_the_original_host_header(loopback: LoopbackServer) -> None:
    doc = await fetch_url(loopback.url("/host"), allow_private=True)
    assert doc.data.decode() == f"127.0.0.1:{loopback.port}"


async def test_name_resolved_by_injected_resolver_is_pinned_on_the_wire(
    loopback: LoopbackServer,
) -> None:
    dns = FakeDNS({"docs.internal.test": [["127.0.0.1"]]})
    url = f"http://docs.internal.test:{loopback.port}/host"
    doc = await fetch_url(url, allow_private=True, resolver=dns)
    # The TCP connection went to 127.0.0.1, the request still names the host.
    assert doc.data.decode() == f"docs.internal.test:{loopback.port}"
    assert doc.final_url == url


async def test_loopback_refused_without_allow_private(loopback: LoopbackServer) -> None:
    with pytest.raises(FetchRefused, match="loopback") as info:
        await fetch_url(loopback.url("/doc.html"))
    assert info.value.status == 403
    assert loopback.hits == {}, "nothing was sent"


async def test_localhost_name_is_resolved_and_refused(loopback: LoopbackServer) -> None:
    with pytest.raises(FetchRefused, match=r"localhost \(resolves to .*\).*loopback"):
        await fetch_url(f"http://localhost:{loopback.port}/doc.html")
    assert loopback.hits == {}


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("file:///etc/passwd", FetchRefused),
        ("ftp://example.com/file", FetchRefused),
        ("gopher://127.0.0.1:25/", FetchRefused),
        ("example.com/no-scheme", FetchRefused),
        ("http://user:pass@127.0.0.1/", FetchInvalidURL),
        ("http:///no-host", FetchInvalidURL),
        ("http://[::1/", FetchInvalidURL),
    ],
)
async def test_bad_urls_are_refused(url: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        await fetch_url(url, allow_private=True)


async def test_allowed_schemes_can_be_narrowed(loopback: LoopbackServer) -> None:
    with pytest.raises(FetchRefused, match="'http' is not allowed"):
        await fetch_url(loopback.url("/doc.html"), allow_private=True, allowed_schemes=("https",))


async def test_too_large_with_content_length(loopback: LoopbackServer) -> None:
    with pytest.raises(FetchTooLarge, match="5000 bytes") as info:
        await fetch_url(loopback.url("/big"), allow_private=True, max_bytes=1000)
    assert info.value.status == 413


async def test_too_large_when_streamed_without_length(loopback: LoopbackServer) -> None:
    with pytest.raises(FetchTooLarge, match="larger than the limit of 2500"):
        await fetch_url(loopback.url("/big-chunked"), allow_private=True, max_bytes=2500)
    doc = await fetch_url(loopback.url("/big-chunked"), allow_private=True, max_bytes=5000)
    assert len(doc.data) == 5000


async def test_gzip_bomb_is_cut_off_after_decoding(loopback: LoopbackServer) -> None:
    with pytest.raises(FetchTooLarge):
        await fetch_url(loopback.url("/gzip-bomb"), allow_private=True, max_bytes=100_000)


async def test_slow_server_times_out(loopback: LoopbackServer) -> None:
    with pytest.raises(FetchTimeout) as info:
        await fetch_url(loopback.url("/slow"), allow_private=True, timeout_s=0.3)
    assert info.value.status == 504


async def test_slow_drip_body_hits_the_overall_deadline(loopback: LoopbackServer) -> None:
    # Each piece arrives well within a read timeout; only the overall deadline stops it.
    with pytest.raises(FetchTimeout):
        await fetch_url(loopback.url("/drip"), allow_private=True, timeout_s=0.5)


async def test_redirects_are_followed_and_rechecked(loopback: LoopbackServer) -> None:
    start = loopback.url("/redirect?to=/doc.html")
    doc = await fetch_url(start, allow_private=True)
    assert doc.url == start
    assert doc.final_url == loopback.url("/doc.html")
    assert doc.data == HTML_PAGE


async def test_redirect_loop_stops(loopback: LoopbackServer) -> None:
    with pytest.raises(FetchError, match="redirected more than 5 times"):
        await fetch_url(loopback.url("/loop"), allow_private=True)
    assert loopback.hits["/loop"] == 6
    with pytest.raises(FetchError, match="more than 1 times"):
        await fetch_url(loopback.url("/loop"), allow_private=True, max_redirects=1)


async def test_http_errors_are_reported(loopback: LoopbackServer) -> None:
    with pytest.raises(FetchError, match="HTTP 404") as info:
        await fetch_url(loopback.url("/missing"), allow_private=True)
    assert info.value.status == 502


async def test_connection_refused_is_a_fetch_error() -> None:
    with pytest.raises(FetchError, match="could not connect"):
        await fetch_url("http://127.0.0.1:9/", allow_private=True, timeout_s=5)


# --------------------------------------------------------------------------- fake public hosts


class FakeDNS:
    def __init__(self, answers: dict[str, list[list[str]]]) -> None:
        self.answers = answers  # host -> successive answers (the last one repeats)
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.calls.append(host)
        answers = self.answers[host]
        return answers.pop(0) if len(answers) > 1 else answers[0]


class RecordingTransport(httpx.AsyncBaseTransport):
    """Answers in memory; records what would have gone on the wire."""

    def __init__(self, responses: dict[str, httpx.Response]) -> None:
        self.responses = responses  # keyed by the Host header
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.responses[request.headers["host"]]


async def test_redirect_from_public_host_to_loopback_is_refused() -> None:
    dns = FakeDNS({"public.test": [[PUBLIC_IP]], "internal.test": [["127.0.0.1"]]})
    transport = RecordingTransport(
        {"public.test": httpx.Response(302, headers={"Location": "http://internal.test/admin"})}
    )
    with pytest.raises(FetchRefused, match=r"internal.test \(resolves to 127.0.0.1\)"):
        await fetch_url("http://public.test/start", resolver=dns, transport=transport)
    assert dns.calls == ["public.test", "internal.test"]
    assert len(transport.requests) == 1, "the internal host was never contacted"


@pytest.mark.parametrize(
    "location",
    [
        "http://127.0.0.1:8080/",
        "http://[::1]/",
        "http://[::ffff:7f00:1]/",
        "http://169.254.169.254/latest/meta-data/",
        "file:///etc/passwd",
    ],
)
async def test_redirect_to_internal_literals_is_refused(location: str) -> None:
    transport = RecordingTransport({"public.test": httpx.Response(301, headers={"Location": location})})
    dns = FakeDNS({"public.test": [[PUBLIC_IP]]})
    with pytest.raises(FetchRefused):
        await fetch_url("http://public.test/", resolver=dns, transport=transport)
    assert len(transport.requests) == 1


async def test_connection_is_pinned_to_the_checked_address() -> None:
    # DNS rebinding: the name answers public first and loopback afterwards.  The fetch
    # must resolve once and connect to the address it checked.
    dns = FakeDNS({"rebind.test": [[PUBLIC_IP], ["127.0.0.1"]]})
    transport = RecordingTransport(
        {"rebind.test": httpx.Response(200, content=b"ok", headers={"Content-Type": "text/plain"})}
    )
    doc = await fetch_url("http://rebind.test/page", resolver=dns, transport=transport)
    assert doc.data == b"ok"
    assert doc.final_url == "http://rebind.test/page"
    assert dns.calls == ["rebind.test"]
    (request,) = transport.requests
    assert request.url.host == PUBLIC_IP
    assert request.headers["host"] == "rebind.test"


async def test_https_pins_ip_but_keeps_sni_and_host() -> None:
    dns = FakeDNS({"secure.test": [[PUBLIC_IP]]})
    transport = RecordingTransport({"secure.test:8443": httpx.Response(200, content=b"tls")})
    await fetch_url("https://secure.test:8443/x", resolver=dns, transport=transport)
    (request,) = transport.requests
    assert request.url.scheme == "https" and request.url.host == PUBLIC_IP
    assert request.url.port == 8443
    # Certificates are verified against the SNI name, not the IP.
    assert request.extensions["sni_hostname"] == "secure.test"


async def test_one_private_record_refuses_the_whole_name() -> None:
    dns = FakeDNS({"mixed.test": [[PUBLIC_IP, "10.0.0.7"]]})
    transport = RecordingTransport({})
    with pytest.raises(FetchRefused, match=r"10\.0\.0\.7"):
        await fetch_url("http://mixed.test/", resolver=dns, transport=transport)
    assert transport.requests == []


async def test_metadata_refused_even_with_allow_private() -> None:
    dns = FakeDNS({"metadata.google.internal": [["169.254.169.254"]]})
    with pytest.raises(FetchRefused, match="metadata"):
        await fetch_url(
            "http://metadata.google.internal/computeMetadata/v1/",
            allow_private=True,
            resolver=dns,
            transport=RecordingTransport({}),
        )


async def test_unresolvable_host_is_a_fetch_error() -> None:
    async def failing(host: str, port: int) -> Sequence[str]:
        raise OSError("Name or service not known")

    with pytest.raises(FetchError, match="could not be resolved"):
        await fetch_url("http://nowhere.test/", resolver=failing)
