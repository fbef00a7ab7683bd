"""The prompts API: versions, the resolution order user -> group -> factory, labels,
immutability, rendering with variables, another tenant's ids, bad input."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from roost.db.engine import Database
from roost.db.migrate import downgrade, upgrade
from roost.prompts import service
from roost.prompts.render import MAX_RENDERED_CHARS, RenderedTooLong
from tests.prompts.conftest import Headers, User, make_group, publish, resolved
from tests.support.identity import make_user


async def test_resolution_order_user_then_group_then_factory(
        client: httpx.AsyncClient, database: Database, admin_headers: Headers,
        user: User) -> None:
    user_id, headers = user
    lead_id, lead = await make_user(database)
    early = await make_group(database, (user_id, "member"), (lead_id, "admin"))
    late = await make_group(database, (lead_id, "admin"), (user_id, "member"))

    # Nothing yet: a 404 that says where it looked.
    resp = await client.get("/api/v1/prompts/resolve", headers=headers,
                            params={"key": "support.reply"})
    assert resp.status_code == 404 and "your groups'" in resp.json()["detail"]

    factory = await publish(client, admin_headers, "support.reply", "Factory text",
                            scope="factory", prompt_category="support")
    assert factory["scope"] == "factory" and factory["is_factory_default"] is True
    assert (await resolved(client, headers, "support.reply"))["id"] == factory["id"]

    # The group the user joined later publishes: it applies to its members.
    second = await publish(client, lead, "support.reply", "Late group text", scope="group",
                           group_id=str(late))
    assert (await resolved(client, headers, "support.reply"))["id"] == second["id"]
    # The group joined first wins over the one joined later.
    first = await publish(client, lead, "support.reply", "Early group text", scope="group",
                          group_id=str(early))
    assert first["version"] == 1 and first["scope"] == "group"
    assert (await resolved(client, headers, "support.reply"))["id"] == first["id"]

    # The user's own version wins over all.
    mine = await publish(client, headers, "support.reply", "My text")
    got = await resolved(client, headers, "support.reply")
    assert got["id"] == mine["id"] and got["prompt_text"] == "My text"
    # Someone outside the groups sees only the factory's.
    _, outsider = await make_user(database)
    assert (await resolved(client, outsider, "support.reply"))["id"] == factory["id"]

    # An inactive version skips its scope: the group's applies again.
    resp = await client.patch(f"/api/v1/prompts/{mine['id']}", headers=headers,
                              json={"is_active": False})
    assert resp.status_code == 200 and resp.json()["is_active"] is False
    assert (await resolved(client, headers, "support.reply"))["id"] == first["id"]

    # Leaving the groups: the factory default.
    async with database.transaction() as session:
        await session.execute(text("DELETE FROM user_group_memberships WHERE user_id = :u"),
                              {"u": user_id})
    assert (await resolved(client, headers, "support.reply"))["id"] == factory["id"]


async def test_who_may_publish_where(client: httpx.AsyncClient, database: Database,
                                     user: User, other_user: User) -> None:
    user_id, headers = user
    _, other = other_user
    resp = await client.post("/api/v1/prompts", headers=headers, json={
        "prompt_key": "chat.system", "prompt_text": "x", "scope": "factory"})
    assert resp.status_code == 403 and "administrators" in resp.json()["detail"]
    group = await make_group(database, (user_id, "member"))
    resp = await client.post("/api/v1/prompts", headers=headers, json={
        "prompt_key": "chat.system", "prompt_text": "x", "scope": "group",
        "group_id": str(group)})
    assert resp.status_code == 403 and "group's administrators" in resp.json()["detail"]
    # A group one is not in does not exist, as far as one can tell.
    resp = await client.post("/api/v1/prompts", headers=other, json={
        "prompt_key": "chat.system", "prompt_text": "x", "scope": "group",
        "group_id": str(group)})
    assert resp.status_code == 404
    resp = await client.post("/api/v1/prompts", headers=headers, json={
        "prompt_key": "chat.system", "prompt_text": "x", "scope": "group"})
    assert resp.status_code == 422 and "group_id" in resp.json()["detail"]


async def test_an_administrator_labels_a_users_version(
        client: httpx.AsyncClient, user: User, admin_headers: dict[str, str]) -> None:
    """The operator may move a user's label; the answer is the label it moved (the
    operator's own listing does not cover the user's scope: this was a 500)."""
    user_id, headers = user
    await publish(client, headers, "agent.helper", "Version one")
    v2 = await publish(client, headers, "agent.helper", "Version two", label="staging")
    resp = await client.put("/api/v1/prompts/labels", headers=admin_headers,
                            json={"prompt_id": v2["id"], "label": "production"})
    assert resp.status_code == 200, resp.text
    moved = resp.json()
    assert (moved["scope"], moved["user_id"], moved["label"], moved["version"]) == (
        "user", str(user_id), "production", 2)
    assert (await resolved(client, headers, "agent.helper"))["prompt_text"] == "Version two"


async def test_labels_staging_and_production_switch_atomically(
        client: httpx.AsyncClient, database: Database, user: User) -> None:
    _, headers = user
    v1 = await publish(client, headers, "agent.helper", "Version one")
    v2 = await publish(client, headers, "agent.helper", "Version two", label="staging")
    assert (v1["version"], v2["version"]) == (1, 2)
    assert v1["labels"] == ["production"] and v2["labels"] == ["staging"]
    assert (await resolved(client, headers, "agent.helper"))["prompt_text"] == "Version one"
    assert (await resolved(client, headers, "agent.helper", "staging"))["id"] == v2["id"]

    # Promote staging to production.
    resp = await client.put("/api/v1/prompts/labels", headers=headers,
                            json={"prompt_id": v2["id"], "label": "production"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["version"] == 2 and resp.json()["label"] == "production"
    assert (await resolved(client, headers, "agent.helper"))["prompt_text"] == "Version two"
    labels = (await client.get("/api/v1/prompts/labels", headers=headers,
                               params={"key": "agent.helper"})).json()["items"]
    assert sorted((x["label"], x["version"]) for x in labels) == [("production", 2),
                                                                  ("staging", 2)]
    # The switch is audited with where the label came from.
    async with database.transaction() as session:
        changes = await session.scalar(text(
            "SELECT changes FROM audit_logs WHERE action = 'prompt.label' "
            "ORDER BY seq DESC LIMIT 1"))
    assert changes["from_version"] == 1 and changes["to_version"] == 2

    # A version published without a label moves none.
    v3 = await publish(client, headers, "agent.helper", "Version three", label=None)
    assert v3["labels"] == [] and v3["version"] == 3
    assert (await resolved(client, headers, "agent.helper"))["version"] == 2
    keys = (await client.get("/api/v1/prompts/keys", headers=headers)).json()
    mine = next(k for k in keys if k["prompt_key"] == "agent.helper")
    assert mine["versions"] == 3 and mine["labels"] == {"production": 2, "staging": 2}


async def test_versions_are_immutable(client: httpx.AsyncClient, database: Database,
                                      user: User) -> None:
    _, headers = user
    v1 = await publish(client, headers, "notes.summary", "Summarise {{topic}}.",
                       variables=[{"name": "topic"}])
    # No API changes the text: PATCH takes is_active only.
    resp = await client.patch(f"/api/v1/prompts/{v1['id']}", headers=headers,
                              json={"prompt_text": "Changed"})
    assert resp.status_code == 422
    # Nor does SQL, even as the owner of the tables.
    for column, value in (("prompt_text", "'Changed'"), ("variables", "'[]'::jsonb"),
                          ("version", "7")):
        with pytest.raises(DBAPIError, match="immutable"):
            async with database.transaction() as session:
                await session.execute(text(
                    f"UPDATE system_prompts SET {column} = {value} WHERE id = :id"),
                    {"id": v1["id"]})
    got = (await client.get(f"/api/v1/prompts/{v1['id']}", headers=headers)).json()
    assert got["prompt_text"] == "Summarise {{topic}}." and got["version"] == 1


async def test_render_validates_variables(client: httpx.AsyncClient, user: User) -> None:
    _, headers = user
    await publish(client, headers, "mail.reply", "Dear {{ name }}, re {{subject}} ({{n}}).",
                  variables=[{"name": "name", "required": True},
                             {"name": "subject", "required": False, "default": "your mail"},
                             {"name": "n", "type": "integer", "required": False}])

    async def render(values: dict[str, object]) -> httpx.Response:
        return await client.post("/api/v1/prompts/render", headers=headers,
                                 json={"key": "mail.reply", "values": values})

    resp = await render({"name": "Ada {{subject}}", "n": 3})
    assert resp.status_code == 200, resp.text
    # A value is inserted as text, never expanded again.
    assert resp.json()["text"] == "Dear Ada {{subject}}, re your mail (3)."
    resp = await render({})
    assert resp.status_code == 422 and "'name'" in resp.json()["detail"]
    assert resp.json()["variables"] == ["name"]
    resp = await render({"name": "Ada", "nmae": "typo"})
    assert resp.status_code == 422 and "unknown variable 'nmae'" in resp.json()["detail"]
    resp = await render({"name": "Ada", "n": "three"})
    assert resp.status_code == 422 and "'n' must be a integer" in resp.json()["detail"]
    resp = await render({"name": "Ada", "n": True})
    assert resp.status_code == 422

    # Publishing a placeholder without a definition is refused, naming it.
    resp = await client.post("/api/v1/prompts", headers=headers, json={
        "prompt_key": "mail.reply", "prompt_text": "Hi {{nme}}"})
    assert resp.status_code == 422 and "nme" in resp.json()["detail"]
    resp = await client.post("/api/v1/prompts", headers=headers, json={
        "prompt_key": "mail.reply", "prompt_text": "Hi {{a}}",
        "variables": [{"name": "a"}, {"name": "a"}]})
    assert resp.status_code == 422 and "twice" in resp.json()["detail"]
    resp = await client.post("/api/v1/prompts", headers=headers, json={
        "prompt_key": "mail.reply", "prompt_text": "Hi {{a}}",
        "variables": [{"name": "a", "type": "integer", "default": "x"}]})
    assert resp.status_code == 422


async def test_rendering_is_bounded(client: httpx.AsyncClient, database: Database,
                                    user: User) -> None:
    """A rendered prompt is at most MAX_RENDERED_CHARS characters, counted before anything
    is substituted, on the API and where chat and agents use prompts: 10,000 placeholders
    times a 200-character value is a 422 (100,000 placeholders made a 2 kB value a 40 MB
    answer)."""
    user_id, headers = user
    text_ = "{{a}}" * 10_000
    bomb = await publish(client, headers, "bomb", text_, variables=[{"name": "a"}])

    async def render(value: str) -> httpx.Response:
        return await client.post("/api/v1/prompts/render", headers=headers,
                                 json={"key": "bomb", "values": {"a": value}})

    at_limit = await render("x" * (MAX_RENDERED_CHARS // 10_000))
    assert at_limit.status_code == 200 and len(at_limit.json()["text"]) == MAX_RENDERED_CHARS
    for answer in (await render("x" * 200), await client.post(
            f"/api/v1/prompts/{bomb['id']}/render", headers=headers,
            json={"values": {"a": "x" * 101}})):
        assert answer.status_code == 422, answer.status_code
        problem = answer.json()
        assert problem["title"] == "Rendered prompt too long"
        assert problem["limit"] == MAX_RENDERED_CHARS and len(answer.content) < 1000
    async with database.transaction() as session:
        with pytest.raises(RenderedTooLong):
            await service.use(session, user_id, "bomb", values={"a": "x" * 200})


async def test_another_users_prompts_are_404(client: httpx.AsyncClient, user: User,
                                             other_user: User) -> None:
    _, headers = user
    _, other = other_user
    mine = await publish(client, headers, "private.notes", "Secret instructions")
    pid = mine["id"]
    assert (await client.get(f"/api/v1/prompts/{pid}", headers=other)).status_code == 404
    resp = await client.patch(f"/api/v1/prompts/{pid}", headers=other, json={"is_active": False})
    assert resp.status_code == 404
    resp = await client.put("/api/v1/prompts/labels", headers=other,
                            json={"prompt_id": pid, "label": "production"})
    assert resp.status_code == 404
    resp = await client.post(f"/api/v1/prompts/{pid}/render", headers=other, json={})
    assert resp.status_code == 404
    resp = await client.get("/api/v1/prompts/resolve", headers=other,
                            params={"key": "private.notes"})
    assert resp.status_code == 404
    listed = (await client.get("/api/v1/prompts", headers=other)).json()["items"]
    assert all(p["prompt_key"] != "private.notes" for p in listed)
    labels = (await client.get("/api/v1/prompts/labels", headers=other)).json()["items"]
    assert all(x["prompt_key"] != "private.notes" for x in labels)
    unknown = uuid.uuid4()
    assert (await client.get(f"/api/v1/prompts/{unknown}", headers=headers)).status_code == 404


async def test_list_filters_and_pages(client: httpx.AsyncClient, user: User) -> None:
    _, headers = user
    for i in range(3):
        await publish(client, headers, "list.a", f"A{i}", prompt_category="alpha")
    await publish(client, headers, "list.b", "B", prompt_category="beta")
    page = (await client.get("/api/v1/prompts", headers=headers,
                             params={"key": "list.a", "limit": 2})).json()
    assert [p["version"] for p in page["items"]] == [3, 2] and page["next_cursor"]
    rest = (await client.get("/api/v1/prompts", headers=headers, params={
        "key": "list.a", "limit": 2, "cursor": page["next_cursor"]})).json()
    assert [p["version"] for p in rest["items"]] == [1] and rest["next_cursor"] is None
    beta = (await client.get("/api/v1/prompts", headers=headers,
                             params={"category": "beta", "scope": "user"})).json()["items"]
    assert [p["prompt_key"] for p in beta] == ["list.b"]
    # The factory's agent.system (the migration's) is in everyone's scopes.
    factory = (await client.get("/api/v1/prompts", headers=headers,
                                params={"scope": "factory"})).json()["items"]
    assert "agent.system" in {p["prompt_key"] for p in factory}


@pytest.mark.parametrize(("body", "status"), [
    ({"prompt_key": "Bad Key", "prompt_text": "x"}, 422),
    ({"prompt_key": "ok", "prompt_text": ""}, 422),
    ({"prompt_key": "ok", "prompt_text": 5}, 422),
    ({"prompt_key": "ok", "prompt_text": "x", "label": "Prod!"}, 422),
    ({"prompt_key": "ok", "prompt_text": "x", "scope": "planet"}, 422),
    ({"prompt_key": "ok", "prompt_text": "x", "variables": [{"name": "1x"}]}, 422),
    ({"prompt_key": "ok", "prompt_text": "x", "surprise": 1}, 422),
    # NUL: PostgreSQL cannot store it (was the database's generic 400).
    ({"prompt_key": "ok", "prompt_text": "a\u0000b"}, 422),
    ({"prompt_key": "ok", "prompt_text": "x", "description": "\u0000"}, 422),
    ({"prompt_key": "ok", "prompt_text": "{{a}}", "variables": [{"name": "a", "default": "\u0000"}]},
     422),
])
async def test_bad_bodies_are_4xx_problems(client: httpx.AsyncClient, user: User,
                                           body: dict[str, object], status: int) -> None:
    _, headers = user
    resp = await client.post("/api/v1/prompts", headers=headers, json=body)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")


async def test_malformed_json_and_queries(client: httpx.AsyncClient, user: User) -> None:
    _, headers = user
    resp = await client.post("/api/v1/prompts", headers={**headers,
                                                          "Content-Type": "application/json"},
                             content=b'{"prompt_key": ')
    assert resp.status_code == 400
    resp = await client.get("/api/v1/prompts/resolve", headers=headers,
                            params={"key": "x", "label": "NOPE!"})
    assert resp.status_code == 422
    resp = await client.get("/api/v1/prompts", headers=headers, params={"cursor": "zz"})
    assert resp.status_code == 400
    resp = await client.put("/api/v1/prompts/labels", headers=headers,
                            json={"prompt_id": "not-a-uuid", "label": "production"})
    assert resp.status_code == 422


async def test_row_level_security_hides_other_users_rows(
        client: httpx.AsyncClient, database: Database, user: User, other_user: User) -> None:
    """The second wall: raw SQL in another user's scope sees only their rows and the
    factory's, and cannot publish a factory default or into someone else's scope."""
    from roost.identity.tenancy import apply_principal
    from roost.principal import Principal

    user_id, headers = user
    other_id, _ = other_user
    await publish(client, headers, "rls.check", "Mine")
    other = Principal(user_id=other_id, is_admin=False, kind="api_key")
    async with database.transaction() as session:
        await apply_principal(session, other)
        keys = set((await session.scalars(text(
            "SELECT DISTINCT prompt_key FROM system_prompts"))).all())
        labels = (await session.scalar(text(
            "SELECT count(*) FROM system_prompt_labels WHERE prompt_key = 'rls.check'")))
    assert "rls.check" not in keys and "agent.system" in keys and labels == 0
    for values in ("NULL, true", f"'{user_id}', false"):
        with pytest.raises(DBAPIError, match="row-level security"):
            async with database.transaction() as session:
                await apply_principal(session, other)
                await session.execute(text(
                    "INSERT INTO system_prompts (id, user_id, is_factory_default, prompt_key, "
                    f"prompt_name, prompt_text) VALUES (gen_random_uuid(), {values}, 'x', "
                    "'x', 'x')"))


async def test_keys_category_filter_picks_whole_keys_by_their_latest_category(
        client: httpx.AsyncClient, user: User) -> None:
    """/keys?category=alpha never answers a key whose labels point past its latest version
    (the filter counted only alpha's versions but listed all of the key's labels)."""
    _, headers = user
    await publish(client, headers, "cat.k", "v1", prompt_category="alpha")
    await publish(client, headers, "cat.k", "v2", prompt_category="beta")
    keys = (await client.get("/api/v1/prompts/keys", headers=headers,
                             params={"category": "alpha"})).json()
    listed = [k for k in keys if k["prompt_key"] == "cat.k"]
    for k in listed:
        assert all(v <= k["latest_version"] for v in k["labels"].values()), k
    assert listed == []  # its latest version is in beta: the key is beta's, whole
    [k] = [k for k in (await client.get("/api/v1/prompts/keys", headers=headers,
                                        params={"category": "beta"})).json()
           if k["prompt_key"] == "cat.k"]
    assert (k["prompt_category"], k["versions"], k["latest_version"], k["labels"]) == (
        "beta", 2, 2, {"production": 2})


async def test_a_category_typed_decomposed_is_the_composed_one(
        client: httpx.AsyncClient, user: User) -> None:
    """"café" typed decomposed (as macOS keyboards send it) is the same category as typed
    composed: stored composed, and either spelling of the filter finds both keys."""
    _, headers = user
    await publish(client, headers, "a.k", "t", prompt_category="caf\u00e9")
    await publish(client, headers, "b.k", "t", prompt_category="cafe\u0301")
    for spelled in ("caf\u00e9", "cafe\u0301"):
        keys = (await client.get("/api/v1/prompts/keys", headers=headers,
                                 params={"category": spelled})).json()
        assert sorted((k["prompt_key"], k["prompt_category"]) for k in keys) == [
            ("a.k", "caf\u00e9"), ("b.k", "caf\u00e9")], keys
        versions = (await client.get("/api/v1/prompts", headers=headers,
                                     params={"category": spelled})).json()["items"]
        assert sorted(v["prompt_key"] for v in versions) == ["a.k", "b.k"]


async def test_a_category_of_100_characters_typed_decomposed_is_accepted(
        client: httpx.AsyncClient, user: User) -> None:
    """A category's limit (100) counts it composed, as stored: 100 "é" typed decomposed
    (200 code points) publish, stored composed, and 101 are a 422 naming the field (the
    100 were refused, the length counted before composing)."""
    _, headers = user
    made = await publish(client, headers, "long.cat", "t", prompt_category="e\u0301" * 100)
    assert made["prompt_category"] == "\u00e9" * 100
    over = await client.post("/api/v1/prompts", headers=headers, json={
        "prompt_key": "long.cat", "prompt_text": "t", "prompt_category": "e\u0301" * 101})
    assert over.status_code == 422, over.text
    assert over.json()["errors"][0]["loc"] == ["body", "prompt_category"], over.text


@pytest.mark.parametrize("path", ["/api/v1/prompts", "/api/v1/prompts/keys"])
async def test_a_category_filter_typed_decomposed_counts_its_composed_length(
        client: httpx.AsyncClient, user: User, path: str) -> None:
    """The category filters compose theirs before counting: 60 "é" typed decomposed (120
    code points) are a 200 (they were a 422 "at most 100 characters"); a filter over 100
    characters composed is a 422 naming `category`."""
    _, headers = user
    resp = await client.get(path, headers=headers, params={"category": "e\u0301" * 60})
    assert resp.status_code == 200, resp.text
    over = await client.get(path, headers=headers, params={"category": "e\u0301" * 101})
    assert over.status_code == 422, over.text
    assert over.json()["errors"][0]["loc"] == ["query", "category"], over.text


async def test_the_migration_composes_stored_categories(
        client: httpx.AsyncClient, database: Database, user: User) -> None:
    """Migration 1380 composes the categories stored before they were (a version's text
    stays as it is): the filter then finds the key by its composed category."""
    _, headers = user
    v = await publish(client, headers, "old.k", "caf\u00e9 text", prompt_category="x")
    await downgrade(database.engine, "1370")
    async with database.transaction() as session:
        await session.execute(text("UPDATE system_prompts SET prompt_category = :c "
                                   "WHERE id = :id"), {"c": "cafe\u0301", "id": v["id"]})
    await upgrade(database.engine)
    keys = (await client.get("/api/v1/prompts/keys", headers=headers,
                             params={"category": "caf\u00e9"})).json()
    assert [(k["prompt_key"], k["prompt_category"]) for k in keys] == [("old.k", "caf\u00e9")]


async def test_text_length_errors_speak_of_characters(client: httpx.AsyncClient,
                                                      user: User) -> None:
    """An empty name or an overlong description is refused in characters, like the other
    text fields ("String should have at least 1 character"), not as a list's "items"."""
    _, headers = user
    for field, value in (("prompt_name", ""), ("description", "d" * 20_001)):
        resp = await client.post("/api/v1/prompts", headers=headers, json={
            "prompt_key": "named", "prompt_text": "x", field: value})
        assert resp.status_code == 422, resp.text
        assert "item" not in resp.text and "character" in resp.text, resp.text
