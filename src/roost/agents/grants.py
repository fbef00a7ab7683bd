"""Tools granted to a persona (``persona_tools``): a persona's owner or editor grants a
tool they may use themselves; the persona's agents may then use it in runs started by any
member, within the grant's constraints (``config.input_schema``: a JSON Schema the
arguments must also satisfy; ``config.max_calls_per_run``).  Row-level security: members
see a persona's grants, owners and editors make and change them (migration 0600)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from jsonschema import SchemaError
from sqlalchemy import Uuid, select, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.personas import get_persona, hold_persona, require_role
from roost.agents.schemas import ToolGrantOut, ToolGrantSet
from roost.audit.service import record
from roost.db.base import utcnow, uuid7
from roost.db.engine import Database
from roost.db.transaction import fetch_on
from roost.errors import NotFound, Unprocessable
from roost.principal import Principal
from roost.tools import registry, schemacheck
from roost.tools.calls import check_schema_ends, validate_arguments
from roost.tools.models import PersonaTool, Tool


@dataclass(frozen=True)
class Grant:
    """What a run needs to know of a grant (read by the runner as the system)."""

    tool_id: uuid.UUID
    input_schema: dict[str, Any] | None
    max_calls_per_run: int | None

    def check_arguments(self, arguments: dict[str, Any]) -> None:
        """422 when the arguments are outside the grant's ``input_schema``."""
        if self.input_schema:
            validate_arguments(self.input_schema, arguments)

    def refusal(self, calls_so_far: int) -> str | None:
        """Why one more call is refused (``max_calls_per_run``), or None."""
        if self.max_calls_per_run is not None and calls_so_far >= self.max_calls_per_run:
            return (f"the persona's grant allows {self.max_calls_per_run} call(s) of this "
                    "tool per run")
        return None


def _out(row: PersonaTool, name: str | None) -> ToolGrantOut:
    config = row.config or {}
    return ToolGrantOut(id=row.id, persona_id=row.persona_id, tool_id=row.tool_id,
                        tool_name=name, granted_by=row.user_id, is_enabled=row.is_enabled,
                        input_schema=config.get("input_schema"),
                        max_calls_per_run=config.get("max_calls_per_run"),
                        created_at=row.created_at)


async def grant_tool(session: AsyncSession, actor: Principal, persona_id: uuid.UUID,
                     tool_id: uuid.UUID, body: ToolGrantSet) -> ToolGrantOut:
    """Create or replace the persona's grant of a tool the actor may use (else 404)."""
    await require_role(session, actor, persona_id, "editor", "grant it tools")
    await hold_persona(session, persona_id)
    tool = await registry.get_tool(session, actor, tool_id)
    if body.input_schema is not None:
        try:  # as calls build it: under its own $schema's draft (2020-12 by default)
            schemacheck.build(body.input_schema)
        except SchemaError as exc:
            raise Unprocessable(f"input_schema is not a valid JSON Schema: "
                                f"{exc.message[:300]}") from None
        except RecursionError:
            raise Unprocessable("input_schema is not a valid JSON Schema: nested too deep "
                                "to check") from None
        check_schema_ends(body.input_schema)
    config = {k: v for k, v in (("input_schema", body.input_schema),
                                ("max_calls_per_run", body.max_calls_per_run)) if v is not None}
    stmt = pg_insert(PersonaTool).values(
        id=uuid7(), persona_id=persona_id, tool_id=tool.id, user_id=actor.user_id,
        is_enabled=body.is_enabled, config=config, created_at=utcnow())
    stmt = stmt.on_conflict_do_update(
        index_elements=[PersonaTool.persona_id, PersonaTool.tool_id],
        set_={"is_enabled": body.is_enabled, "config": config, "user_id": actor.user_id})
    await session.execute(stmt)
    row = await session.scalar(select(PersonaTool).where(
        PersonaTool.persona_id == persona_id, PersonaTool.tool_id == tool.id)
        .execution_options(populate_existing=True))
    assert row is not None
    await record(session, "persona.tool.grant", user_id=actor.user_id, persona_id=persona_id,
                 resource_type="tool", resource_id=tool.id,
                 changes={"tool_name": tool.name, "is_enabled": body.is_enabled, **config})
    return _out(row, tool.name)


async def list_grants(session: AsyncSession, actor: Principal,
                      persona_id: uuid.UUID) -> list[ToolGrantOut]:
    await get_persona(session, actor, persona_id)  # members only (404 otherwise)
    rows = (await session.execute(
        select(PersonaTool, Tool.name).outerjoin(Tool, Tool.id == PersonaTool.tool_id)
        .where(PersonaTool.persona_id == persona_id).order_by(PersonaTool.created_at)
    )).tuples().all()
    return [_out(row, name) for row, name in rows]


async def revoke_tool(session: AsyncSession, actor: Principal, persona_id: uuid.UUID,
                      tool_id: uuid.UUID) -> None:
    await require_role(session, actor, persona_id, "editor", "change its tools")
    row = await session.scalar(select(PersonaTool).where(
        PersonaTool.persona_id == persona_id, PersonaTool.tool_id == tool_id))
    if row is None:
        raise NotFound(f"the persona has no grant of tool {tool_id}")
    await session.delete(row)
    await record(session, "persona.tool.revoke", user_id=actor.user_id, persona_id=persona_id,
                 resource_type="tool", resource_id=tool_id)


# A grant is in force while it is enabled and its tool is global or its tool's owner is
# an owner or editor of the persona: a member who leaves (or becomes a viewer) takes
# their own tools, and the MCP servers and credentials behind them, back with them (as
# secrets by reference resolve only for the servers of the persona's owners).
_IN_FORCE = """
  pt.is_enabled AND (t.user_id IS NULL OR t.user_id = p.owner_id OR EXISTS (
    SELECT 1 FROM persona_members m WHERE m.persona_id = p.id AND m.user_id = t.user_id
       AND m.role IN ('owner', 'editor')))"""

_GRANTS_OF = text(f"""
SELECT pt.tool_id, pt.config FROM persona_tools pt
  JOIN personas p ON p.id = pt.persona_id JOIN tools t ON t.id = pt.tool_id
 WHERE pt.persona_id = :persona_id AND {_IN_FORCE}""",  # noqa: S608 (a constant condition)
).columns(tool_id=Uuid, config=JSONB)

# The runner's check before each granted call (as the system): the run's user is still a
# member (owner by owner_id, or a membership) and the grant still in force.
_STILL_GRANTED = text(f"""
SELECT (p.owner_id = :user_id OR EXISTS (
          SELECT 1 FROM persona_members m WHERE m.persona_id = p.id AND m.user_id = :user_id))
         AS member,
       EXISTS (SELECT 1 FROM persona_tools pt JOIN tools t ON t.id = pt.tool_id
                WHERE pt.persona_id = p.id AND pt.tool_id = :tool_id AND {_IN_FORCE})
         AS granted
  FROM personas p WHERE p.id = :persona_id""")  # noqa: S608 (a constant condition)


async def grants_of(session: AsyncSession, persona_id: uuid.UUID) -> dict[uuid.UUID, Grant]:
    """The persona's grants in force (the runner reads them as the system)."""
    rows = (await session.execute(_GRANTS_OF, {"persona_id": persona_id})).all()
    return {r.tool_id: Grant(r.tool_id, (r.config or {}).get("input_schema"),
                             (r.config or {}).get("max_calls_per_run")) for r in rows}


async def still_granted(database: Database, persona_id: uuid.UUID, user_id: uuid.UUID,
                        tool_id: uuid.UUID) -> tuple[bool, bool]:
    """Now, as the system, in one round trip: whether ``user_id`` is still a member of the
    persona, and whether its grant of the tool is still in force.  A run reads its grants
    once; a member removed, or a grant revoked, while it runs must not keep them for the
    run's later calls."""
    async with database.autocommit() as driver:
        found = await fetch_on(driver, _STILL_GRANTED, {
            "persona_id": persona_id, "user_id": user_id, "tool_id": tool_id})
    if not found:  # the persona was deleted
        return False, False
    return bool(found[0]["member"]), bool(found[0]["granted"])
