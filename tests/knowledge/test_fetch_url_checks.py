"""The fetcher's URL check: a host that is not valid IDNA (``xn--`` with no punycode)
is an invalid URL (400), on the first URL and on a redirect's target alike.  httpx parses
such a URL and raises idna's error only when the host is first read: that error once
escaped as a 500 from ingestion, ``web_fetch`` and MCP server registration."""

from __future__ import annotations

import httpx
import pytest

from roost.knowledge.fetching import FetchInvalidURL, check_destination, fetch_url

PUBLIC = "http://93.184.216.34/page"  # never contacted: the mock transport answers instead
BAD_IDNA = ("http://xn--/page", "http://xn--a/page")


@pytest.mark.parametrize("url", BAD_IDNA)
async def test_a_malformed_idna_host_is_an_invalid_url(url: str) -> None:
    with pytest.raises(FetchInvalidURL, match="is not a valid URL"):
        await fetch_url(url)
    with pytest.raises(FetchInvalidURL, match="is not a valid URL"):
        await check_destination(url)


@pytest.mark.parametrize("url", BAD_IDNA)
async def test_a_redirect_to_a_malformed_idna_host_is_an_invalid_url(url: str) -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": url})

    with pytest.raises(FetchInvalidURL):
        await fetch_url(PUBLIC, transport=httpx.MockTransport(answer))
