"""The fetcher's URL check: a host that is not valid IDNA (``xn--`` with no punycode)
is an invalid URL (400), on the first URL and on a redirect's target alike.  httpx parses
such a URL and raises idna's error only when the host is first read: that error once
escaped as a 500 from ingestion, ``web_fetch`` and MCP server registration.  Likewise a
port outside 1-65535, which httpx parses and then fails on deep in its connection code
(an ExceptionGroup that crashed the ingestion of the source)."""

from __future__ import annotations

import dataclasses

import httpx
import pytest

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.fetching import FetchInvalidURL, check_destination, fetch_url
from tests.knowledge.helpers import LoopbackServer
from tests.knowledge.support import ingest, principal
from tests.support.identity import make_user
from tests.support.sql import fetch

PUBLIC = "http://93.184.216.34/page"  # never contacted: the mock transport answers instead
# The last two: a label over 63 characters, a name over 253 (DNS cannot carry them; the
# resolver's IDNA codec refused them at lookup: a 502 "could not be resolved").
BAD_IDNA = ("http://xn--/page", "http://xn--a/page", f"http://{'a' * 70}.example/page",
            f"http://{'abcdefgh.' * 30}example/page")
BAD_PORTS = ("http://127.0.0.1:70000/doc.html", "http://example.com:99999/doc.html",
             "http://example.com:0/doc.html")
API = "/api/v1/knowledge"


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


@pytest.mark.parametrize("url", BAD_PORTS)
async def test_a_port_out_of_range_is_an_invalid_url(url: str) -> None:
    with pytest.raises(FetchInvalidURL, match="outside 1-65535"):
        await fetch_url(url, allow_private=True)
    with pytest.raises(FetchInvalidURL, match="outside 1-65535"):
        await check_destination(url, allow_private=True)

    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": url})

    with pytest.raises(FetchInvalidURL, match="outside 1-65535"):
        await fetch_url(PUBLIC, transport=httpx.MockTransport(answer))


async def test_a_port_out_of_range_is_refused_at_once(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    """``POST /ingestion-runs`` of such a URL: 400 invalid-url, no run queued."""
    alice_id, alice = await make_user(database)
    r = await kclient.post(f"{API}/ingestion-runs", headers=alice,
                           json={"target": "http://example.com:99999/doc.html"})
    assert r.status_code == 400 and r.json()["type"].endswith("invalid-url"), r.text
    assert await fetch(database, "SELECT id FROM ingestion_runs WHERE user_id = :u",
                       u=alice_id) == []


async def test_a_redirect_to_a_port_out_of_range_is_a_fetch_error(
    database: Database, kcfg: KnowledgeConfig, loopback: LoopbackServer
) -> None:
    """A page redirecting to such a URL fails its source cleanly (invalid-url), not as
    an unexpected crash of the ingestion (type ``error``, ExceptionGroup)."""
    alice_id, _ = await make_user(database)
    cfg = dataclasses.replace(kcfg, allow_private_fetch=True)
    target = loopback.url("/redirect?to=http://127.0.0.1:70000/doc.html")
    run = await ingest(database, principal(alice_id), cfg, target)
    assert run["status"] == "failed" and len(run["errors"]) == 1, run
    error = run["errors"][0]
    assert error["type"] == "invalid-url" and "outside 1-65535" in error["error"], error


# One host as a browser reaches it, typed composed, decomposed (NFD), in capitals and in
# fullwidth letters with a fullwidth dot: UTS #46 maps each to xn--caf-dma.example, while
# httpx's strict IDNA 2008 check refused all but the first as "not a valid URL".
CAFE_FORMS = ("http://caf\u00e9.example/page", "http://cafe\u0301.example/page",
              "http://CAF\u00c9.example/page", "http://\uff43\uff41\uff46\u00e9\uff0eexample/page")


@pytest.mark.parametrize("url", CAFE_FORMS)
async def test_an_international_host_in_any_typed_form_is_fetched_as_a_browser_would(
        url: str) -> None:
    looked_up: list[str] = []
    asked: list[str] = []

    async def dns(host: str, port: int) -> list[str]:
        looked_up.append(host)
        return ["93.184.216.34"]

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers["host"] + request.url.path)
        return httpx.Response(200, text="bonjour", headers={"Content-Type": "text/plain"})

    page = await fetch_url(url, resolver=dns, transport=httpx.MockTransport(answer))
    assert looked_up == ["xn--caf-dma.example"] and asked == ["xn--caf-dma.example/page"]
    assert page.data == b"bonjour"


async def test_an_international_host_in_decomposed_form_is_accepted_for_ingestion(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    """``POST /ingestion-runs`` of such a URL queues a run for the host a browser reaches
    (it was a 400 invalid-url); a host UTS #46 cannot map either stays a 400."""
    _, alice = await make_user(database)
    r = await kclient.post(f"{API}/ingestion-runs", headers=alice,
                           json={"target": CAFE_FORMS[1]})
    assert r.status_code == 202, r.text
    assert r.json()["target"] == "http://xn--caf-dma.example/page", r.json()
    r = await kclient.post(f"{API}/ingestion-runs", headers=alice,
                           json={"target": "http://caf\u00e9\u0378.example/page"})
    assert r.status_code == 400 and r.json()["type"].endswith("invalid-url"), r.text
