"""``/docs`` (Swagger UI) and ``/redoc`` served from this machine.

FastAPI's defaults load the pages' JavaScript and CSS from a public CDN, so on a
self-hosted machine without internet they stay blank.  The assets come from the
``fastapi-offline`` package (Swagger UI 5, ReDoc), served under ``/docs/static``.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

STATIC_URL = "/docs/static"


def assets_dir() -> Path:
    return Path(str(files("fastapi_offline") / "static"))


# The pages share the console's origin (and its cookie): never inside another site's
# frame, no plugins, no <base> rewriting (their own inline script stays allowed).
_PAGE_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                 "Referrer-Policy": "same-origin",
                 "Content-Security-Policy": "frame-ancestors 'none'; object-src 'none'; "
                                            "base-uri 'none'"}


def _framed_by_none(page: HTMLResponse) -> HTMLResponse:
    page.headers.update(_PAGE_HEADERS)
    return page


def install_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Create the app with ``docs_url=None, redoc_url=None``, then call this."""
    app.mount(STATIC_URL, StaticFiles(directory=assets_dir()), name="docs-static")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _framed_by_none(get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            # No badge that sends the document to the public online validator.
            swagger_ui_parameters={"validatorUrl": None},
        ))

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _framed_by_none(get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/favicon.png",
            with_google_fonts=False,
        ))
