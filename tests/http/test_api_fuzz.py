"""Property-based fuzzing of the whole OpenAPI surface against what it promises.

Schemathesis generates valid and invalid requests for every operation in
/openapi.json and sends them to a real ``roost serve`` process, as the operator, and
checks that no input causes a 5xx, that every status, content type and body is one the
document declares for that operation, that invalid input is refused, and that a method
the path does not serve answers 405 with a correct ``Allow`` header.

The coverage phase sends every operation its deterministic boundary and invalid values
(about 13,000 requests); the fuzzing and stateful phases add random ones, 4 per operation
(each random case costs about three coverage cases; the suite's time limit sets the
number: this test is its longest, four minutes on the CI machine with 6). Then the
fuzzing and stateful phases again as a user who is not an administrator (6 per
operation): the paths that ownership checks and row-level security take.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import httpx
from tests.support.pg import PgTestServer, unique_db_name
from tests.support.server import RunningServer, roost_server

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
DEAD_PROXY = "http://127.0.0.1:9"
# Registering an LLM provider is the one way a generated request could make Roost call a
# generated address (chat, /v1 and health checks call registered providers), and this
# machine must never send traffic off loopback.  Provider input validation is covered by
# tests/chat; without providers, chat and /v1 answer 409/404 here without any call.
# Registering an MCP server is the other (a generated URL is resolved, a generated stdio
# command would be run); tests/tools covers its validation.  Without servers, discovery,
# health checks and MCP tool calls answer 404.
NO_OUTBOUND = ["--exclude-name", "POST /api/v1/llm/providers",
               "--exclude-name", "POST /api/v1/mcp-servers"]
CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_schema_conformance", "negative_data_rejection", "unsupported_method",
    "allow_header_conformance",
])


def _schemathesis(server: RunningServer, token: str, *extra: str) -> None:
    result = subprocess.run(
        [SCHEMATHESIS, "run", f"{server.base_url}/openapi.json",
         "--checks", CHECKS, "--header", f"Authorization: Bearer {token}",
         "--request-timeout", "20", "--exclude-path", "/metrics", *NO_OUTBOUND, *extra],
        capture_output=True, text=True, timeout=900, check=False,
    )
    # The errors and failures sections first: the warnings after them can fill any tail
    # (a run with only an error, such as a request past its timeout, showed just warnings).
    sections = [result.stdout[at:at + 6000] for at in (
        result.stdout.find(title) for title in ("ERRORS", "FAILURES")) if at >= 0]
    shown = "\n".join(sections) or result.stdout[-6000:]
    assert result.returncode == 0, shown + result.stderr[-2000:]


def test_every_operation_keeps_its_documented_contract(
    pg_server: PgTestServer, template_db: str, tmp_path: Path
) -> None:
    """As the operator (every operation reachable), then as a user who is not an
    administrator (the paths row-level security and ownership checks take: moving a
    chat session into one's own project once answered 500 here, and only here)."""
    name = unique_db_name("fuzz")
    asyncio.run(pg_server.create_database(name, template=template_db))
    token = "rst_admin_fuzzing_token_0123456789"
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(name), "ROOST_DATA_DIR": str(tmp_path),
           "ROOST_ADMIN_TOKEN": token, "ROOST_LOG_LEVEL": "warning",
           # Second wall against outbound traffic: any HTTP client that honours the
           # environment goes to a closed loopback port instead of a generated host.
           "HTTP_PROXY": DEAD_PROXY, "HTTPS_PROXY": DEAD_PROXY, "ALL_PROXY": DEAD_PROXY,
           "NO_PROXY": ""}
    try:
        with roost_server(env) as server:
            _schemathesis(server, token, "--max-examples", "4", "--seed", "20261125")
            user_key = _user_key(server.base_url, token)
            _schemathesis(server, user_key, "--phases", "fuzzing,stateful",
                          "--max-examples", "6", "--seed", "20261204")
        assert "Traceback" not in server.output, server.output[-4000:]
    finally:
        asyncio.run(pg_server.drop_database(name))


def _user_key(base_url: str, admin_token: str) -> str:
    """An API key of a user who is not an administrator (nor root: the first account
    created is, so another one comes first)."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(base_url=base_url, timeout=30) as http:
        for login in ("fuzz-root", "fuzz-user"):
            made = http.post("/api/v1/users", headers=admin, json={
                "username": login, "email": f"{login}@example.com",
                "password": "a long fuzzing password"})
            assert made.status_code == 201, made.text
        created = http.post("/api/v1/api-keys", headers=admin, params={"user_id": made.json()["id"]},
                            json={"name": "fuzzing"})
        assert created.status_code == 201, created.text
        key = str(created.json()["key"])
        me = http.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"}).json()
        assert me["role"] == "user" and not me["is_root"], me
        return key
