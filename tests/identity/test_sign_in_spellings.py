"""How what is typed at sign-in is read: Unicode spellings of the e-mail and the password
(NFC/NFKC, as registration and hashing store them), and lockouts decided by the name
typed, so that locking one of an account's names says nothing about its other one."""

from __future__ import annotations

import unicodedata

import httpx
from argon2 import PasswordHasher
from sqlalchemy import select, text, update

from roost.db.engine import Database
from roost.identity.models import User
from roost.security.passwords import verify_password
from tests.identity.conftest import PASSWORD, bearer, login, password_user


async def _create(client: httpx.AsyncClient, admin: dict[str, str], username: str, email: str,
                  password: str = PASSWORD) -> httpx.Response:
    return await client.post("/api/v1/users", headers=admin, json={
        "username": username, "email": email, "password": password})


async def test_an_email_typed_decomposed_signs_in(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """An e-mail stored as 'josé@…' (NFC, as registration normalises it) signs in when
    typed decomposed (NFD, as macOS keyboards send it)."""
    nfc = unicodedata.normalize("NFC", "josé@example.test")
    made = await _create(client, admin_headers, "jose", nfc)
    assert made.status_code == 201, made.text
    nfd = unicodedata.normalize("NFD", nfc)
    assert nfd != nfc
    answer = await login(client, nfd)
    assert answer.status_code == 200, answer.text
    assert (await login(client, " JOSÉ@Example.TEST ")).status_code == 200


async def test_a_password_typed_decomposed_signs_in(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """A password set with precomposed 'è/û' also verifies when typed decomposed (NIST
    SP 800-63B, which docs/identity.md follows, asks verifiers to normalise)."""
    pw = unicodedata.normalize("NFC", "crème-brûlée-Ovens-42")
    assert (await _create(client, admin_headers, "chef", "chef@example.test", pw)).status_code == 201
    assert (await login(client, "chef", pw)).status_code == 200
    nfd = unicodedata.normalize("NFD", pw)
    assert nfd != pw
    answer = await login(client, "chef", nfd)
    assert answer.status_code == 200, answer.text


# 1222 characters as typed ("e" + combining acute, as some keyboards send "é"), 622 once
# NFKC-normalised: the policy judges the normalised form, and so does sign-in.
LONG_DECOMPOSED = "lantern-Violet-88-oak " + "e\u0301" * 600


async def test_a_long_decomposed_password_accepted_at_creation_signs_in(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    """A password longer than the limit as typed but not once normalised is accepted, and
    then signs in: the length limit reads the same form at both ends."""
    made = await _create(client, admin_headers, "decomposed", "decomposed@example.test",
                         LONG_DECOMPOSED)
    assert made.status_code == 201, made.text
    signed_in = await login(client, "decomposed", LONG_DECOMPOSED)
    assert signed_in.status_code == 200, signed_in.text
    over = await _create(client, admin_headers, "overlong", "overlong@example.test",
                         LONG_DECOMPOSED + "e\u0301" * 403)  # 1025 normalised
    assert over.status_code == 422 and over.json()["rule"] == "max_length", over.text


async def test_a_long_decomposed_password_set_by_a_change_signs_in(
    client: httpx.AsyncClient, database: Database
) -> None:
    """A new password a password change accepted (200) signs in afterwards."""
    await password_user(database, "decomposed2")
    headers = await bearer(client, "decomposed2")
    changed = await client.post("/api/v1/auth/password", headers=headers, json={
        "current_password": PASSWORD, "new_password": LONG_DECOMPOSED})
    assert changed.status_code == 200, changed.text
    signed_in = await login(client, "decomposed2", LONG_DECOMPOSED)
    assert signed_in.status_code == 200, signed_in.text


async def test_a_hash_of_the_password_as_typed_still_verifies_and_is_renewed(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Hashes stored before normalisation (of the decomposed text as typed) keep working,
    and the first sign-in replaces them with a hash of the normalised form."""
    user_id = await password_user(database, "olde")
    typed = unicodedata.normalize("NFD", "crème-brûlée-Ovens-42")
    async with database.transaction() as session:
        await session.execute(update(User).where(User.id == user_id).values(
            hashed_password=PasswordHasher(time_cost=2, memory_cost=19_456,
                                           parallelism=1).hash(typed)))
    assert (await login(client, "olde", typed)).status_code == 200
    async with database.transaction() as session:
        stored = await session.scalar(select(User.hashed_password).where(User.id == user_id))
    assert stored is not None
    assert PasswordHasher().verify(stored, unicodedata.normalize("NFKC", typed))
    assert verify_password(stored, typed)
    assert (await login(client, "olde", unicodedata.normalize("NFC", typed))).status_code == 200


async def test_locking_a_username_out_does_not_confirm_its_email(
    client: httpx.AsyncClient, database: Database
) -> None:
    """Locking a username out does not reveal which e-mail belongs to it: the name typed
    decides the 429, so the e-mail answers as an unrelated name's e-mail does."""
    await password_user(database, "alias")  # alias@example.test
    for _ in range(3):  # the per-name limit is 3 in these tests
        await login(client, "alias", "Wrong-password-99")
    real = await login(client, "alias@example.test", "Wrong-password-99")
    for _ in range(3):
        await login(client, "noalias", "Wrong-password-99")
    fake = await login(client, "noalias@example.test", "Wrong-password-99")
    assert real.status_code == fake.status_code == 401, (real.status_code, fake.status_code)
    # Other spellings of one name are that name: they are locked out with it.
    assert (await login(client, " ALIAS ", "Wrong-password-99")).status_code == 429


async def test_the_account_total_caps_guesses_over_all_its_names(
    client: httpx.AsyncClient, database: Database
) -> None:
    """The username and the e-mail lock separately, but the account's wrong passwords
    together lock it at twice the per-name limit (6 here), even for the right password."""
    await password_user(database, "capped")
    for _ in range(3):
        assert (await login(client, "capped", "Wrong-password-99")).status_code == 401
    for _ in range(3):
        assert (await login(client, "capped@example.test", "Wrong-password-99")).status_code == 401
    # Both names are locked now, and so is the account as a whole.
    assert (await login(client, "capped@example.test")).status_code == 429
    async with database.transaction() as session:
        scopes = (await session.execute(text(
            "SELECT metadata->>'scope' FROM audit_logs WHERE action = 'auth.lockout' "
            "ORDER BY seq"))).scalars().all()
    assert scopes == ["account", "account", "account_total"]


async def test_an_administrator_finds_an_account_by_any_spelling_of_its_names(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str],
) -> None:
    """`GET /api/v1/users/{name}`: an administrator names an account by username or
    e-mail as sign-in reads them (any case, an address typed with a decomposed accent) —
    the console's limits and subscribe forms look accounts up this way; a plain user may
    not (a 422, as before), and an unknown name is a 404."""
    root = await client.post("/api/v1/users", headers=admin_headers, json={
        "username": "root-account", "email": "root@example.org", "password": PASSWORD})
    assert root.status_code == 201, root.text  # the first account is the root: not jose
    made = await client.post("/api/v1/users", headers=admin_headers, json={
        "username": "jose", "email": "jos\u00e9@example.org", "password": PASSWORD})
    assert made.status_code == 201, made.text
    for spelled in ("JOSE", unicodedata.normalize("NFD", "Jos\u00e9@Example.org")):
        found = await client.get(f"/api/v1/users/{spelled}", headers=admin_headers)
        assert found.status_code == 200 and found.json()["id"] == made.json()["id"], found.text
    missing = await client.get("/api/v1/users/nobody-here", headers=admin_headers)
    assert missing.status_code == 404, missing.text
    refused = await client.get("/api/v1/users/jose", headers=await bearer(client, "jose"))
    assert refused.status_code == 422, refused.text
