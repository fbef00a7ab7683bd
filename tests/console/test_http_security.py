"""The console's HTTP security seen from outside, without a browser: the security headers
on every kind of console answer, no CORS grant for a foreign origin, ``next=`` never
leading off the console (as a browser would resolve it), sign-in throttling that a
different spelling of the login does not reset, logout ending the session for every
form of its credential, Secure cookies over https, and the CSRF token required by every
kind of route a cookie can write through."""

from __future__ import annotations

import html
import re
import urllib.parse
import uuid

import httpx
from fastapi import FastAPI

from roost.db.engine import Database
from roost.http.auth import CSRF_COOKIE, SESSION_COOKIE
from roost.keyfiles import KeyMaterial
from tests.console.conftest import session_cookies
from tests.identity.conftest import password_user

PASSWORD = "plum-velvet-orbit-93!"
EVIL = "https://evil.example"


async def _user(database: Database, name: str, *, admin: bool = False) -> uuid.UUID:
    return await password_user(database, name, admin=admin, password=PASSWORD)


def _assert_security_headers(response: httpx.Response) -> None:
    csp = response.headers.get("content-security-policy", "")
    assert "frame-ancestors 'none'" in csp, (response.url, csp)
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert "object-src 'none'" in csp and "base-uri 'none'" in csp
    assert response.headers.get("x-content-type-options") == "nosniff"
    assert response.headers.get("x-frame-options") == "DENY"
    assert response.headers.get("referrer-policy") in ("same-origin", "no-referrer",
                                                        "strict-origin-when-cross-origin")


async def test_every_console_answer_carries_the_security_headers(
    client: httpx.AsyncClient, database: Database, test_keys: KeyMaterial,
) -> None:
    for path in ("/console/login", "/console/register", "/console/nope/nope"):
        answer = await client.get(path)
        assert answer.status_code in (200, 404), (path, answer.status_code)
        _assert_security_headers(answer)
    user = await _user(database, "hedy")
    client.cookies.update(await session_cookies(database, test_keys, user))
    for path in ("/console/chat", "/console/agents", f"/console/agents/{uuid.uuid4()}",
                 "/console/admin/users", "/console/admin/nothing", "/console/profile"):
        answer = await client.get(path)
        assert answer.status_code in (200, 404), (path, answer.status_code)
        _assert_security_headers(answer)
    client.cookies.clear()
    admin = await _user(database, "boss", admin=True)
    client.cookies.update(await session_cookies(database, test_keys, admin))
    for section in ("users", "audit", "queue", "limits", "settings", "billing", "usage"):
        answer = await client.get(f"/console/admin/{section}")
        assert answer.status_code == 200, (section, answer.status_code)
        _assert_security_headers(answer)


async def test_a_foreign_origin_gets_no_cors_grant(
    client: httpx.AsyncClient, database: Database, test_keys: KeyMaterial,
) -> None:
    cookies = await session_cookies(database, test_keys, await _user(database, "cora"))
    for path in ("/api/v1/auth/me", "/api/v1/chat/sessions", "/v1/models", "/console/session"):
        preflight = await client.options(path, headers={
            "Origin": EVIL, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-csrf-token, content-type"})
        assert "access-control-allow-origin" not in preflight.headers, (path, preflight.headers)
        assert "access-control-allow-credentials" not in preflight.headers
        got = await client.get(path, headers={"Origin": EVIL}, cookies=cookies)
        assert got.headers.get("access-control-allow-origin") not in (EVIL, "*"), path
        assert "access-control-allow-credentials" not in got.headers
    # The null origin (sandboxed iframes, file://) is no better.
    got = await client.get("/api/v1/auth/me", headers={"Origin": "null"}, cookies=cookies)
    assert "access-control-allow-origin" not in got.headers


def _browser_join(ref: str) -> urllib.parse.ParseResult:
    """Resolve ``ref`` against a console page as a browser does (WHATWG strips tabs and
    newlines anywhere, C0 controls and spaces at the ends, and reads \\ as /)."""
    ref = re.sub(r"[\t\n\r]", "", ref).strip("\x00- ").replace("\\", "/")
    return urllib.parse.urlparse(urllib.parse.urljoin("http://roost.test/console/login", ref))


OFF_SITE_TARGETS = (
    "https://evil.example/", "//evil.example/", "/\\evil.example", "\\\\evil.example",
    "/console//evil.example", "/console/..//evil.example", "/console\\..\\evil.example",
    "/console@evil.example", "http:/evil.example", "/%2F%2Fevil.example",
    "/console/%0D%0ALocation:%20https://evil.example", "javascript:alert(1)",
    " /\t/evil.example", "/\t/evil.example", "/console/\t/evil.example",
)
# Same site, but off the console: a browser resolves dot segments, %2e spelt too.
OFF_CONSOLE_TARGETS = ("/console/../api/v1/auth/me", "/console/%2e%2e/api/v1/auth/me",
                       "/console/.%2E/api", "/console/%2E%2E%2Fapi", "/console/./../api",
                       "/consoleevil", "/console/..")


async def test_next_never_leads_off_the_console(
    client: httpx.AsyncClient, database: Database, test_keys: KeyMaterial,
) -> None:
    user = await _user(database, "nina")
    # Signed out: the sign-in form's data-next (where its script goes after signing in).
    for target in OFF_SITE_TARGETS:
        page = await client.get("/console/login", params={"next": target})
        assert page.status_code == 200
        rendered = re.search(r'data-next="([^"]*)"', page.text)
        assert rendered and rendered[1].startswith("/console"), (target, rendered)
        resolved = _browser_join(html.unescape(rendered[1]))
        assert resolved.netloc == "roost.test", (target, rendered[1], resolved)
    # Signed in: the server's own 303.
    client.cookies.update(await session_cookies(database, test_keys, user))
    for target in OFF_SITE_TARGETS:
        again = await client.get("/console/login", params={"next": target})
        assert again.status_code == 303
        location = again.headers["location"]
        assert "\r" not in location and "\n" not in location
        resolved = _browser_join(location)
        assert resolved.netloc == "roost.test" and resolved.path.startswith("/console"), (
            target, location)
    for target in OFF_CONSOLE_TARGETS:
        again = await client.get("/console/login", params={"next": target})
        assert again.status_code == 303
        resolved = _browser_join(again.headers["location"].replace("%2e", ".")
                                 .replace("%2E", ".").replace("%2F", "/"))
        assert resolved.path.startswith("/console/"), (target, again.headers["location"])


async def test_console_sign_in_is_throttled_whatever_the_spelling_of_the_login(
    client: httpx.AsyncClient, database: Database,
) -> None:
    await _user(database, "brutus")
    csrf = "c" * 43
    client.cookies.update({CSRF_COOKIE: csrf})
    headers = {"X-CSRF-Token": csrf}
    statuses = []
    for i in range(8):
        answer = await client.post("/console/session", headers=headers,
                                   json={"login": "brutus", "password": f"guess-{i}-wrong!!"})
        statuses.append(answer.status_code)
        assert answer.headers["content-type"].startswith("application/problem+json")
    assert statuses == [401] * 5 + [429] * 3, statuses
    # Locked out: the right password waits too, however the name is spelt.
    for login in ("brutus", "BRUTUS", " brutus"):
        right = await client.post("/console/session", headers=headers,
                                  json={"login": login, "password": PASSWORD})
        assert right.status_code == 429, (login, right.status_code)
        assert SESSION_COOKIE not in right.headers.get("set-cookie", ""), login
    # The e-mail is a name of its own (its lockout would confirm it is brutus's), but
    # the account's total over all its names caps the guesses: five more through it.
    for i in range(5):
        answer = await client.post("/console/session", headers=headers, json={
            "login": "brutus@example.test", "password": f"other-{i}-wrong!!"})
        assert answer.status_code == 401, (i, answer.status_code)
    right = await client.post("/console/session", headers=headers,
                              json={"login": "brutus@example.test", "password": PASSWORD})
    assert right.status_code == 429, right.status_code
    assert SESSION_COOKIE not in right.headers.get("set-cookie", "")


async def test_logout_ends_the_session_for_every_form_of_its_credential(
    client: httpx.AsyncClient, database: Database,
) -> None:
    await _user(database, "lou")
    csrf = "c" * 43
    client.cookies.update({CSRF_COOKIE: csrf})
    signed = await client.post("/console/session", headers={"X-CSRF-Token": csrf},
                               json={"login": "lou", "password": PASSWORD})
    assert signed.status_code == 200
    session = signed.cookies[SESSION_COOKIE]
    new_csrf = signed.cookies[CSRF_COOKIE]
    assert new_csrf != csrf  # rotated at sign-in: the old token is worthless
    stale = await client.post("/api/v1/chat/sessions", json={"title": "x"},
                              headers={"X-CSRF-Token": csrf},
                              cookies={SESSION_COOKIE: session, CSRF_COOKIE: csrf})
    assert stale.status_code == 403
    out = await client.post("/console/logout", headers={"X-CSRF-Token": new_csrf},
                            cookies={SESSION_COOKIE: session, CSRF_COOKIE: new_csrf})
    assert out.status_code == 303
    for path in ("/api/v1/auth/me", "/v1/models", "/console/chat"):
        after = await client.get(path, cookies={SESSION_COOKIE: session})
        assert after.status_code in (401, 303), (path, after.status_code)
    # Nor is the token inside the cookie a bearer token that outlives it.
    bearer = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {session}"})
    assert bearer.status_code == 401


async def test_logout_with_another_credential_in_the_request_still_ends_the_cookie_s_session(
    client: httpx.AsyncClient, database: Database, test_keys: KeyMaterial,
) -> None:
    """Sign-out with the cookie and its CSRF token, the request also carrying an
    ``Authorization`` header (a stray bearer, a proxy's Basic credentials): the cookie's
    session ends.  The console ignored the cookie then, yet answered 303 and cleared it:
    a copy of the cookie kept working."""
    user = await _user(database, "lola")
    for header in ("Bearer junk", "Basic cHJveHk6cHc="):
        cookies = await session_cookies(database, test_keys, user)
        out = await client.post("/console/logout", cookies=cookies, headers={
            "X-CSRF-Token": cookies[CSRF_COOKIE], "Authorization": header})
        assert out.status_code == 303, out.text
        after = await client.get("/api/v1/auth/me",
                                 cookies={SESSION_COOKIE: cookies[SESSION_COOKIE]})
        assert after.status_code == 401, (header, after.status_code)


async def test_the_console_works_behind_a_proxy_that_asks_for_basic_credentials(
    client: httpx.AsyncClient, database: Database, test_keys: KeyMaterial,
) -> None:
    """A reverse proxy with HTTP Basic authentication: the browser sends its
    ``Authorization: Basic`` with every request, pages and the API calls they make.  Every
    page went to the sign-in page and every API call was a 401 ("must be 'Bearer
    <token>'"): the cookie is what signs the console in, whatever other scheme rides
    along; without a cookie a Basic header is still no credential."""
    user = await _user(database, "basil")
    cookies = await session_cookies(database, test_keys, user)
    basic = {"Authorization": "Basic cHJveHk6cHc="}
    page = await client.get("/console/chat", cookies=cookies, headers=basic)
    assert page.status_code == 200, page.status_code
    me = await client.get("/api/v1/auth/me", cookies=cookies, headers=basic)
    assert me.status_code == 200 and me.json()["username"] == "basil", me.text
    made = await client.post("/api/v1/chat/sessions", json={"title": "t"}, cookies=cookies,
                             headers={**basic, "X-CSRF-Token": cookies[CSRF_COOKIE]})
    assert made.status_code == 201, made.text
    unsigned = await client.post("/api/v1/chat/sessions", json={"title": "t"}, cookies=cookies,
                                 headers=basic)
    assert unsigned.status_code == 403, unsigned.text  # the cookie still needs its CSRF token
    client.cookies.clear()
    assert (await client.get("/api/v1/auth/me", headers=basic)).status_code == 401


async def test_cookies_are_secure_when_the_console_is_served_over_https(
    app: FastAPI, database: Database,
) -> None:
    await _user(database, "sam")
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://roost.test") as tls:
        page = await tls.get("/console/login")
        assert "secure" in page.headers["set-cookie"].lower()
        csrf = page.cookies[CSRF_COOKIE]
        signed = await tls.post("/console/session", headers={"X-CSRF-Token": csrf},
                                json={"login": "sam", "password": PASSWORD})
        assert signed.status_code == 200
        for cookie in signed.headers.get_list("set-cookie"):
            low = cookie.lower()
            assert "secure" in low and "httponly" in low and "samesite=strict" in low, cookie


async def test_every_kind_of_cookie_write_needs_the_csrf_token(
    console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """Streaming, gateway, multipart, MCP and known-caller routes resolve the caller their
    own way: each must still refuse a cookie-borne write without the right CSRF header."""
    user = await _user(database, "cathy")
    cookies = await session_cookies(database, test_keys, user)
    csrf = cookies[CSRF_COOKIE]
    async with httpx.AsyncClient(base_url=console, cookies=cookies) as http:  # lifespan on
        chat = await http.post("/api/v1/chat/sessions", headers={"X-CSRF-Token": csrf},
                               json={"title": "mine"})
        assert chat.status_code == 201
        sid = chat.json()["id"]
        some = str(uuid.uuid4())
        writes: list[tuple[str, str, dict[str, object]]] = [
            ("POST", "/v1/chat/completions", {"json": {"model": "x", "messages": [
                {"role": "user", "content": "hi"}]}}),
            ("POST", "/v1/embeddings", {"json": {"model": "x", "input": "hi"}}),
            ("POST", f"/api/v1/chat/sessions/{sid}/messages", {"json": {"content": "hi"}}),
            ("PATCH", f"/api/v1/chat/sessions/{sid}", {"json": {"title": "stolen"}}),
            ("DELETE", f"/api/v1/chat/sessions/{sid}", {}),
            ("POST", "/api/v1/knowledge/documents",
             {"files": {"file": ("a.txt", b"hello", "text/plain")}}),
            ("POST", "/api/v1/knowledge/search", {"json": {"query": "x"}}),
            ("POST", f"/api/v1/tools/{some}/call", {"json": {"arguments": {}}}),
            ("POST", f"/api/v1/agents/{some}/runs", {"json": {"input": "x"}}),
            ("PATCH", "/api/v1/users/me/settings", {"json": {"theme": "light"}}),
            ("POST", "/api/v1/api-keys", {"json": {"name": "stolen"}}),
            ("POST", "/api/v1/auth/logout-all", {}),
            ("POST", "/mcp", {"json": {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}}),
            ("PUT", f"/api/v1/admin/limits/users/{user}", {"json": {"streams": 1}}),
        ]
        accept = {"Accept": "application/json, text/event-stream"}  # what /mcp asks for
        for method, path, body in writes:
            for token in (None, "", csrf + "x"):
                headers = dict(accept) if token is None else {**accept, "X-CSRF-Token": token}
                answer = await http.request(method, path, headers=headers, **body)  # type: ignore[arg-type]
                assert answer.status_code == 403, (method, path, token, answer.status_code,
                                                   answer.text[:200])
        # Nothing happened.
        still = await http.get(f"/api/v1/chat/sessions/{sid}")
        assert still.status_code == 200 and still.json()["title"] == "mine"
        assert (await http.get("/api/v1/auth/me")).status_code == 200


async def test_only_a_session_token_signs_in_through_the_cookie(
    client: httpx.AsyncClient, database: Database, test_keys: KeyMaterial,
) -> None:
    """The session cookie holds a session's access token. An API key or the operator token
    planted in it (a sibling subdomain can set cookies for the domain) must not sign the
    browser in: as the attacker's account, or as the operator."""
    from tests.support.identity import make_user

    _, key_headers = await make_user(database, username="planter")
    api_key = key_headers["Authorization"].split()[1]
    for planted in (api_key, test_keys.admin_token):
        answer = await client.get("/api/v1/auth/me", cookies={SESSION_COOKIE: planted})
        assert answer.status_code == 401, (planted[:8], answer.text)
        page = await client.get("/console/", cookies={SESSION_COOKIE: planted})
        assert page.status_code == 303, page.status_code
        assert page.headers["location"].startswith("/console/login"), page.headers["location"]
    # The same key as a bearer token still works: only the cookie is particular.
    assert (await client.get("/api/v1/auth/me", headers=key_headers)).status_code == 200
    user = await _user(database, "cookie-keeper")
    cookies = await session_cookies(database, test_keys, user)
    assert (await client.get("/api/v1/auth/me", cookies=cookies)).status_code == 200
