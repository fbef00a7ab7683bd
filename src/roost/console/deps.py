"""What every console page needs: the template environment, the security headers, the
session and CSRF cookies, and the signed-in user (or a redirect to the sign-in page)."""

from __future__ import annotations

import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote, unquote

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

import roost
from roost.errors import TooManyRequests
from roost.http.auth import CSRF_COOKIE, SESSION_COOKIE, cookie_principal
from roost.http.deps import get_keys, get_settings_dep
from roost.http.problems import retry_after
from roost.http.routing import RoostRoute
from roost.identity.models import User
from roost.inputs import holds_control
from roost.principal import Principal
from roost.security.tokens import issue_access_token

# No inline script anywhere (JSON data blocks are not executed); styles only from our file
# (element.style set by scripts is CSSOM, which style-src does not govern).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
THEMES = ("dark", "light")


@cache
def templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("roost.console", "templates"),
        autoescape=True,  # every user-controlled value is rendered as text
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals["version"] = roost.__version__
    env.globals["asset"] = asset_url
    return env


@cache
def _assets() -> dict[str, tuple[bytes, str]]:
    """The console's static files, read once: name -> (content, ETag)."""
    root = resources.files("roost.console").joinpath("static")
    found: dict[str, tuple[bytes, str]] = {}
    for entry in root.iterdir():
        if entry.is_file() and entry.name.rsplit(".", 1)[-1] in MEDIA_TYPES:
            data = entry.read_bytes()
            found[entry.name] = (data, hashlib.sha256(data).hexdigest()[:16])
    return found


MEDIA_TYPES = {"js": "text/javascript; charset=utf-8", "css": "text/css; charset=utf-8",
               "svg": "image/svg+xml"}


def asset(name: str) -> tuple[bytes, str, str] | None:
    """A static file by its exact name (no paths: nothing outside the folder is reachable)."""
    found = _assets().get(name)
    if found is None:
        return None
    return found[0], found[1], MEDIA_TYPES[name.rsplit(".", 1)[-1]]


def asset_url(name: str) -> str:
    """The URL of a static file.  Styles and images are versioned by their content (cached
    for an hour); modules are not: a page's module imports ``./console.js`` by its plain
    URL, and two URLs would make two instances of it (they revalidate by ETag instead)."""
    found = _assets().get(name)
    if found is None or name.endswith(".js"):
        return f"/console/static/{name}"
    return f"/console/static/{name}?v={found[1]}"


def secure_cookies(request: Request) -> bool:
    return request.url.scheme == "https"


def csrf_token(request: Request) -> tuple[str, bool]:
    """The page's CSRF token and whether it is new (then the response sets the cookie)."""
    existing = request.cookies.get(CSRF_COOKIE)
    if existing and 20 <= len(existing) <= 100:
        return existing, False
    return secrets.token_urlsafe(32), True


def set_csrf_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=secure_cookies(request), path="/")


def set_session_cookie(
    response: Response, request: Request, *, user_id: uuid.UUID, session_id: uuid.UUID,
    expires_at: datetime,
) -> None:
    """Sign the browser in: the cookie holds an access token that lives as long as the
    server-side session (which every request re-checks, so logout ends it at once)."""
    ttl = max(60, int(expires_at.timestamp() - time.time()))
    token = issue_access_token(get_keys(request).secret_key, user_id=user_id,
                               session_id=session_id, ttl_seconds=ttl)
    response.set_cookie(SESSION_COOKIE, token, max_age=ttl, httponly=True, samesite="strict",
                        secure=secure_cookies(request), path="/")
    # A new CSRF token with the new session (no token fixation across sign-ins).
    set_csrf_cookie(response, request, secrets.token_urlsafe(32))


def clear_session_cookie(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")


@dataclass(frozen=True)
class Viewer:
    """The signed-in user as the pages show them."""

    principal: Principal
    user_id: uuid.UUID
    username: str
    display_name: str
    is_admin: bool
    theme: str


async def viewer(request: Request, session: AsyncSession) -> Viewer | None:
    """The signed-in user, or ``None`` (no cookie, expired or revoked session)."""
    principal = await cookie_principal(request, session)
    if principal is None or principal.user_id is None:
        return None
    user = await session.scalar(select(User).where(User.id == principal.user_id))
    if user is None:
        return None
    theme = user.theme if user.theme in THEMES else "dark"
    return Viewer(principal, user.id, user.username, user.full_name or user.username,
                  principal.is_admin, theme)


def login_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target, safe='')}", status_code=303)


def safe_next(value: str | None) -> str:
    """Only our own pages are a place to go after sign-in (no open redirect, and no
    ``/console/../api/...``: a browser resolves dot segments, ``%2e`` spelt too)."""
    path = unquote((value or "").split("?", 1)[0].split("#", 1)[0])
    if not value or (path != "/console" and not path.startswith("/console/")):
        return "/console/"
    if ("//" in value or "\\" in path or holds_control(value)
            or any(part in (".", "..") for part in path.split("/"))):
        return "/console/"
    return value


def render(
    request: Request, template: str, *, viewer: Viewer | None, status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    token, new = csrf_token(request)
    settings = get_settings_dep(request)
    html = templates().get_template(template).render(
        viewer=viewer, csrf=token, theme=viewer.theme if viewer else "dark",
        path=request.url.path, **{"open_registration": settings.open_registration, **context},
    )
    response = HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)
    if new:
        set_csrf_cookie(response, request, token)
    return response


def too_many_requests_page(request: Request, exc: TooManyRequests) -> HTMLResponse:
    """The page of a signed-in user over their rate limit, with ``Retry-After``."""
    response = render(request, "error.html", viewer=None, status_code=429,
                      title="Too many requests",
                      message=f"{exc.detail[:1].upper()}{exc.detail[1:]}.")
    response.headers.update(retry_after(exc) or {})
    return response


class PageRoute(RoostRoute):
    """A console route whose pages answer a viewer over their rate limit (the resolver's
    429, raised while :func:`viewer` resolves the cookie) with an HTML page, not problem
    JSON; the JSON endpoints (sign-in, sign-out: POST) keep the problem answer."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def page(request: Request) -> Response:
            try:
                return await handler(request)
            except TooManyRequests as exc:
                if request.method != "GET":  # HEAD runs as GET
                    raise
                return too_many_requests_page(request, exc)

        return page
