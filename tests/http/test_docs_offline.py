"""``/docs`` and ``/redoc`` work on a machine without internet: every asset is local."""

from __future__ import annotations

import re

import httpx
import pytest

_URL_ATTR = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url\s*:\s*['"]([^'"]+)['"]""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_local_assets(client: httpx.AsyncClient, page: str) -> None:
    reply = await client.get(page)
    assert reply.status_code == 200
    html = reply.text
    assert "cdn" not in html.lower() and "fonts.googleapis" not in html
    urls = {a or b for a, b in _URL_ATTR.findall(html)}
    assert "/openapi.json" in urls and len(urls) >= 3, urls
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert len(asset.content) > 100, url
    if page == "/docs":
        assert '"validatorUrl": null' in html  # no badge calling the public validator
