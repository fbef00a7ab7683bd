"""What a database error a route did not expect answers: a problem with the status a
client can act on (never a 500 for what is not a bug), and the log says which."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError

from roost.http.problems import install_problem_handlers


class _DriverError(Exception):
    """A driver error as asyncpg raises it: its SQLSTATE in ``sqlstate``."""

    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"error {sqlstate}")
        self.sqlstate = sqlstate


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/fail/{sqlstate}")
    async def fail(sqlstate: str) -> None:
        raise DBAPIError("SELECT 1", {}, _DriverError(sqlstate))

    return app


@pytest.mark.parametrize(("sqlstate", "status", "detail", "retry_after"), [
    ("22003", 400, "out of range or malformed", None),  # numeric value out of range
    ("57014", 503, "took too long", None),  # statement timeout
    ("40001", 503, "collided with a concurrent one", "1"),  # serialization failure
    ("40P01", 503, "collided with a concurrent one", "1"),  # deadlock detected
    ("42501", 403, "may not make this change", None),  # row-level security refused
    ("08006", 503, "database is unavailable", "5"),  # connection failure
    ("XX000", 500, "unexpected error", None),  # internal error: a bug
])
async def test_a_database_error_answers_the_status_a_client_can_act_on(
    sqlstate: str, status: int, detail: str, retry_after: str | None,
) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=_app()),
                                 base_url="http://roost.test") as client:
        resp = await client.get(f"/fail/{sqlstate}")
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert detail in resp.json()["detail"]
    assert resp.headers.get("retry-after") == retry_after
