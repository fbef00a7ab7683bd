"""The built-in ``web_fetch`` tool against a loopback HTTP server (allowed by the tools
tests' ``ROOST_TOOLS_ALLOWED_HOSTS=127.0.0.1``) serving what real sites send: an unknown
charset label beside a <meta> declaration, XHTML declaring its encoding in the XML
declaration, a 203 from a proxy, an allowed host typed in fullwidth forms, and a long
URL that must not push the page's text out of the capped result."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from roost.db.engine import Database
from tests.support.identity import make_user
from tests.support.loopback import QuietHandler, http_site
from tests.tools.conftest import MAX_OUTPUT_BYTES

pytestmark = pytest.mark.asyncio(loop_scope="session")

FETCH = "/api/v1/tools/by-name/web_fetch/call"
RUSSIAN = "Привет, мир"
CP1251_PAGE = (b"<html><head><meta charset=\"windows-1251\"><title>t</title></head><body><p>"
               + RUSSIAN.encode("cp1251") + b"</p></body></html>")
XHTML_1251 = (b"<?xml version=\"1.0\" encoding=\"windows-1251\"?>\n"
              b"<html xmlns=\"http://www.w3.org/1999/xhtml\"><head><title>t</title></head>"
              b"<body><p>" + RUSSIAN.encode("cp1251") + b"</p></body></html>")

FULLWIDTH_LOOPBACK = "127.0.0.1".translate({ord(c): ord(c) + 0xFEE0 for c in "0123456789."})
# path -> (status, content type, body)
ROUTES: dict[str, tuple[int, str, bytes]] = {
    "/bogus-header-charset": (200, "text/html; charset=x-bogus", CP1251_PAGE),
    "/xhtml-1251": (200, "application/xhtml+xml", XHTML_1251),
    "/non-authoritative": (203, "text/plain", b"a cached copy\n"),
    "/plain": (200, "text/plain", b"the page text\n"),
}


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/long/"):
            path = "/plain"
        self.send(*ROUTES.get(path, (404, "text/plain", b"no")))


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    with http_site(_Handler) as url:
        yield url


async def fetch(client: httpx.AsyncClient, headers: dict[str, str], **arguments: object) -> httpx.Response:
    return await asyncio.wait_for(
        client.post(FETCH, headers=headers, json={"arguments": arguments}), timeout=60)


async def test_an_unknown_charset_in_the_header_leaves_the_meta_declaration_in_force(
    client: httpx.AsyncClient, database: Database, site: str
) -> None:
    """A server that sends a charset label nobody knows (``charset=x-bogus``) has said
    nothing usable: as in a browser (WHATWG: an unknown label is ignored, then the
    ``<meta charset>`` prescan decides), the page's own windows-1251 declaration decodes
    its Cyrillic text, not cp1252 mojibake."""
    _, alice = await make_user(database)
    answer = await fetch(client, alice, url=f"{site}/bogus-header-charset")
    assert answer.status_code == 200, answer.text
    assert RUSSIAN in answer.json()["output"]["text"], answer.json()["output"]["text"]


async def test_an_xhtml_page_is_decoded_by_its_xml_declaration(
    client: httpx.AsyncClient, database: Database, site: str
) -> None:
    """An ``application/xhtml+xml`` page is XML: its ``<?xml encoding="windows-1251"?>``
    declaration says how to read it (no charset in the header, no <meta>), so its
    Cyrillic text comes back as written."""
    _, alice = await make_user(database)
    answer = await fetch(client, alice, url=f"{site}/xhtml-1251")
    assert answer.status_code == 200, answer.text
    assert RUSSIAN in answer.json()["output"]["text"], answer.json()["output"]["text"]


async def test_a_203_answer_is_a_page_not_a_failure(
    client: httpx.AsyncClient, database: Database, site: str
) -> None:
    """203 Non-Authoritative Information is a successful answer with the page in its body
    (a transforming proxy's copy); the docs make only "an HTTP error" a 502. The user
    expects the text, with ``status`` saying 203."""
    _, alice = await make_user(database)
    answer = await fetch(client, alice, url=f"{site}/non-authoritative")
    assert answer.status_code == 200, answer.text
    output = answer.json()["output"]
    assert output["text"] == "a cached copy" and output["status"] == 203, output


async def test_an_allow_listed_host_typed_in_fullwidth_is_still_allow_listed(
    client: httpx.AsyncClient, database: Database, site: str
) -> None:
    """The fetcher maps a host typed in fullwidth forms to the host a browser would reach
    (``browser_host_form``): 127.0.0.1 in fullwidth digits and full stops is 127.0.0.1,
    which the administrator listed in ROOST_TOOLS_ALLOWED_HOSTS. The fetch should be
    allowed, not refused with "fetching 127.0.0.1 is not allowed ... unless an
    administrator lists the host", a message that contradicts the configuration."""
    _, alice = await make_user(database)
    port = site.rsplit(":", 1)[1]
    answer = await fetch(client, alice, url=f"http://{FULLWIDTH_LOOPBACK}:{port}/plain")
    assert answer.status_code == 200, answer.text
    assert answer.json()["output"]["text"] == "the page text"


async def test_a_long_url_does_not_push_the_page_text_out_of_the_result(
    client: httpx.AsyncClient, database: Database, site: str
) -> None:
    """The docs promise the whole result fits in ROOST_TOOLS_MAX_OUTPUT_BYTES (as an MCP
    tool's must, else the call fails). A valid URL (1,500 characters, under the schema's
    2,048) whose path is non-ASCII is echoed as ``url``, percent-encoded as ``final_url``
    and again as the filename-derived ``title``: the result is three times the cap and the
    13-character page comes back as an empty ``text`` in a *successful* run."""
    _, alice = await make_user(database)
    answer = await fetch(client, alice, url=f"{site}/long/" + "\u00e9" * 1500)
    assert answer.status_code == 200, answer.text
    output = answer.json()["output"]
    assert len(httpx.Response(200, json=output).content) <= MAX_OUTPUT_BYTES, len(answer.content)
    assert output["text"] == "the page text", output["text"]
