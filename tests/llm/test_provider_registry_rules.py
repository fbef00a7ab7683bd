"""The provider registry's rules under races and odd input: names unique whatever their
case (also at once), edits racing deletions, a changed default model, weights as stored,
credentials in extra headers kept out of answers and errors, bounded configs and model
lists."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from roost.db.migrate import downgrade, upgrade
from roost.llm.schemas import MAX_MODELS
from tests.llm.test_provider_registry import Headers, _create, test_settings  # noqa: F401
from tests.support.identity import make_user
from tests.support.openai_stub import Fail, Models, StubServer

PROVIDERS = "/api/v1/llm/providers"


async def _same_name_count(database: Database, name: str) -> int:
    async with database.transaction() as s:
        count: int = (await s.execute(text(
            "SELECT count(*) FROM llm_providers WHERE lower(name) = lower(:n)"),
            {"n": name})).scalar_one()
    return count


async def test_names_differing_only_in_case_cannot_both_be_created_at_once(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """Provider names are unique case-insensitively (P1 after p1 is a 409), also when the
    creates arrive together: one 201, the others 409 naming the name."""
    for i in range(3):
        answers = await asyncio.gather(*[
            _create(client, admin_headers, name=name, type="openai", base_url=stub.base_url)
            for name in (f"race{i}", f"RACE{i}", f"Race{i}")])
        assert sorted(r.status_code for r in answers) == [201, 409, 409], \
            [r.text for r in answers]
        assert all("already exists" in r.json()["detail"] for r in answers
                   if r.status_code == 409)
        assert await _same_name_count(database, f"race{i}") == 1


async def test_renames_to_names_differing_only_in_case_at_once_leave_one(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """Two providers renamed together to 'same' and 'SAME': one rename is a 409, so no two
    providers end up with names that differ only in case."""
    for i in range(3):
        a = (await _create(client, admin_headers, name=f"a{i}", type="openai",
                           base_url=stub.base_url)).json()["id"]
        b = (await _create(client, admin_headers, name=f"b{i}", type="openai",
                           base_url=stub.base_url)).json()["id"]
        answers = await asyncio.gather(
            client.patch(f"{PROVIDERS}/{a}", json={"name": f"same{i}"}, headers=admin_headers),
            client.patch(f"{PROVIDERS}/{b}", json={"name": f"SAME{i}"}, headers=admin_headers))
        assert sorted(r.status_code for r in answers) == [200, 409], [r.text for r in answers]
        assert await _same_name_count(database, f"same{i}") == 1
    # A provider may still change the case of its own name.
    renamed = await client.patch(f"{PROVIDERS}/{a}", json={"name": "A-0"}, headers=admin_headers)
    assert renamed.status_code == 200 and renamed.json()["name"] == "A-0", renamed.text


async def test_the_migration_renames_the_later_of_names_differing_only_in_case(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """Migration 1260 (a unique index on lower(name)) does not fail on an install holding
    'dup' and 'DUP' (allowed before): the older keeps its name, the later one becomes
    'DUP-<its id>'."""
    first = (await _create(client, admin_headers, name="dup", type="openai",
                           base_url=stub.base_url)).json()["id"]
    later = (await _create(client, admin_headers, name="other", type="openai",
                           base_url=stub.base_url)).json()["id"]
    await downgrade(database.engine, "1250")
    async with database.transaction() as s:
        await s.execute(text("UPDATE llm_providers SET name = 'DUP' WHERE id = :i"),
                        {"i": later})
    await upgrade(database.engine)
    names = {p["id"]: p["name"] for p in
             (await client.get(PROVIDERS, headers=admin_headers)).json()}
    assert names == {first: "dup", later: f"DUP-{later}"}
    again = await _create(client, admin_headers, name="Dup", type="openai",
                          base_url=stub.base_url)
    assert again.status_code == 409, again.text


async def test_an_edit_racing_a_delete_is_a_404_not_a_500(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
) -> None:
    """A PATCH of a provider another administrator deletes at the same moment answers 404
    (as DELETE racing DELETE does), never a 500 (StaleDataError)."""
    for i in range(6):
        pid = (await _create(client, admin_headers, name=f"p{i}", type="openai",
                             base_url=stub.base_url, model="m")).json()["id"]
        answers = await asyncio.gather(
            client.patch(f"{PROVIDERS}/{pid}", json={"weight": 2}, headers=admin_headers),
            client.delete(f"{PROVIDERS}/{pid}", headers=admin_headers),
            client.patch(f"{PROVIDERS}/{pid}", json={"name": f"q{i}"}, headers=admin_headers))
        assert all(r.status_code in (200, 204, 404) for r in answers), \
            [(r.status_code, r.text[:200]) for r in answers]
        assert answers[1].status_code == 204


async def test_a_changed_default_model_is_no_longer_listed_or_routed(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """Fixing a typo in a provider's default model (never synced) leaves only the new name:
    the old one is neither the default nor a synced model, so it is not listed by
    /v1/models and a call naming it is a 404 model_not_found; a default set to null
    leaves nothing routed by name."""
    _, user = await make_user(database)
    pid = (await _create(client, admin_headers, name="s", type="openai", base_url=stub.base_url,
                         model="stub-modle")).json()["id"]
    patched = await client.patch(f"{PROVIDERS}/{pid}", headers=admin_headers,
                                 json={"model": "stub-model"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["last_models_sync"] is None
    assert patched.json()["models"] == {"stub-model": True}
    assert patched.json()["total_models"] == 1
    listed = await client.get("/v1/models", headers=user)
    assert [m["id"] for m in listed.json()["data"]] == ["stub-model"], listed.text
    typo = await client.post("/v1/chat/completions", headers=user, json={
        "model": "stub-modle", "messages": [{"role": "user", "content": "hi"}]})
    assert typo.status_code == 404, typo.text[:300]
    cleared = await client.patch(f"{PROVIDERS}/{pid}", headers=admin_headers,
                                 json={"model": None})
    assert cleared.json()["models"] == {} and cleared.json()["enabled_models"] == 0
    assert (await client.get("/v1/models", headers=user)).json()["data"] == []


async def test_a_synced_model_stays_when_the_default_changes(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
) -> None:
    """After a sync, a default model the provider listed stays among its models when
    another default is chosen."""
    pid = (await _create(client, admin_headers, name="s", type="openai", base_url=stub.base_url,
                         model="stub-model")).json()["id"]
    stub.script(Models(ids=("stub-model", "other")))
    synced = await client.post(f"{PROVIDERS}/{pid}/sync-models", headers=admin_headers)
    assert synced.status_code == 200, synced.text
    patched = await client.patch(f"{PROVIDERS}/{pid}", headers=admin_headers,
                                 json={"model": "other"})
    assert patched.json()["models"] == {"stub-model": True, "other": True}


async def test_the_weight_answered_is_the_weight_stored(
    client: httpx.AsyncClient, admin_headers: Headers,
) -> None:
    """The create/update answer shows the weight as stored (two decimals, half away from
    zero as PostgreSQL rounds), not the value sent: 0.001 was answered as 0.001 but stored
    (and shown by GET, used by votes) as 0."""
    for i, (weight, stored) in enumerate(((0.001, 0.0), (0.005, 0.01), (1.234, 1.23))):
        created = await _create(client, admin_headers, name=f"w{i}", type="openai",
                                base_url="http://127.0.0.1:1/v1", weight=weight)
        assert created.status_code == 201, created.text
        got = await client.get(f"{PROVIDERS}/{created.json()['id']}", headers=admin_headers)
        assert created.json()["weight"] == got.json()["weight"] == stored
        patched = await client.patch(f"{PROVIDERS}/{created.json()['id']}",
                                     json={"weight": weight + 1}, headers=admin_headers)
        got = await client.get(f"{PROVIDERS}/{created.json()['id']}", headers=admin_headers)
        assert patched.json()["weight"] == got.json()["weight"] == stored + 1


async def test_credentials_in_extra_headers_are_not_shown_in_answers_or_errors(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
) -> None:
    """docs/chat.md sends 'other credentials' to config.extra_headers (and refuses them in
    base_url because they would be shown in answers): a header's value is shown as '***'
    by every answer, and quoted by no provider error, as the api_key is not.  A PATCH
    sending '***' back keeps the stored value."""
    secret = "cfsecret-7f3a9b2c4d"
    created = await _create(client, admin_headers, name="s", type="openai",
                            base_url=stub.base_url, model="stub-model",
                            config={"extra_headers": {"CF-Access-Client-Secret": secret,
                                                      "X-Team": "a"}})
    assert created.status_code == 201 and secret not in created.text
    assert created.json()["config"]["extra_headers"] == {"CF-Access-Client-Secret": "***",
                                                         "X-Team": "***"}
    pid = created.json()["id"]
    got = await client.get(f"{PROVIDERS}/{pid}", headers=admin_headers)
    listed = await client.get(PROVIDERS, headers=admin_headers)
    assert got.status_code == 200 and secret not in got.text and secret not in listed.text

    # The configuration shown, edited and sent back, keeps the secret.
    config = {**got.json()["config"], "timeout": 30}
    config["extra_headers"] = {**config["extra_headers"], "X-Team": "b"}
    patched = await client.patch(f"{PROVIDERS}/{pid}", json={"config": config},
                                 headers=admin_headers)
    assert patched.status_code == 200 and secret not in patched.text, patched.text
    healthy = await client.post(f"{PROVIDERS}/{pid}/health", headers=admin_headers)
    assert healthy.json()["health_status"] == "healthy", healthy.text
    sent = stub.requests()[-1].headers
    assert sent["cf-access-client-secret"] == secret and sent["x-team"] == "b"
    unknown = await client.patch(f"{PROVIDERS}/{pid}", headers=admin_headers, json={
        "config": {"extra_headers": {"X-Other": "***"}}})
    assert unknown.status_code == 400 and "X-Other" in unknown.json()["detail"], unknown.text

    stub.script(Fail(403, f"bad access secret {secret}", times=None))
    health = await client.post(f"{PROVIDERS}/{pid}/health", headers=admin_headers)
    assert health.json()["health_status"] == "unhealthy"
    assert secret not in health.text and "***" in health.json()["health_error"], health.text
    sync = await client.post(f"{PROVIDERS}/{pid}/sync-models", headers=admin_headers)
    assert sync.status_code == 409 and secret not in sync.text, sync.text


async def test_a_masked_header_value_on_create_is_refused(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
) -> None:
    """Cloning a provider by POSTing the config a GET showed: a new provider has no header
    stored, so "***" is the 400 a PATCH gives for a header not stored (it was a 201, and
    the clone sent the literal "***" as its credential header)."""
    source = await _create(client, admin_headers, name="src", type="openai",
                           base_url=stub.base_url, model="stub-model",
                           config={"extra_headers": {"X-Team": "team-credential-1"}})
    shown = source.json()["config"]
    assert shown == {"extra_headers": {"X-Team": "***"}}
    clone = await _create(client, admin_headers, name="clone", type="openai",
                          base_url=stub.base_url, model="stub-model", config=shown)
    assert clone.status_code == 400 and "X-Team" in clone.json()["detail"], clone.text
    listed = (await client.get(PROVIDERS, headers=admin_headers)).json()
    assert [p["name"] for p in listed] == ["src"]


async def test_blank_models_and_nested_secrets_are_refused(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
) -> None:
    """A default model of only spaces (listed by /v1/models, never served) and a secret
    key nested in config ({"auth": {"api_key": ...}}, echoed back) are 422s on create and
    update; header names in extra_headers are not config keys."""
    for body in ({"model": "  "}, {"model": ""},
                 {"config": {"auth": {"api_key": "sk-nested"}}},
                 {"config": {"list": [{"Token": "t"}]}}):
        created = await _create(client, admin_headers, name="s", type="openai",
                                base_url=stub.base_url, **body)
        assert created.status_code == 422 and "sk-nested" not in created.text, created.text
    pid = (await _create(client, admin_headers, name="s", type="openai", base_url=stub.base_url,
                         config={"extra_headers": {"Token": "t"}})).json()["id"]
    for body in ({"model": " "}, {"config": {"auth": {"api_key": "sk-nested"}}}):
        patched = await client.patch(f"{PROVIDERS}/{pid}", json=body, headers=admin_headers)
        assert patched.status_code == 422, patched.text


async def test_a_sync_keeps_at_most_max_models(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
) -> None:
    """A provider listing more than MAX_MODELS models keeps the first ones listed, its
    default model among them (the list is in every answer about the provider)."""
    pid = (await _create(client, admin_headers, name="s", type="openai", base_url=stub.base_url,
                         model="the-default")).json()["id"]
    stub.script(Models(ids=tuple(f"m{i}" for i in range(MAX_MODELS + 5))))
    synced = await client.post(f"{PROVIDERS}/{pid}/sync-models", headers=admin_headers)
    assert synced.status_code == 200, synced.text[:300]
    models = synced.json()["models"]
    assert len(models) == synced.json()["total_models"] == MAX_MODELS
    assert "the-default" in models and "m0" in models and f"m{MAX_MODELS - 1}" not in models
