"""The built-in ``web_fetch`` tool against a real HTTP server on loopback (allowed by the
tests' ``ROOST_TOOLS_ALLOWED_HOSTS=127.0.0.1``) and addresses it must refuse."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from roost.db.engine import Database
from tests.support.identity import make_user
from tests.support.loopback import QuietHandler, http_site
from tests.tools.conftest import MAX_OUTPUT_BYTES

pytestmark = pytest.mark.asyncio(loop_scope="session")

FETCH = "/api/v1/tools/by-name/web_fetch/call"
PAGE = (b"<!doctype html><html><head><title>Herons</title><script>steal()</script></head>"
        b"<body><h1>Grey herons</h1><p>They wade in &amp; out of shallow water.</p>"
        b"<p>" + b"Long text. " * 500 + b"</p></body></html>")
WIDE = b"<html><body><p>" + "\u00e9\"".encode() * 25_000 + b"</p></body></html>"
SHELL = b"<!doctype html><html><head><script>boot()</script></head><body></body></html>"


class _Handler(QuietHandler):
    def do_GET(self) -> None:
        if self.path == "/page":
            self.send(200, "text/html; charset=utf-8", PAGE)
        elif self.path in ("/wide", "/shell", "/empty"):
            body = {"/wide": WIDE, "/shell": SHELL, "/empty": b""}[self.path]
            self.send(200, "text/html; charset=utf-8", body)
        elif self.path == "/plain":
            self.send(200, "text/plain", b"just text\n")
        elif self.path == "/image":
            self.send(200, "image/png", b"\x89PNG\r\n\x1a\n" + bytes(64))
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/page")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send(404, "text/plain", b"no")



@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    with http_site(_Handler) as url:
        yield url


async def fetch(client: httpx.AsyncClient, headers: dict[str, str], **arguments: object) -> httpx.Response:
    return await client.post(FETCH, headers=headers, json={"arguments": arguments})


async def test_web_fetch_returns_the_text_of_an_allowed_page(
    client: httpx.AsyncClient, database: Database, site: str
) -> None:
    _, alice = await make_user(database)
    page = await fetch(client, alice, url=f"{site}/page", max_chars=200)
    assert page.status_code == 200, page.text
    run = page.json()
    output = run["output"]
    assert run["status"] == "success"
    assert output["status"] == 200 and output["final_url"] == f"{site}/page"
    assert output["content_type"].startswith("text/html") and output["title"] == "Herons"
    assert output["text"].startswith("Grey herons") and "They wade in & out" in output["text"]
    assert "steal()" not in output["text"] and "<p>" not in output["text"]
    assert len(output["text"]) == 200 and output["truncated"] is True and output["chars"] > 200

    plain = await fetch(client, alice, url=f"{site}/plain")
    assert plain.status_code == 200, plain.text
    assert plain.json()["output"]["text"] == "just text" and not plain.json()["output"]["truncated"]

    # An HTTP error, a body that is not text, a redirect from an allow-listed host:
    # clear failures, each recorded as a failed run.
    missing = await fetch(client, alice, url=f"{site}/absent")
    assert missing.status_code == 502 and "404" in missing.json()["detail"]
    image = await fetch(client, alice, url=f"{site}/image")
    assert image.status_code == 422 and "PNG" in image.json()["detail"]
    moved = await fetch(client, alice, url=f"{site}/moved")
    assert moved.status_code == 502 and "ROOST_TOOLS_ALLOWED_HOSTS" in moved.json()["detail"]
    bad = await fetch(client, alice, url=f"{site}/page", max_chars=0)
    assert bad.status_code == 422 and "/max_chars" in bad.json()["detail"]
    runs = (await client.get("/api/v1/tool-runs", params={"tool_name": "web_fetch"},
                             headers=alice)).json()["items"]
    assert [r["status"] for r in runs] == ["error", "error", "error", "success", "success"]


async def test_web_fetch_refuses_private_addresses(
    client: httpx.AsyncClient, database: Database, site: str
) -> None:
    _, bob = await make_user(database)
    port = site.rsplit(":", 1)[1]
    for url in ("http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/",
                f"http://localhost:{port}/page", "http://[::1]/", "file:///etc/passwd",
                "http://user:pw@example.com/"):
        refused = await fetch(client, bob, url=url)
        assert refused.status_code in (400, 403), (url, refused.text)
        problem = refused.json()
        assert problem["type"].endswith(("fetch-refused", "invalid-url")), (url, problem)
        run = (await client.get(f"/api/v1/tool-runs/{problem['tool_run_id']}", headers=bob)).json()
        assert run["status"] == "error" and run["error"] == problem["detail"]
    metadata = await fetch(client, bob, url="http://169.254.169.254/")
    assert "metadata" in metadata.json()["detail"]
    private = await fetch(client, bob, url="http://10.0.0.1/")
    assert "ROOST_TOOLS_ALLOWED_HOSTS" in private.json()["detail"]


async def test_a_page_larger_than_the_output_cap_is_cut_to_fit_it(
    client: httpx.AsyncClient, database: Database, site: str
) -> None:
    """ROOST_TOOLS_MAX_OUTPUT_BYTES bounds web_fetch's result as it bounds an MCP tool's:
    a page of two-byte characters and quotes (escaped in JSON) is cut so that the result
    fits, and says it was cut; the kept text is the page's start."""
    _, alice = await make_user(database)
    answer = await fetch(client, alice, url=f"{site}/wide", max_chars=40_000)
    assert answer.status_code == 200, answer.text
    output = answer.json()["output"]
    assert len(httpx.Response(200, json=output).content) <= MAX_OUTPUT_BYTES
    assert output["truncated"] and output["chars"] == 50_000
    assert ("\u00e9\"" * 25_000).startswith(output["text"])
    assert len(output["text"]) > 1_000  # cut to fit, not emptied


@pytest.mark.parametrize("path", ["/shell", "/empty"])
async def test_a_page_without_text_is_a_422(
    client: httpx.AsyncClient, database: Database, site: str, path: str
) -> None:
    """A script-only app shell or an empty page has no text: the tool's 422 saying so (as
    an image's), not a successful run with an empty text the model cannot tell apart."""
    _, alice = await make_user(database)
    answer = await fetch(client, alice, url=f"{site}{path}")
    assert answer.status_code == 422, answer.text
    assert "no text" in answer.json()["detail"]
