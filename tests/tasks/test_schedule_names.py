"""Schedule names: one holding a slash is deleted by it; one typed decomposed is the
composed one (registered or deleted); invisible characters at an end are refused."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import timedelta
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.tasks import schedules
from roost.tasks.schedules import register_schedule
from tests.tasks import handlers  # noqa: F401  (registers the test task types)

API = "/api/v1/tasks"


async def test_a_schedule_whose_name_has_a_slash_can_be_deleted(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database
) -> None:
    """`reports/nightly` is a valid schedule name: DELETE .../schedules/reports%2Fnightly
    removes it (204).  The decoded slash split the path: 404 "no route", for good."""
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO task_schedules (id, name, task_type, interval_seconds, next_run_at)"
            " VALUES (:i, 'reports/nightly', 'test.noop', 60, now() + interval '1 hour')"),
            {"i": uuid.uuid4()})
    r = await client.delete(f"{API}/schedules/reports%2Fnightly", headers=admin_headers)
    assert r.status_code == 204, (r.status_code, r.text)
    names = [s["name"] for s in
             (await client.get(f"{API}/schedules", headers=admin_headers)).json()]
    assert "reports/nightly" not in names


async def test_delete_finds_a_schedule_by_its_decomposed_name(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database
) -> None:
    """The listing shows `reports.café`; an administrator whose keyboard sends the é
    decomposed (macOS) deletes it by that name: 204 (it was a 404 naming what looked like
    the very name listed)."""
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO task_schedules (id, name, task_type, interval_seconds, next_run_at)"
            " VALUES (:i, 'reports.café', 'test.noop', 60, now() + interval '1 hour')"),
            {"i": uuid.uuid4()})
    nfd = unicodedata.normalize("NFD", "reports.café")
    r = await client.delete(f"{API}/schedules/{nfd}", headers=admin_headers)
    assert r.status_code == 204, (r.status_code, r.text)


async def test_delete_finds_a_200_character_schedule_name_typed_decomposed(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database
) -> None:
    """A name's limit (200) counts it composed: a schedule of 200 "é" deleted by its name
    typed decomposed (400 code points) is a 204 (it was a 422 "at most 200 characters",
    counted on the path as sent)."""
    name = "\u00e9" * 200
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO task_schedules (id, name, task_type, interval_seconds, next_run_at)"
            " VALUES (:i, :n, 'test.noop', 60, now() + interval '1 hour')"),
            {"i": uuid.uuid4(), "n": name})
    nfd = unicodedata.normalize("NFD", name)
    r = await client.delete(f"{API}/schedules/{quote(nfd)}", headers=admin_headers)
    assert r.status_code == 204, (r.status_code, r.text)


def test_a_decomposed_twin_is_not_a_second_schedule() -> None:
    """`reports.café` typed composed in one module and decomposed in another is one
    schedule: the second registration, with another period, is refused as "already
    registered differently" (it made a look-alike second schedule firing on its own)."""
    composed = "reports.café"
    decomposed = unicodedata.normalize("NFD", composed)
    try:
        register_schedule(composed, "test.record", every=timedelta(hours=1))
        with pytest.raises(ValueError, match="already registered differently"):
            register_schedule(decomposed, "test.record", every=timedelta(hours=2))
    finally:
        schedules.unregister_schedule(composed)
        schedules.unregister_schedule(decomposed)


@pytest.mark.parametrize("name", [
    pytest.param("reports.nightly\u200b", id="trailing-zero-width-space"),
    pytest.param("\u200breports.nightly", id="leading-zero-width-space"),
    pytest.param("reports.nightly\ufeff", id="trailing-bom"),
])
def test_a_name_with_surrounding_invisible_characters_is_refused(name: str) -> None:
    """Surrounding spaces are refused (the name would look like another); so is a
    zero-width space or BOM at an end (pasted with the name), which hid the same way:
    listed as `reports.nightly`, DELETE .../reports.nightly was a 404."""
    try:
        with pytest.raises(ValueError, match="schedule name"):
            register_schedule(name, "test.record", every=timedelta(hours=1))
    finally:
        schedules.unregister_schedule(name)
