"""Every identity endpoint, called by another user with the victim's ids: 404 (or 403
for administrator-only collections), nothing leaked, nothing changed."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from tests.identity.conftest import ORIGIN, bearer, login, password_user
from tests.support.identity import make_user
from tests.support.soft_authenticator import SoftAuthenticator


async def test_cross_tenant_matrix(client: httpx.AsyncClient, database: Database) -> None:
    alice_id = await password_user(database, "alice")
    alice_tokens = (await login(client, "alice")).json()
    alice = {"Authorization": f"Bearer {alice_tokens['access_token']}"}
    key = (await client.post("/api/v1/api-keys", headers=alice, json={"name": "k"})).json()
    await client.put("/api/v1/users/me/oauth/github", headers=alice,
                     json={"access_token": "gho_alice_private_token"})
    await client.patch("/api/v1/users/me/profile", headers=alice, json={"bio": "alice-bio"})
    begin = (await client.post("/api/v1/auth/passkeys/register/begin", headers=alice,
                               json={})).json()
    passkey = (await client.post("/api/v1/auth/passkeys/register/finish", headers=alice, json={
        "challenge_id": begin["challenge_id"],
        "credential": SoftAuthenticator().create(begin["options"], origin=ORIGIN)})).json()
    device = (await client.get("/api/v1/users/me/devices", headers=alice)).json()[0]["id"]
    group = (await client.post("/api/v1/groups", headers=alice, json={"name": "secret-club"})).json()
    pending = (await client.post("/api/v1/auth/passkeys/register/begin", headers=alice,
                                 json={})).json()

    carol_id, carol = await make_user(database, username="carol")
    invited = await client.post(f"/api/v1/groups/{group['id']}/members", headers=alice,
                                json={"user": str(carol_id)})
    assert invited.status_code == 202, invited.text
    invitation = invited.json()["id"]

    _, bob = await make_user(database, username="bob")
    a, s, g = alice_id, alice_tokens["session_id"], group["id"]
    cases: list[tuple[str, str, dict[str, object] | None, int]] = [
        ("GET", f"/api/v1/users/{a}", None, 404),
        ("PATCH", f"/api/v1/users/{a}", {"full_name": "pwned"}, 404),
        ("DELETE", f"/api/v1/users/{a}", None, 404),
        ("POST", f"/api/v1/users/{a}/approve", None, 403),
        ("GET", f"/api/v1/users/{a}/settings", None, 404),
        ("PATCH", f"/api/v1/users/{a}/settings", {"theme": "light"}, 404),
        ("GET", f"/api/v1/users/{a}/profile", None, 404),
        ("PATCH", f"/api/v1/users/{a}/profile", {"bio": "pwned"}, 404),
        ("GET", f"/api/v1/users/{a}/sessions", None, 404),
        ("POST", f"/api/v1/users/{a}/sessions/revoke", None, 404),
        ("DELETE", f"/api/v1/users/{a}/2fa", None, 404),
        ("GET", f"/api/v1/users/{a}/devices", None, 404),
        ("PATCH", f"/api/v1/users/{a}/devices/{device}", {"is_trusted": True}, 404),
        ("PATCH", f"/api/v1/users/me/devices/{device}", {"is_trusted": True}, 404),
        ("DELETE", f"/api/v1/users/me/devices/{device}", None, 404),
        ("GET", f"/api/v1/users/{a}/oauth", None, 404),
        ("GET", f"/api/v1/users/{a}/oauth/github", None, 404),
        ("PUT", f"/api/v1/users/{a}/oauth/github", {"access_token": "planted"}, 404),
        ("PATCH", f"/api/v1/users/{a}/oauth/github", {"access_token": "planted"}, 404),
        ("DELETE", f"/api/v1/users/{a}/oauth/github", None, 404),
        ("DELETE", f"/api/v1/auth/sessions/{s}", None, 404),
        ("PATCH", f"/api/v1/auth/passkeys/{passkey['id']}", {"name": "pwned"}, 404),
        ("DELETE", f"/api/v1/auth/passkeys/{passkey['id']}", None, 404),
        ("POST", "/api/v1/auth/passkeys/register/finish",
         {"challenge_id": pending["challenge_id"], "credential": {"id": "x"}}, 400),
        ("DELETE", f"/api/v1/api-keys/{key['id']}", None, 404),
        ("GET", f"/api/v1/api-keys?user_id={a}", None, 404),
        ("POST", f"/api/v1/api-keys?user_id={a}", {"name": "planted"}, 404),
        ("GET", f"/api/v1/groups/{g}", None, 404),
        ("PATCH", f"/api/v1/groups/{g}", {"name": "pwned"}, 404),
        ("DELETE", f"/api/v1/groups/{g}", None, 404),
        ("GET", f"/api/v1/groups/{g}/members", None, 404),
        ("POST", f"/api/v1/groups/{g}/members", {"user": "bob"}, 404),
        ("PATCH", f"/api/v1/groups/{g}/members/{a}", {"role": "member"}, 404),
        ("DELETE", f"/api/v1/groups/{g}/members/{a}", None, 404),
        ("GET", f"/api/v1/groups/{g}/invitations", None, 404),
        ("DELETE", f"/api/v1/groups/{g}/invitations/{invitation}", None, 404),
        ("POST", f"/api/v1/groups/invitations/{invitation}/accept", None, 404),
        ("POST", f"/api/v1/groups/invitations/{invitation}/decline", None, 404),
        ("GET", "/api/v1/users", None, 403),
        ("POST", "/api/v1/users", {"username": "x1x", "email": "x@example.com"}, 403),
        ("GET", "/api/v1/groups?all=true", None, 403),
    ]
    secrets = ("alice", str(a), s, key["key"], key["prefix"], "gho_alice", "alice-bio",
               "secret-club", passkey["id"], device)
    for method, path, body, expected in cases:
        answer = await client.request(method, path, headers=bob, json=body)
        assert answer.status_code == expected, (method, path, answer.status_code, answer.text)
        assert answer.headers["content-type"] == "application/problem+json", (method, path)
        leaked = [x for x in secrets if x in answer.text]
        assert not leaked, (method, path, leaked)

    # Nothing of alice's changed: her session, key, passkey, device, group and data live.
    assert (await client.get("/api/v1/auth/me", headers=alice)).json()["full_name"] is None
    key_headers = {"Authorization": f"Bearer {key['key']}"}
    assert (await client.get("/api/v1/auth/me", headers=key_headers)).status_code == 200
    assert [p["credential_name"] for p in (await client.get(
        "/api/v1/auth/passkeys", headers=alice)).json()] == ["Passkey"]
    devices = (await client.get("/api/v1/users/me/devices", headers=alice)).json()
    assert [(d["id"], d["is_trusted"]) for d in devices] == [(device, False)]
    assert (await client.get(f"/api/v1/groups/{g}", headers=alice)).json()["name"] == "secret-club"
    assert [i["id"] for i in (await client.get("/api/v1/groups/invitations",
                                                headers=carol)).json()["items"]] == [invitation]
    assert (await client.get("/api/v1/groups/invitations", headers=bob)).json()["items"] == []
    assert (await client.get("/api/v1/users/me/profile", headers=alice)).json()["bio"] == "alice-bio"
    assert (await client.get("/api/v1/users/me/settings", headers=alice)).json()["theme"] == "dark"
    oauth = (await client.get("/api/v1/users/me/oauth/github", headers=alice)).json()
    assert oauth["access_token_hint"] == "...oken"
    keys = (await client.get("/api/v1/api-keys", headers=alice)).json()
    assert [k["name"] for k in keys] == ["k"]
    async with database.transaction() as session:
        planted = (await session.execute(text(
            "SELECT count(*) FROM api_keys WHERE name = 'planted'"))).scalar_one()
    assert planted == 0
    assert uuid.UUID(str(a))


async def test_admin_naming_an_unknown_account_gets_404(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """An administrator naming an account that does not exist gets 404 ("no such user"),
    not an empty success (and no `session.revoked_by_admin` audit of a ghost)."""
    ghost = uuid.uuid4()
    answers = [
        await client.get(f"/api/v1/users/{ghost}/sessions", headers=admin_headers),
        await client.post(f"/api/v1/users/{ghost}/sessions/revoke", headers=admin_headers),
        await client.get(f"/api/v1/api-keys?user_id={ghost}", headers=admin_headers),
        await client.get(f"/api/v1/users/{ghost}/devices", headers=admin_headers),
        await client.get(f"/api/v1/users/{ghost}/oauth", headers=admin_headers),
    ]
    assert [a.status_code for a in answers] == [404] * 5, [a.text for a in answers]
    assert {a.json()["detail"] for a in answers} == {"no such user"}


async def test_a_device_is_reached_only_under_its_owner(
    client: httpx.AsyncClient, database: Database
) -> None:
    """/users/{another user's id}/devices/{my device} is a 404 for a non-administrator
    (another user's id is 404 unless administrator), not served as /users/me; an
    administrator must name the device's owner too."""
    await password_user(database, "dpa")
    other = await password_user(database, "dpb")
    await password_user(database, "dpadmin", admin=True)
    headers = await bearer(client, "dpa")
    admin = await bearer(client, "dpadmin")
    device = (await client.get("/api/v1/users/me/devices", headers=headers)).json()[0]["id"]
    for method, body in (("PATCH", {"is_trusted": True}), ("DELETE", None)):
        for who, path_user in ((headers, other), (admin, other), (admin, "me")):
            answer = await client.request(method, f"/api/v1/users/{path_user}/devices/{device}",
                                          headers=who, json=body)
            assert answer.status_code == 404, (method, answer.text)
    devices = (await client.get("/api/v1/users/me/devices", headers=headers)).json()
    assert [(d["id"], d["is_trusted"]) for d in devices] == [(device, False)]
    owner = (await client.get("/api/v1/users/me", headers=headers)).json()["id"]
    trusted = await client.patch(f"/api/v1/users/{owner}/devices/{device}", headers=admin,
                                 json={"is_trusted": True})
    assert trusted.status_code == 200 and trusted.json()["is_trusted"] is True
