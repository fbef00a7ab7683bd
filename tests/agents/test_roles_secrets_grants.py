"""Persona roles, the persona's secrets and tool grants (docs/agents.md "Secrets", "Tools
granted to a persona"): owners, editors and administrators manage secrets (viewers 403,
anyone else 404) and nobody ever reads a value, through any route; members read the
grants, owners and editors change them, granting only tools they may use themselves."""

from __future__ import annotations

import uuid

import httpx

from roost.db.engine import Database
from tests.agents.api import Headers, create_persona
from tests.agents.roles import Checker, make_cast, private_tool

VALUE = "sk-persona-plaintext-7b1d"


def secret(value: str = VALUE, key: str = "OPENAI_API_KEY") -> dict[str, str]:
    return {"secret_type": "llm_provider_key", "key_name": key, "value": value}


async def test_owners_and_editors_manage_a_persona_s_secrets_and_nobody_reads_a_value(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    url = f"/api/v1/personas/{c.pid}/secrets"
    first = await client.put(url, json=secret(), headers=c.owner.headers)
    assert first.status_code == 200, first.text
    sid = first.json()["id"]
    answers: list[str] = [first.text]
    expected = {c.owner: 200, c.co_owner: 200, c.editor: 200, c.viewer: 403, c.outsider: 404,
                c.group_peer: 404, c.admin: 200, c.operator: 200}
    for actor, code in expected.items():
        listed = await client.get(url, headers=actor.headers)
        typed = await client.get(url, params={"secret_type": "llm_provider_key"},
                                 headers=actor.headers)
        put = await client.put(url, json=secret(f"{VALUE}-{actor.name}", key=f"K_{actor.name}"),
                               headers=actor.headers)
        answers += [listed.text, typed.text, put.text]
        chk.check("GET /personas/{id}/secrets", actor, listed, code, leak=("OPENAI_API_KEY",))
        chk.check("GET /personas/{id}/secrets?secret_type", actor, typed, code,
                  leak=("OPENAI_API_KEY",))
        chk.check("PUT /personas/{id}/secrets", actor, put, code)
    for actor, code in ((c.viewer, 403), (c.outsider, 404), (c.group_peer, 404)):
        resp = await client.delete(f"{url}/{sid}", headers=actor.headers)
        answers.append(resp.text)
        chk.check("DELETE /personas/{id}/secrets/{sid}", actor, resp, code)
    # A secret id under another persona's path (one the editor edits): not found.
    editors_own = await create_persona(client, c.editor.headers)
    resp = await client.delete(f"/api/v1/personas/{editors_own['id']}/secrets/{sid}",
                               headers=c.editor.headers)
    chk.check("DELETE /personas/{editor's own}/secrets/{P's secret}", c.editor, resp, 404)
    # Nobody ever reads a value: no answer above carries one.
    for text_ in answers:
        chk.that(VALUE not in text_, f"a secret value in an answer: {text_[:200]}")
    resp = await client.delete(f"{url}/{sid}", headers=c.editor.headers)
    chk.check("DELETE /personas/{id}/secrets/{sid}", c.editor, resp, 204)
    chk.done()


async def test_a_secret_s_value_is_in_no_other_answer(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """The value is never out: not in the persona, its members, its audit trail as seen
    through the API, or a validation error."""
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    url = f"/api/v1/personas/{c.pid}/secrets"
    assert (await client.put(url, json=secret(), headers=c.editor.headers)).status_code == 200
    bad = await client.put(url, json={**secret(), "key_name": "bad name with spaces"},
                           headers=c.editor.headers)
    chk.check("PUT /secrets (invalid key_name)", c.editor, bad, 422)
    extra = await client.put(url, json={**secret(), "unknown": VALUE}, headers=c.editor.headers)
    chk.check("PUT /secrets (unknown field holding the value)", c.editor, extra, 422)
    for actor in c.all():
        for path in (f"/api/v1/personas/{c.pid}", f"/api/v1/personas/{c.pid}/members",
                     "/api/v1/audit/logs", f"/api/v1/audit/logs?persona_id={c.pid}",
                     f"/api/v1/personas/{c.pid}/tools"):
            resp = await client.get(path, headers=actor.headers)
            chk.that(VALUE not in resp.text, f"GET {path} as {actor.name} shows a value")
    chk.that(VALUE not in bad.text and VALUE not in extra.text, "a 422 echoes the value")
    chk.done()


async def test_members_read_grants_owners_and_editors_grant_tools_they_may_use(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    tools = f"/api/v1/personas/{c.pid}/tools"
    editors_tool = await private_tool(database, c.editor.id, name="editors_tool")
    viewers_tool = await private_tool(database, c.viewer.id, name="viewers_tool")
    outsiders_tool = await private_tool(database, c.outsider.id, name="outsiders_tool")
    granted = await client.put(f"{tools}/{editors_tool}", json={}, headers=c.editor.headers)
    chk.check("PUT /personas/{id}/tools/{own tool}", c.editor, granted, 200)
    for actor in c.all():
        resp = await client.get(tools, headers=actor.headers)
        chk.check("GET /personas/{id}/tools", actor, resp, 200 if actor in c.readers() else 404,
                  leak=("editors_tool",))
    for actor, code in ((c.viewer, 403), (c.outsider, 404), (c.group_peer, 404)):
        resp = await client.put(f"{tools}/{viewers_tool if actor is c.viewer else outsiders_tool}",
                                json={}, headers=actor.headers)
        chk.check("PUT /personas/{id}/tools/{own tool}", actor, resp, code)
        resp = await client.put(f"{tools}/{editors_tool}", json={"is_enabled": False},
                                headers=actor.headers)
        chk.check("PUT /personas/{id}/tools/{granted tool}", actor, resp, code)
        resp = await client.delete(f"{tools}/{editors_tool}", headers=actor.headers)
        chk.check("DELETE /personas/{id}/tools/{granted tool}", actor, resp, code)
    # An editor grants only a tool they may use: any other is an unknown id.
    for label, tool in (("another tenant's tool", outsiders_tool),
                        ("a viewer's tool", viewers_tool), ("an unknown id", uuid.uuid4())):
        resp = await client.put(f"{tools}/{tool}", json={}, headers=c.editor.headers)
        chk.check(f"PUT /personas/{{id}}/tools/{{{label}}}", c.editor, resp, 404,
                  leak=("outsiders_tool", "viewers_tool"))
    # Nor does the owner, who cannot use the editor's tool, change its grant: a grant is of
    # "a tool they may use themselves".
    resp = await client.put(f"{tools}/{editors_tool}", json={"max_calls_per_run": 1},
                            headers=c.owner.headers)
    chk.check("PUT /personas/{id}/tools/{editor's tool} (owner cannot use it)", c.owner, resp,
              404)
    listed = (await client.get(tools, headers=c.owner.headers)).json()
    chk.that(sorted(g["tool_id"] for g in listed) == [str(editors_tool)],
             f"grants now: {listed}")
    # Revoking needs no use of the tool (owners and editors).
    resp = await client.delete(f"{tools}/{editors_tool}", headers=c.co_owner.headers)
    chk.check("DELETE /personas/{id}/tools/{editor's tool}", c.co_owner, resp, 204)
    chk.done()
