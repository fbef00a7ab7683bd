"""`roost serve` behind a TLS-terminating reverse proxy it trusts
(``ROOST_FORWARDED_ALLOW_IPS``): the console's cookies are Secure, and sign-in throttling
counts each client by its own address, so one client's failures lock out that client,
not everyone behind the proxy (docs/console.md, "Behind a reverse proxy")."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx

from roost.db.engine import Database
from roost.identity.accounts import create_user
from roost.keyfiles import KeyMaterial
from roost.principal import SYSTEM
from tests.support.pg import PgTestServer
from tests.support.server import roost_server

PASSWORD = "plum-velvet-orbit-93!"


async def _user(database: Database, name: str) -> uuid.UUID:
    async with database.transaction() as session:
        user = await create_user(session, SYSTEM, username=name, email=f"{name}@example.test",
                                 password=PASSWORD, role="user", status="active",
                                 first_becomes_root=False)
    return user.id


async def test_behind_a_trusted_proxy_cookies_are_secure_and_lockouts_are_per_client(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path,
    test_keys: KeyMaterial,
) -> None:
    await _user(database, "tess")
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "data"), "ROOST_ADMIN_TOKEN": test_keys.admin_token,
           "ROOST_SECRET_KEY": test_keys.secret_key,
           "ROOST_MESSAGE_KEYS": ",".join(test_keys.message_keys),
           "ROOST_LLM_LOCAL_MODEL": "false", "ROOST_WEBAUTHN_RP_ID": "roost.example.com",
           "ROOST_WEBAUTHN_ORIGINS": "https://roost.example.com",
           "ROOST_FORWARDED_ALLOW_IPS": "127.0.0.1"}

    def via_proxy(client_ip: str) -> dict[str, str]:
        return {"X-Forwarded-Proto": "https", "X-Forwarded-For": client_ip,
                "Host": "roost.example.com"}

    def run() -> tuple[list[str], list[int], httpx.Response]:
        with roost_server(env) as server:
            csrf = httpx.get(f"{server.base_url}/console/login",
                             headers=via_proxy("198.51.100.7")).cookies["roost_csrf"]
            with httpx.Client(base_url=server.base_url, cookies={"roost_csrf": csrf},
                              headers={"X-CSRF-Token": csrf}) as http:
                attacker = [http.post("/console/session", headers=via_proxy("203.0.113.66"),
                                      json={"login": f"nobody{i}", "password": "x" * 12})
                            .status_code for i in range(21)]
                signed = http.post("/console/session", headers=via_proxy("198.51.100.7"),
                                   json={"login": "tess", "password": PASSWORD})
                return signed.headers.get_list("set-cookie"), attacker, signed

    cookies, attacker, signed = await asyncio.to_thread(run)
    assert attacker[-1] == 429, attacker  # the attacker's own address is locked out
    assert signed.status_code == 200, signed.text  # not the user behind the same proxy
    session_cookie = next(c for c in cookies if c.startswith("roost_session="))
    assert "secure" in session_cookie.lower() and "httponly" in session_cookie.lower(), cookies
