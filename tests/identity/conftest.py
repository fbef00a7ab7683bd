"""Identity test settings (small lockout numbers, a passkey relying party) and helpers."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from roost.identity.accounts import create_user
from roost.principal import SYSTEM
from roost.security.totp import TOTP_INTERVAL

PASSWORD = "plum-Quartz-river-7-kettle"
ORIGIN = "https://roost.test"


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", log_json=True, max_request_bytes=64 * 1024,
        login_max_failures_per_account=3, login_max_failures_per_ip=8, login_lockout_s=2,
        login_failure_window_s=60, webauthn_rp_id="roost.test", webauthn_origins=ORIGIN,
    )


async def password_user(
    database: Database, username: str | None = None, *, admin: bool = False,
    password: str = PASSWORD,
) -> uuid.UUID:
    name = username or f"pw-{uuid.uuid4().hex[:10]}"
    async with database.transaction() as session:
        user = await create_user(session, SYSTEM, username=name, email=f"{name}@example.test",
                                 password=password, role="admin" if admin else "user",
                                 status="active", first_becomes_root=False)
    return user.id


async def login(client: httpx.AsyncClient, username: str, password: str = PASSWORD,
                **extra: object) -> httpx.Response:
    return await client.post("/api/v1/auth/login",
                             json={"login": username, "password": password, **extra})


async def bearer(client: httpx.AsyncClient, username: str, password: str = PASSWORD) -> dict[str, str]:
    answer = await login(client, username, password)
    assert answer.status_code == 200, answer.text
    return {"Authorization": f"Bearer {answer.json()['access_token']}"}


def wait_for_fresh_totp_step(margin_s: float = 4.0) -> None:
    """Sleep past a step boundary that is less than ``margin_s`` away, so a test's codes
    all belong to the step it computed them for."""
    left = TOTP_INTERVAL - (time.time() % TOTP_INTERVAL)
    if left < margin_s:
        time.sleep(left + 0.05)
