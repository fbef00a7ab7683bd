"""A persona's secrets: set (create or replace), list (names only), delete, and the
resolver the runner calls when it needs a value.

Values are AES-256-GCM (``SecretBox``) bound to their row (associated data
``secrets:<row id>:value``), so a ciphertext copied into another row does not decrypt.
A value goes in through :func:`set_secret` and comes out only through
:func:`resolve_secret`, at call time: never in an answer, an error, a log line or an
audit record.  Owners and editors of the persona manage its secrets (viewers: 403).
"""

from __future__ import annotations

import uuid
from typing import Final

from sqlalchemy import func, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.models import Secret
from roost.agents.personas import require_role, role_of
from roost.agents.schemas import MAX_SECRET_BYTES, SecretSet
from roost.audit.service import record
from roost.db.base import utcnow, uuid7
from roost.db.engine import Database
from roost.db.errors import sqlstate
from roost.db.lookup import one_or_404
from roost.errors import BadRequest, Conflict, NotFound, PayloadTooLarge, Unprocessable
from roost.identity.common import lock_owner_quota
from roost.principal import Principal
from roost.security.crypto import SecretBox
from roost.tools.secretrefs import SecretsUnavailable

_MANAGE: Final = "manage its secrets"
# Enough for any set of tools' credentials; bounds what an editor can pile up (each value
# up to 64 KiB) and what one unpaged list answers.
MAX_SECRETS_PER_PERSONA: Final = 200


def _aad(secret_id: uuid.UUID) -> bytes:
    return f"secrets:{secret_id}:value".encode()


def _seal(box: SecretBox, secret_id: uuid.UUID, value: str) -> str:
    return box.encrypt(value, _aad(secret_id)).decode("ascii")


def _audit_name(row: Secret) -> dict[str, str]:
    # "kind", not "secret_type": the audit redaction would hide any key saying "secret".
    return {"kind": row.secret_type, "key_name": row.key_name}


async def set_secret(session: AsyncSession, actor: Principal, box: SecretBox,
                     persona_id: uuid.UUID, body: SecretSet) -> tuple[Secret, bool]:
    """Create the persona's ``(secret_type, key_name)`` secret or replace its value;
    ``created`` is false for a replacement."""
    await require_role(session, actor, persona_id, "editor", _MANAGE)
    value = body.value.get_secret_value()
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate (text read with surrogateescape)
        raise Unprocessable("value: the secret is not valid Unicode text") from None
    if size > MAX_SECRET_BYTES:
        raise PayloadTooLarge(f"a secret value may be at most {MAX_SECRET_BYTES} bytes")
    locked = select(Secret).where(
        Secret.persona_id == persona_id, Secret.secret_type == body.secret_type,
        Secret.key_name == body.key_name).with_for_update()
    row = await session.scalar(locked)
    if row is None:
        await lock_owner_quota(session, persona_id, "persona_secrets")  # count and insert as one step
        # Looked for again behind the lock: one set by a request this one waited for is
        # replaced (several PUTs of one new secret at once were 409s but one).
        row = await session.scalar(locked)
    created = row is None
    if row is None:
        count = await session.scalar(select(func.count()).select_from(Secret).where(
            Secret.persona_id == persona_id))
        if (count or 0) >= MAX_SECRETS_PER_PERSONA:
            raise BadRequest(f"a persona may hold at most {MAX_SECRETS_PER_PERSONA} secrets; "
                             "delete unused ones first")
        row = Secret(id=uuid7(), persona_id=persona_id, secret_type=body.secret_type,
                     key_name=body.key_name, created_by=actor.user_id)
        row.encrypted_value = _seal(box, row.id, value)
        session.add(row)
        try:
            async with session.begin_nested():
                await session.flush()
        except IntegrityError as exc:
            if sqlstate(exc) == "23503":  # the persona was deleted meanwhile
                raise NotFound(f"persona {persona_id} does not exist") from None
            raise Conflict(f"the secret {body.secret_type}/{body.key_name} was set at the "
                           "same time by another request; try again") from None
        except DBAPIError as exc:
            # The wall refused the row the role check let through: the persona (or the
            # actor's membership) went meanwhile.  (No query here: the transaction is done.)
            if sqlstate(exc) == "42501":
                raise NotFound(f"persona {persona_id} does not exist") from None
            raise
    else:
        row.encrypted_value = _seal(box, row.id, value)  # a new nonce: updated_at moves
        await session.flush()
    await session.refresh(row)
    await record(session, "persona.secret.set", user_id=actor.user_id, persona_id=persona_id,
                 resource_type="secret", resource_id=row.id,
                 changes={**_audit_name(row), "replaced": not created})
    return row, created


async def list_secrets(session: AsyncSession, actor: Principal, persona_id: uuid.UUID, *,
                       secret_type: str | None = None) -> list[Secret]:
    """The persona's secrets (their names and times), by type and key name."""
    await require_role(session, actor, persona_id, "editor", _MANAGE)
    stmt = select(Secret).where(Secret.persona_id == persona_id)
    if secret_type is not None:
        stmt = stmt.where(Secret.secret_type == secret_type)
    return list((await session.scalars(
        stmt.order_by(Secret.secret_type, Secret.key_name))).all())


async def delete_secret(session: AsyncSession, actor: Principal, persona_id: uuid.UUID,
                        secret_id: uuid.UUID) -> Secret:
    await require_role(session, actor, persona_id, "editor", _MANAGE)
    # Locked: a deletion waiting on another one finds the row gone (404, no second audit
    # record of a deletion that deleted nothing).
    row = await one_or_404(session, select(Secret).where(
        Secret.id == secret_id, Secret.persona_id == persona_id), lock=True,
        missing=f"secret {secret_id} does not exist in this persona")
    await session.delete(row)
    await session.flush()
    await record(session, "persona.secret.delete", user_id=actor.user_id,
                 persona_id=persona_id, resource_type="secret", resource_id=secret_id,
                 changes=_audit_name(row))
    return row


async def resolve_secret(target: AsyncSession | Database, box: SecretBox,
                         persona_id: uuid.UUID, secret_type: str, key_name: str) -> str:
    """The plaintext of a persona's secret, for the call about to use it (never store
    or log it); records ``last_used_at``.

    With a ``Database`` it reads in a transaction of its own as the system (the runner,
    having checked the run's persona, resolves the persona's secrets whoever started the
    run); with a session it reads in that session's scope, where row-level security shows
    secrets only to the persona's owners and editors."""
    if isinstance(target, Database):
        async with target.transaction() as session:
            return await _resolve(session, box, persona_id, secret_type, key_name)
    return await _resolve(target, box, persona_id, secret_type, key_name)


async def _resolve(session: AsyncSession, box: SecretBox, persona_id: uuid.UUID,
                   secret_type: str, key_name: str) -> str:
    found = (await session.execute(
        update(Secret).where(Secret.persona_id == persona_id, Secret.secret_type == secret_type,
                             Secret.key_name == key_name)
        .values(last_used_at=utcnow())
        .returning(Secret.id, Secret.encrypted_value))).first()
    if found is None:
        raise NotFound(f"the persona has no {secret_type} secret named {key_name!r}")
    return box.decrypt_str(found.encrypted_value, _aad(found.id))


async def resolve_reference(database: Database, box: SecretBox, persona_id: uuid.UUID,
                            server_owner: uuid.UUID | None, secret_type: str | None,
                            key_name: str, *, runner: uuid.UUID | None = None) -> str:
    """A ``${secret:[type/]key}`` reference of an MCP server's env or header, resolved for
    a run of the persona (roost.tools.secretrefs): by type and name, or by name alone when
    the persona has one secret of that name.  Only for a global server (``server_owner``
    None: an administrator's) or one whose owner is an owner of the persona now: a server
    is a URL or command its owner controls, and editors set secrets, never read them.
    ``runner``: the run's user, who must be a member of the persona now (a member removed
    while their run goes on gets no secret of it any more)."""
    async with database.transaction() as session:
        if runner is not None and await role_of(session, persona_id, runner) is None:
            raise SecretsUnavailable("this run's user is no longer a member of the persona: "
                                     "its secrets go only to its members' runs")
        if server_owner is not None and await role_of(session, persona_id,
                                                      server_owner) != "owner":
            raise SecretsUnavailable(
                "this MCP server was registered by a user who does not own the persona: the "
                "persona's secrets go only to its owners' servers and to global ones")
        if secret_type is None:
            kinds = (await session.scalars(select(Secret.secret_type).where(
                Secret.persona_id == persona_id, Secret.key_name == key_name))).all()
            if len(kinds) > 1:
                raise Conflict(f"the persona has {len(kinds)} secrets named {key_name!r}; name "
                               f"the type in the reference: ${{secret:TYPE/{key_name}}}")
            if not kinds:
                raise NotFound(f"the persona has no secret named {key_name!r}")
            secret_type = kinds[0]
        return await _resolve(session, box, persona_id, secret_type, key_name)


async def missing_references(session: AsyncSession, persona_id: uuid.UUID,
                             labels: list[str]) -> list[str]:
    """Which ``[type/]key`` labels the persona holds no secret for (configuration time:
    names only, nothing is decrypted); 422 for an untyped label it holds under several
    types, which no call could resolve (resolve_reference answers 409)."""
    held = (await session.execute(select(Secret.secret_type, Secret.key_name).where(
        Secret.persona_id == persona_id))).tuples().all()
    kinds: dict[str, list[str]] = {}
    for kind, key in held:
        kinds.setdefault(key, []).append(kind)
    ambiguous = [label for label in labels if "/" not in label and len(kinds.get(label, [])) > 1]
    if ambiguous:
        key = ambiguous[0]
        raise Unprocessable(
            f"tool_permissions: these tools' servers use the secret {key!r} without its type, "
            f"and the persona holds secrets of that name of the types "
            f"{', '.join(sorted(kinds[key]))}; name the type in the server's reference: "
            f"${{secret:TYPE/{key}}}")
    typed = {f"{kind}/{key}" for kind, key in held}
    return [label for label in labels if label not in (typed if "/" in label else kinds)]
