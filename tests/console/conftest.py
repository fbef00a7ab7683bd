"""Console fixtures: the app on a loopback port (uvicorn in this process, lifespan on), a
headless Debian chromium driven by Playwright's async API, signed-in browser contexts, a
screenshot per flow and axe accessibility checks.

Playwright's async API rather than pytest-playwright's sync fixtures: the app under test
runs on this test's event loop (its database pool is bound to it), and the sync API refuses
to start inside a running loop."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from fastapi import FastAPI

from roost.config import Settings
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.http.auth import CSRF_COOKIE, SESSION_COOKIE
from roost.identity.models import Session
from roost.keyfiles import KeyMaterial
from roost.security.tokens import issue_access_token
from tests.support.server import in_process

CHROMIUM = os.environ.get("ROOST_TEST_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = Path(__file__).parent / "screenshots"  # git-ignored
# Without these, chromium on a closed network tries (and fails) to reach its own services.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]


def _browser_missing() -> str | None:
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "needs the playwright package: pip install -e '.[dev]'"
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).exists():
        return f"needs chromium at {CHROMIUM}: apt-get install chromium (scripts/test does)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = _browser_missing()
    if missing is None:
        return
    if os.environ.get("ROOST_TEST_REQUIRE_BROWSER") == "1":
        raise pytest.UsageError(f"ROOST_TEST_REQUIRE_BROWSER=1 but the browser tests {missing}")
    skip = pytest.mark.skip(reason=missing)
    for item in items:
        if item.get_closest_marker("needs_browser") is not None:
            item.add_marker(skip)


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_timeout_s=5.0,
                    llm_local_model=False, knowledge_embedding_provider="hash",
                    tools_allowed_hosts="127.0.0.1", tools_call_timeout_s=5.0,
                    max_request_bytes=256 * 1024)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright, expect

    # expect() waits 5 s by default; a busy 2-core CI machine needs more headroom (the
    # waits end as soon as the page is right, so a quiet machine loses nothing).
    expect.set_options(timeout=20_000)

    async with async_playwright() as driver:
        launched = await driver.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest.fixture
async def console(app: FastAPI) -> AsyncIterator[str]:
    """The base URL of the app, served on loopback with its start-up hooks."""
    async with in_process(app) as base:
        yield base


@pytest.fixture
async def context(browser: Any, console: str) -> AsyncIterator[Any]:
    """A fresh browser profile (no cookies) pointed at the console."""
    ctx = await browser.new_context(base_url=console, viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(20_000)
    yield ctx
    await ctx.close()


@pytest.fixture
async def page(context: Any) -> Any:
    return await context.new_page()


@pytest.fixture
def no_script_errors(page: Any) -> Iterator[None]:
    """No page's module throws (an uncaught error would leave a page half-built); a test
    module opts in with ``pytest.mark.usefixtures("no_script_errors")``."""
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield
    assert not errors, errors


async def session_cookies(database: Database, keys: KeyMaterial,
                          user_id: uuid.UUID) -> dict[str, str]:
    """The cookies the sign-in page would set for ``user_id`` (for a real ``sessions``
    row): the session's and the CSRF token's, by name."""
    expires = utcnow() + timedelta(days=1)
    async with database.transaction() as session:
        row = Session(user_id=user_id, token_hash=uuid.uuid4().hex, expires_at=expires,
                      auth_method="password", last_used_at=utcnow())
        session.add(row)
        await session.flush()
        session_id = row.id
    token = issue_access_token(keys.secret_key, user_id=user_id, session_id=session_id,
                               ttl_seconds=86_400)
    return {SESSION_COOKIE: token, CSRF_COOKIE: uuid.uuid4().hex + uuid.uuid4().hex}


async def sign_in_as(context: Any, console: str, database: Database, keys: KeyMaterial,
                     user_id: uuid.UUID) -> None:
    """Give ``context`` a console session for ``user_id`` (``session_cookies``), skipping
    the sign-in form."""
    cookies = await session_cookies(database, keys, user_id)
    await context.add_cookies([
        {"name": name, "value": value, "url": console, "httpOnly": True, "sameSite": "Strict"}
        for name, value in cookies.items()])


async def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


async def assert_accessible(page: Any) -> None:
    """No serious or critical axe-core violation on the page as it is now."""
    from axe_playwright_python.async_playwright import Axe

    results = await Axe().run(page)
    bad = [v for v in results.response["violations"] if v.get("impact") in ("serious", "critical")]
    assert not bad, "\n".join(
        f"{v['id']} ({v['impact']}): {v['help']} -> "
        + "; ".join(str(n.get("target")) for n in v["nodes"][:5]) for v in bad)
