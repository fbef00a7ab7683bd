"""Calling a tool and the record of each call (``tool_runs``).

A call is three steps, so no database connection waits on a tool server:

1. a scoped transaction finds the tool (another tenant's is 404), checks it is enabled
   and available, and validates the arguments against its JSON Schema (422 naming the
   failing path; nothing is recorded);
2. the tool runs (a built-in in the process, an MCP tool through a session under
   ``ROOST_TOOLS_CALL_TIMEOUT_S`` with its output capped at
   ``ROOST_TOOLS_MAX_OUTPUT_BYTES``; a stdio server's session is the long-lived one of
   this process's :mod:`roost.tools.stdiopool`);
3. a second scoped transaction writes the ``tool_runs`` row and its audit record
   together.  A failure (timeout, server error, malformed or oversized result, the
   tool's own error) is a ``tool_runs`` row with status ``error``/``timeout`` and a
   problem answer naming the run; nothing else changes.

A warm call by id that this process's caches answer completely (the tool as the caller
sees it, nothing to hold) opens no session for step 1, and writes step 3 in one round
trip without one (the SQL function ``roost_record_tool_call``, scoped in its own implicit
transaction): the sessions, then the round trips, were most of Roost's own part of a
call (bench/tools/overhead.py).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from jsonschema import SchemaError
from jsonschema import _utils as jsonschema_utils  # find_additional_properties
from sqlalchemy import CTE, Insert, select
from sqlalchemy import text as sql_text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from roost import tracing
from roost.analytics.models import AnalyticsEvent
from roost.analytics.outbox import event_values
from roost.audit.models import AuditLog
from roost.audit.service import entry_values
from roost.billing import credits
from roost.billing import runtime_settings as billing_settings
from roost.billing.credits import Reservation
from roost.billing.models import UsageRecord
from roost.config import get_settings
from roost.db.base import utcnow, uuid7
from roost.db.engine import Database
from roost.db.lookup import unicode_forms
from roost.db.statements import bound_insert, flush_pending, prefixed, row_json
from roost.db.transaction import driver_fetch
from roost.errors import Conflict, GatewayTimeout, NotFound, RoostError, Unprocessable
from roost.identity.tenancy import scope_settings
from roost.knowledge.config import KnowledgeConfig
from roost.pagination import DEFAULT_LIMIT, newest_first, where_equal
from roost.principal import Principal
from roost.security.crypto import SecretBox
from roost.system_settings import runtime
from roost.tasks.payloads import PayloadError, dump_json_object
from roost.tools import (
    builtins,
    lspservers,
    mcpclient,
    registry,
    schemacheck,
    schemaregex,
    secretrefs,
    stdiopool,
    webfetch,
)
from roost.tools.config import ToolsConfig
from roost.tools.models import MAX_PREVIEW_CHARS, McpServer, Tool, ToolRun
from roost.tools.servers import scoped, spec_for


class ToolUnavailable(Conflict):
    title, type_slug = "Tool unavailable", "tool-unavailable"


_VALIDATORS: dict[str, Any] = {}  # schema JSON -> validator (None: invalid schema)
_MAX_VALIDATORS = 1024


def _validator(schema: dict[str, Any]) -> Any:
    """The schema's validator, checked against its metaschema once: that check cost
    0.3 ms of every call (bench/tools/overhead.py).  ``None`` for an invalid schema, and
    for one nested too deep to check (the metaschema check recurses once per level)."""
    try:
        key = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    except RecursionError:  # deeper than any sync or request stores: not worth a cache slot
        return None
    if key in _VALIDATORS:
        return _VALIDATORS[key]
    try:
        validator: Any = schemacheck.build(schema)  # no remote $ref is ever fetched
    except (SchemaError, RecursionError):
        validator = None
    if len(_VALIDATORS) >= _MAX_VALIDATORS:
        _VALIDATORS.pop(next(iter(_VALIDATORS)))  # the oldest; schemas rarely change
    _VALIDATORS[key] = validator
    return validator


_ENDLESS_SCHEMA: Final = ("the tool's input schema refers to itself without end (a $ref "
                          "loop that never reaches a value): it cannot check any arguments")
_DANGLING_REF: Final = ("the tool's input schema has a $ref that resolves nowhere ({ref}; "
                        "only references within the schema are followed, never fetched)")


def _dangling(exc: schemacheck.Unresolvable) -> str:
    ref = str(getattr(exc, "ref", "") or "")[:200].replace("\x00", "")
    return _DANGLING_REF.format(ref=repr(ref) if ref else "unknown")


def check_schema_ends(schema: dict[str, Any]) -> None:
    """422 when checking a value against ``schema`` never ends (``{"allOf": [{"$ref":
    "#"}]}``: valid JSON Schema, an endless recursion on any input), for schemas users
    write, refused when saved rather than on every call.  Probed with ``{}`` and with
    each top-level property null; a loop deeper down is a 422 of the call
    (:func:`validate_arguments`)."""
    validator = _validator(schema)
    if validator is None:
        return
    properties = schema.get("properties")
    probes: list[Any] = [{}]
    if isinstance(properties, dict):
        probes.append(dict.fromkeys(properties))  # each property's own subschema, with null
    try:
        with schemaregex.budget():
            for probe in probes:
                for _ in validator.iter_errors(probe):
                    pass
    except RecursionError:
        raise Unprocessable(_ENDLESS_SCHEMA.replace("the tool's input schema", "input_schema"),
                            extra={"field": "input_schema"}) from None
    except schemacheck.Unresolvable as exc:
        raise Unprocessable(_dangling(exc).replace("the tool's input schema", "input_schema"),
                            extra={"field": "input_schema"}) from None
    except schemaregex.PatternTooSlow:
        pass  # a pattern's cost depends on the input: judged per call
    except schemaregex.PatternUnusable as exc:
        raise Unprocessable(f"input_schema has a pattern that cannot be matched: {exc}",
                            extra={"field": "input_schema"}) from None


def validate_arguments(schema: dict[str, Any], arguments: dict[str, Any]) -> None:
    """Raise 422 listing each failing path (never echoing the values)."""
    validator = _validator(schema)
    if validator is None:
        raise ToolUnavailable("the tool's input schema is not a valid JSON Schema; "
                              "re-sync its server or ask its maintainer")
    try:
        with schemaregex.budget():  # naming extra keys matches patternProperties again
            errors = sorted(validator.iter_errors(arguments),
                            key=lambda e: list(e.absolute_path))
            described = [(error, _describe(error, extra), extra)
                         for error in errors[:20] for extra in [sorted(_extra_keys(error))]]
    except RecursionError:
        raise Unprocessable(_ENDLESS_SCHEMA) from None
    except schemacheck.Unresolvable as exc:  # as an invalid schema: the tool's to fix
        raise ToolUnavailable(_dangling(exc) + "; re-sync its server or ask its maintainer"
                              ) from None
    except schemaregex.PatternUnusable as exc:  # as an invalid schema too
        raise ToolUnavailable(f"the tool's input schema has a pattern that cannot be matched: "
                              f"{exc}; re-sync its server or ask its maintainer") from None
    except schemaregex.PatternTooSlow as slow:
        raise Unprocessable(
            f"the arguments took longer than {schemaregex.BUDGET_S} s to match the patterns "
            f"of the tool's input schema (pattern {slow.pattern[:200]!r}): the pattern "
            "backtracks too much for this input", extra={"pattern": slow.pattern[:200]},
        ) from None
    if not errors:
        return
    # The shape of every 422's ``errors`` (loc, msg, type), loc starting at the body; an
    # undeclared key is its own entry, at its own path (as pydantic's extra_forbidden).
    problems: list[dict[str, Any]] = []
    for error, text, extra in described:
        loc, kind = ["body", "arguments", *error.absolute_path], f"json_schema.{error.validator}"
        problems += [{"loc": [*loc, key], "msg": _UNEXPECTED, "type": kind} for key in extra] \
            or [{"loc": loc, "msg": text, "type": kind}]
    del problems[20:]
    first, text, _ = described[0]
    path = "/" + "/".join(str(p) for p in first.absolute_path)
    raise Unprocessable(
        f"the arguments do not match the tool's input schema: at {path}: {text}",
        extra={"errors": problems},
    )


_UNEXPECTED: Final = "unexpected property (not allowed by the schema)"


def argument_names(names: Iterable[str]) -> str:
    """Argument names as an error result names them: sorted, comma-separated, the first
    500 characters (names are the caller's keys, never their values), a NUL written
    ``\\u0000`` (PostgreSQL stores no NUL in text: the message may be recorded)."""
    return ", ".join(sorted(names)).replace("\x00", "\\u0000")[:500]


def _extra_keys(error: Any) -> list[str]:
    """The keys an ``additionalProperties: false`` refused (none for another failure):
    those neither in ``properties`` nor matching ``patternProperties``, as jsonschema
    decides (its patterns matched by :mod:`roost.tools.schemaregex`)."""
    if error.validator != "additionalProperties" or not isinstance(error.instance, dict) \
            or not isinstance(error.schema, dict):
        return []
    return list(jsonschema_utils.find_additional_properties(error.instance, error.schema))


def _describe(error: Any, extra: list[str]) -> str:
    """What failed, without the offending value (it may be a secret); ``extra``: the keys
    an ``additionalProperties`` refused, named."""
    validator, expected = error.validator, error.validator_value
    if validator == "required":
        missing = [p for p in expected if p not in (error.instance or {})]
        return f"required property {', '.join(repr(m) for m in missing)} is missing"
    if validator == "additionalProperties":
        return f"{_UNEXPECTED}: {argument_names(extra)}" if extra else _UNEXPECTED
    if validator == "pattern" and expected == schemacheck.NO_NUL_PATTERN:
        return "must not contain a NUL character (U+0000)"
    if validator in ("type", "enum", "const", "format", "pattern", "minimum", "maximum",
                     "exclusiveMinimum", "exclusiveMaximum", "minLength", "maxLength",
                     "minItems", "maxItems"):
        return f"must satisfy {validator}={json.dumps(expected)[:200]}"
    return f"fails {validator!r}"


@dataclass(frozen=True)
class PreparedCall:
    """A call that passed its checks: the tool, and how to reach its server."""

    tool_id: uuid.UUID
    name: str
    kind: str
    spec: mcpclient.ServerSpec | None
    reservation: Reservation | None = None  # the credits held for it (roost.billing)


@dataclass(frozen=True)
class KnownTool:
    """What a call needs of a tool and its server, as one caller may see them."""

    id: uuid.UUID
    name: str
    kind: str
    enabled: bool
    available: bool
    input_schema: dict[str, Any]
    server_name: str | None  # MCP tools: their server's
    server_enabled: bool
    spec: mcpclient.ServerSpec | None


# (tool id, caller's user id, caller is admin, allowlisted private hosts) -> the tool as
# that caller sees it (row-level security decided, when it was read).  Kept by NOTIFY
# roost_tools (migration 0950's triggers on tools and mcp_servers) and by this process's
# own writes to them; used only while the process listens (roost.system_settings.runtime):
# a call served from it sends no statement before the tool runs.
KNOWN_TOOLS: Final = runtime.NotifiedCache[
    tuple[uuid.UUID, uuid.UUID | None, bool, frozenset[str]], KnownTool](
    "roost_tools", 10_000, tables=("tools", "mcp_servers"))


def _known_key(actor: Principal, cfg: ToolsConfig, tool_id: uuid.UUID
               ) -> tuple[uuid.UUID, uuid.UUID | None, bool, frozenset[str]]:
    return (tool_id, actor.user_id, actor.is_admin, cfg.allowed_hosts)


def _known(tool: Tool, row: McpServer | None, box: SecretBox, cfg: ToolsConfig) -> KnownTool:
    return KnownTool(
        id=tool.id, name=tool.name, kind=tool.kind, enabled=tool.enabled,
        available=tool.available, input_schema=tool.input_schema,
        server_name=row.name if row is not None else None,
        server_enabled=row.enabled if row is not None else False,
        spec=spec_for(row, box, cfg) if row is not None and tool.kind == "mcp" else None)


async def _known_tool(session: AsyncSession, actor: Principal, cfg: ToolsConfig,
                      box: SecretBox, tool_id: uuid.UUID) -> KnownTool:
    """The tool (another tenant's is 404) from the process's cache, else the database:
    the tool and its server in one statement (registry.get_tool's visibility), without
    the description's vector."""
    key = _known_key(actor, cfg, tool_id)
    cached = runtime.serves(session)
    if cached:
        hit, known = KNOWN_TOOLS.get(key)
        if hit and known is not None:
            return known
    generation = KNOWN_TOOLS.generation
    found = (await session.execute(
        select(Tool, McpServer).outerjoin(McpServer, McpServer.id == Tool.mcp_server_id)
        .where(Tool.id == tool_id, registry.visible(actor))
        .options(defer(Tool.description_embedding))
    )).first()
    if found is None:
        raise NotFound(f"tool {tool_id} does not exist")
    tool, row = found  # a Row unpacks (Row.tuple() is deprecated)
    if tool.kind == "mcp" and row is None:
        raise NotFound(f"tool {tool.id} does not exist")
    known = _known(tool, row, box, cfg)
    if cached:
        KNOWN_TOOLS.put(key, known, generation)
    return known


async def prepare_call(
    session: AsyncSession, actor: Principal, cfg: ToolsConfig, box: SecretBox, *,
    tool_id: uuid.UUID | None, name: str | None, server: str | None, arguments: dict[str, Any],
    bill_to: uuid.UUID | None = None, database: Database | None = None, hold: bool = True,
) -> PreparedCall:
    """In the caller's scoped transaction: find the tool (another tenant's is 404), check
    it is enabled and available, validate the arguments (422), and hold the call's credits
    when its user is metered (402 when the balance cannot cover it; roost.billing).
    ``bill_to``: the user who pays when ``actor`` is the system acting for them.
    With ``database`` (the one ``session`` is on), the hold is a statement of its own on
    its side pool, committed at once (``credits.hold_beside``), else one of the
    transaction's.  ``hold=False``: no hold (the caller takes it with
    :func:`hold_credits`)."""
    if tool_id is not None:
        known = await _known_tool(session, actor, cfg, box, tool_id)
    else:
        assert name is not None
        tool = await registry.find_tool(session, actor, name, server)
        row = await session.get(McpServer, tool.mcp_server_id) if tool.kind == "mcp" else None
        if tool.kind == "mcp" and row is None:
            raise NotFound(f"tool {tool.id} does not exist")
        known = _known(tool, row, box, cfg)
    _check(known, arguments)
    reservation = await hold_credits(session, actor, cfg, known.id, bill_to or actor.user_id,
                                     database=database) if hold else None
    return PreparedCall(known.id, known.name, known.kind, known.spec, reservation)


async def hold_credits(
    session: AsyncSession, actor: Principal, cfg: ToolsConfig, tool_id: uuid.UUID,
    payer: uuid.UUID | None, *, database: Database | None = None,
) -> Reservation | None:
    """A call's credits held for ``payer`` when metered (402 when the balance cannot cover
    it): on ``database``'s side pool, committed at once, when given; else in ``session``'s
    transaction, which must be the one to use when it may hold the payer's row already (a
    side connection would wait for it until the statement timeout)."""
    if payer is None:
        return None
    settings = get_settings()
    price = await runtime.get(session, billing_settings.TOOL_CALL_CREDITS,
                              settings.billing_tool_call_credits)
    if not price:
        # Free calls hold nothing, but are refused as any charge is: no subscription when
        # one is required, a paused one (a price of 0 is not a way round a pause).
        await credits.require_payer(session, settings, payer)
        return None
    if database is not None:
        return await credits.hold_beside(
            session, database, settings, scope_settings(actor, app_role=cfg.app_role),
            payer, price, kind="tool", reference=f"tool:{tool_id}")
    return await credits.reserve(session, settings, payer, price, kind="tool",
                                 reference=f"tool:{tool_id}")


async def give_back(database: Database, actor: Principal, cfg: ToolsConfig,
                    prepared: PreparedCall) -> None:
    """The credits held for a prepared call that will not be recorded (its agent run was
    cancelled or stopped before or while it ran): given back now, not by the sweeper
    after ``ROOST_BILLING_RESERVATION_TTL_S``.  A hold settled meanwhile stays settled."""
    if prepared.reservation is not None:
        await credits.release_alone(database, scope_settings(actor, app_role=cfg.app_role),
                                    prepared.reservation)


def _check(known: KnownTool, arguments: dict[str, Any]) -> None:
    """The tool is enabled and offered, its server enabled, the arguments valid (422)."""
    if not known.enabled:
        raise ToolUnavailable(f"tool {known.name!r} is disabled")
    if not known.available:
        raise ToolUnavailable(f"tool {known.name!r} is no longer offered by its server; "
                              "sync the server to refresh its tools")
    validate_arguments(known.input_schema, arguments)  # a schema's own NUL pattern first
    try:  # a NUL, NaN or a runaway nesting: the run could not be recorded once it ran
        dump_json_object(arguments, what="the arguments")
    except PayloadError as exc:
        raise Unprocessable(f"the arguments cannot be recorded: {exc}",
                            extra={"field": "arguments"}) from None
    if known.kind == "mcp" and not known.server_enabled:
        raise ToolUnavailable(f"MCP server {known.server_name!r} is disabled")


async def _prepared_from_caches(database: Database, actor: Principal, cfg: ToolsConfig,
                                tool_id: uuid.UUID, arguments: dict[str, Any]) -> PreparedCall | None:
    """:func:`prepare_call` answered by this process's caches (the tool as the caller sees
    it, and its price), without a session: None when anything else needs the database (a
    miss).  A call that costs credits while someone is metered holds them in one round
    trip of its own (``credits.reserve_alone``), committed before the tool runs."""
    name = database.engine.url.database
    if not runtime.serves_database(name):
        return None
    hit, known = KNOWN_TOOLS.get(_known_key(actor, cfg, tool_id))
    if not hit or known is None:
        return None
    settings, price = get_settings(), 0
    if actor.user_id is not None:
        cached, price = runtime.cached(billing_settings.TOOL_CALL_CREDITS,
                                       settings.billing_tool_call_credits)
        if not cached:
            return None
        if credits.unmetered_by_caches(name, settings):
            price = 0
        elif not price:
            return None  # free, but a paused or required subscription refuses it: ask

    _check(known, arguments)
    reservation = None
    if price:
        reservation = await credits.reserve_alone(
            database, settings, scope_settings(actor, app_role=cfg.app_role),
            actor.user_id, price, kind="tool", reference=f"tool:{known.id}")
    return PreparedCall(known.id, known.name, known.kind, known.spec, reservation)


HostedBuiltin = Callable[[Database, Principal, dict[str, Any], uuid.UUID | None],
                         Awaitable[dict[str, Any]]]
"""A built-in tool a higher domain implements (``tools`` row id -> implementation), called
with the database, the actor, the arguments and the calling run's id: e.g. the agents
domain's ``send_email``, which needs the run's persona (this domain cannot import it)."""


async def _run(
    prepared: PreparedCall, database: Database, actor: Principal, cfg: ToolsConfig,
    kcfg: KnowledgeConfig | None, arguments: dict[str, Any],
    hosted: Mapping[uuid.UUID, HostedBuiltin], run_id: uuid.UUID | None,
    secrets: secretrefs.SecretResolver | None = None,
) -> dict[str, Any]:
    if prepared.spec is not None:
        spec, revealed = await secretrefs.resolve_spec(prepared.spec, secrets)
        try:
            outcome = await mcpclient.call_tool(
                spec, prepared.name, arguments, timeout_s=cfg.call_timeout_s,
                max_bytes=cfg.max_output_bytes, pool=stdiopool.default_pool(stdio_limits(cfg)),
            )
        except RoostError as exc:
            secretrefs.hide_error(exc, revealed)  # a server's error may quote what it got
            raise
        # Hidden before anything is cut, recorded, returned or shown to a model.
        output: dict[str, Any] = secretrefs.hide(outcome.output, revealed)
        if outcome.is_error:
            detail = secretrefs.hide(outcome.text, revealed)[:500] or "no detail"
            raise mcpclient.McpError(f"tool {prepared.name!r} reported an error: {detail}",
                                     extra={"output": output})
        return output
    if prepared.tool_id == builtins.CURRENT_TIME_ID:
        return await builtins.current_time(arguments)
    if prepared.tool_id == builtins.WEB_FETCH_ID:
        return await webfetch.web_fetch(cfg, arguments)
    if prepared.tool_id == builtins.LSP_DIAGNOSTICS_ID:
        return await lspservers.diagnostics_tool(database, actor, cfg, arguments)
    if prepared.tool_id == builtins.KNOWLEDGE_SEARCH_ID:
        if kcfg is None:
            raise ToolUnavailable("knowledge search is not configured in this process")
        async with asyncio.timeout(cfg.call_timeout_s), scoped(database, actor, cfg) as session:
            return await builtins.knowledge_search(session, actor, kcfg, arguments)
    implementation = hosted.get(prepared.tool_id)
    if implementation is not None:
        async with asyncio.timeout(cfg.call_timeout_s):
            return await implementation(database, actor, arguments, run_id)
    raise ToolUnavailable(f"built-in tool {prepared.name!r} is not available here"
                          + (" (it works inside agent runs)" if run_id is None else ""))


def stdio_limits(cfg: ToolsConfig) -> stdiopool.PoolLimits:
    """The stdio pool's limits from settings: a start has its own deadline (a server that
    takes 20 s to start must not fail its first 5 s call), and the ping after a timed-out
    call is bounded by a fraction of the call deadline (the next call waits for it)."""
    return stdiopool.PoolLimits(idle_s=cfg.stdio_idle_s, max_processes=cfg.stdio_max_processes,
                                start_timeout_s=cfg.stdio_start_timeout_s,
                                ping_timeout_s=min(5.0, cfg.call_timeout_s / 4))


def _preview(output: dict[str, Any]) -> str:
    texts = [c.get("text", "") for c in output.get("content", []) if isinstance(c, dict)]
    text = "\n".join(t for t in texts if t) or json.dumps(output, ensure_ascii=False)
    return text[:MAX_PREVIEW_CHARS]


@dataclass(frozen=True)
class CallResult:
    """What running a prepared call gave: its output, or the failure to record."""

    output: dict[str, Any] | None
    failure: RoostError | None
    started_at: datetime
    duration_ms: int

    @property
    def status(self) -> str:
        if self.failure is None:
            return "success"
        return "timeout" if isinstance(self.failure, GatewayTimeout) else "error"


async def execute_call(
    prepared: PreparedCall, database: Database, actor: Principal, cfg: ToolsConfig,
    arguments: dict[str, Any], *, knowledge: KnowledgeConfig | None = None,
    hosted: Mapping[uuid.UUID, HostedBuiltin] | None = None, run_id: uuid.UUID | None = None,
    secrets: secretrefs.SecretResolver | None = None,
) -> CallResult:
    """Run the tool (no transaction open); a failure is returned, not raised.  ``secrets``
    resolves the persona secrets an MCP server's env or headers name (secretrefs)."""
    started = utcnow()
    clock = time.perf_counter()
    output: dict[str, Any] | None = None
    failure: RoostError | None = None
    span = tracing.NOOP if not tracing.enabled() else tracing.span(
        f"execute_tool {prepared.name}", attributes={
            "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": prepared.name,
            "roost.tool.id": str(prepared.tool_id), "roost.tool.kind": prepared.kind,
            "roost.run.id": str(run_id) if run_id else None})
    with span:
        try:
            output = await _run(prepared, database, actor, cfg, knowledge, arguments,
                                hosted or {}, run_id, secrets)
        except TimeoutError:
            failure = mcpclient.McpTimeout(
                f"tool {prepared.name!r} did not finish within {cfg.call_timeout_s:g} s"
            )
        except RoostError as exc:
            failure = exc
        result = CallResult(output, failure, started, int((time.perf_counter() - clock) * 1000))
        span.set("roost.tool.status", result.status)
        if failure is not None:
            span.fail(failure)
    return result


async def record_call(
    session: AsyncSession, actor: Principal, prepared: PreparedCall, arguments: dict[str, Any],
    result: CallResult, *, trace_id: str | None = None, session_id: uuid.UUID | None = None,
    message_id: uuid.UUID | None = None, run_id: uuid.UUID | None = None,
    run_step_id: uuid.UUID | None = None,
) -> ToolRun:
    """In the caller's scoped transaction: the ``tool_runs`` row, its analytics event and
    its audit record, in one statement (three ORM inserts were three round trips and most
    of the call's Python time, bench/tools/overhead.py), with the call's ledger row and
    its held credits settled or given back when it had a reservation.  Returns the row as
    written (not attached to the session)."""
    record = CallRecord(actor, prepared, arguments, result, trace_id=trace_id,
                        session_id=session_id, message_id=message_id, run_id=run_id,
                        run_step_id=run_step_id)
    await write_ledger(session, record)
    await driver_fetch(session, record.statement, record.params)
    return record.run


async def write_ledger(session: AsyncSession, record: CallRecord) -> None:
    """In the caller's transaction, before the record's rows: a call that held credits
    gets its ledger row and its hold settled (or given back when it failed); what the
    session holds unwritten is flushed (the record's rows may refer to it)."""
    held, run, ok = record.prepared.reservation, record.run, record.ok
    if held is not None:
        session.add(UsageRecord(
            id=uuid7(), user_id=run.user_id, request_type="tool", model=None,
            credits_used=held.amount if ok else 0, latency_ms=run.duration_ms, success=ok,
            run_id=run.run_id, session_id=run.session_id, idempotency_key=f"tool:{run.id}",
            api_key_id=record.actor.api_key_id, subscription_id=held.subscription_id))
        if ok:
            await credits.settle(session, held, held.amount)
        else:
            await credits.release(session, held)
    await flush_pending(session)


async def _record_alone(database: Database, actor: Principal, cfg: ToolsConfig,
                        prepared: PreparedCall, arguments: dict[str, Any], result: CallResult,
                        **ids: Any) -> ToolRun:
    """:func:`record_call` for a call that held no credits, in one round trip: the SQL
    function ``roost_record_tool_call`` (migration 1010) scopes its own implicit
    transaction as :func:`servers.scoped` scopes (the same ``set_config`` values, the
    role switch included), writes the three rows after it, so row-level security checks
    them, and commits as the statement ends.  A scoped ``BEGIN``, the statement and a
    ``COMMIT`` were three round trips, and an ORM session before that a third of Roost's
    part of a call (bench/tools/overhead.py)."""
    record = CallRecord(actor, prepared, arguments, result, **ids)
    scope = json.dumps(scope_settings(actor, app_role=cfg.app_role))
    async with database.autocommit() as driver:
        await driver.execute(_RECORD_CALL, scope, *record.rows_json())
    return record.run


_RECORD_CALL: Final = "SELECT roost_record_tool_call($1, $2, $3, $4)"


class CallRecord:
    """A call's ``tool_runs`` row, analytics event and audit record: the values, and the
    one statement that writes them (or the three inserts as CTEs of a caller's own
    statement, :meth:`ctes`, with :attr:`params`: the agent runner finishes its step with
    them)."""

    def __init__(self, actor: Principal, prepared: PreparedCall, arguments: dict[str, Any],
                 result: CallResult, *, trace_id: str | None = None,
                 session_id: uuid.UUID | None = None, message_id: uuid.UUID | None = None,
                 run_id: uuid.UUID | None = None, run_step_id: uuid.UUID | None = None) -> None:
        failure, output = result.failure, result.output
        values: dict[str, Any] = {
            "id": uuid7(), "created_at": utcnow(), "tool_id": prepared.tool_id,
            "user_id": actor.user_id, "tool_name": prepared.name,
            "trace_id": trace_id or f"run-{uuid.uuid4()}", "status": result.status,
            "input": arguments,
            "output": output if output is not None else (
                failure.extra.get("output") if failure else None),
            "result_preview": _preview(output) if output is not None else None,
            "error": failure.detail if failure else None, "started_at": result.started_at,
            "finished_at": utcnow(), "duration_ms": result.duration_ms,
            "session_id": session_id, "message_id": message_id, "run_id": run_id,
            "run_step_id": run_step_id,
        }
        held, ok = prepared.reservation, failure is None
        event = event_values(
            "tool.call", {"tool": prepared.name, "tool_id": str(prepared.tool_id),
                          "tool_run_id": str(values["id"]), "status": result.status,
                          "duration_ms": result.duration_ms,
                          "credits": held.amount if held is not None and ok else 0},
            user_id=actor.user_id, session_id=session_id)
        audit = entry_values(
            "tool.call", user_id=actor.user_id, resource_type="tool",
            resource_id=prepared.tool_id, trace_id=values["trace_id"], success=ok,
            error_message=failure.detail if failure else None,
            metadata={"tool_run_id": str(values["id"]), "tool_name": prepared.name,
                      "status": result.status, "duration_ms": result.duration_ms})
        self.actor, self.prepared, self.ok = actor, prepared, ok
        self.run = ToolRun(**values)
        self.values, self.event, self.audit = values, event, audit

    @property
    def statement(self) -> Insert:
        return _record_statement(self.values, self.event, self.audit)

    @property
    def params(self) -> dict[str, Any]:
        """The parameters of :attr:`statement` and of :meth:`ctes` (``tr_``, ``te_``,
        ``ta_`` prefixes: distinct from a caller's own)."""
        return {**prefixed("tr_", self.values), **prefixed("te_", self.event),
                **prefixed("ta_", self.audit)}

    def ctes(self) -> tuple[CTE, ...]:
        """``tool_run``, ``tool_event`` and ``tool_audit``: the three inserts as CTEs
        (every record has the same columns: built once)."""
        if not _RECORD_CTES:
            _RECORD_CTES.extend((
                bound_insert(ToolRun, "tr_", self.values).cte("tool_run"),
                bound_insert(AnalyticsEvent, "te_", self.event).cte("tool_event"),
                bound_insert(AuditLog, "ta_", self.audit).cte("tool_audit")))
        return tuple(_RECORD_CTES)

    def rows_json(self) -> tuple[str, str, str]:
        """The three rows as ``roost_record_tool_call`` takes them (JSON by column name)."""
        return (row_json(ToolRun, self.values), row_json(AnalyticsEvent, self.event),
                row_json(AuditLog, self.audit))


_RECORD: list[Insert] = []  # built once: a statement built per call cost ~0.5 ms (bench)
_RECORD_CTES: list[CTE] = []


def _record_statement(run: Mapping[str, Any], event: Mapping[str, Any],
                      audit: Mapping[str, Any]) -> Insert:
    """``WITH tool_run AS (INSERT ...), analytics_event AS (INSERT ...) INSERT INTO
    audit_logs ...``, each value a bound parameter named after its attribute (``tr_``,
    ``te_``, ``ta_``), typed by its column."""
    if not _RECORD:
        _RECORD.append(bound_insert(AuditLog, "ta_", audit).add_cte(
            bound_insert(ToolRun, "tr_", run).cte("tool_run"),
            bound_insert(AnalyticsEvent, "te_", event).cte("analytics_event")))
    return _RECORD[0]


# The chat domain's tables by name (it sits above this one): what the caller's row-level
# security lets it see.  A message names its session, so the pair must agree.
_CHAT_SESSION_SEEN: Final = sql_text("SELECT 1 FROM chat_sessions WHERE id = :id")
_CHAT_MESSAGE_SEEN: Final = sql_text("SELECT session_id FROM chat_messages WHERE id = :id")


async def _check_chat_ids(session: AsyncSession, session_id: uuid.UUID | None,
                          message_id: uuid.UUID | None) -> None:
    """404 for a chat session or message the caller cannot see (another user's, a deleted
    one): a tool run tied to it would count in that session's usage and history."""
    if session_id is not None and not (await session.execute(
            _CHAT_SESSION_SEEN, {"id": session_id})).first():
        raise NotFound(f"no chat session {session_id}")
    if message_id is not None:
        row = (await session.execute(_CHAT_MESSAGE_SEEN, {"id": message_id})).first()
        if row is None:
            raise NotFound(f"no chat message {message_id}")
        if session_id is not None and row[0] != session_id:
            raise Unprocessable(f"chat message {message_id} is not in session {session_id}")


async def call_tool(
    database: Database, actor: Principal, cfg: ToolsConfig, box: SecretBox,
    *, tool_id: uuid.UUID | None = None, name: str | None = None, server: str | None = None,
    arguments: dict[str, Any], trace_id: str | None = None,
    session_id: uuid.UUID | None = None, message_id: uuid.UUID | None = None,
    knowledge: KnowledgeConfig | None = None, run_id: uuid.UUID | None = None,
    run_step_id: uuid.UUID | None = None, hosted: Mapping[uuid.UUID, HostedBuiltin] | None = None,
) -> ToolRun:
    """Run a tool for ``actor`` and record it; raises the failure after recording it.
    ``run_id``/``run_step_id``: the agent run and step that called it; ``hosted``: the
    built-ins higher domains implement (:data:`HostedBuiltin`).  The three parts
    (:func:`prepare_call`, :func:`execute_call`, :func:`record_call`) are public for a
    caller that puts its own rows in the same transactions (the agent runner)."""
    if session_id is not None or message_id is not None:
        async with scoped(database, actor, cfg) as session:
            await _check_chat_ids(session, session_id, message_id)
    prepared = await _prepared_from_caches(database, actor, cfg, tool_id, arguments) \
        if tool_id is not None else None
    if prepared is None:
        async with scoped(database, actor, cfg) as session:
            prepared = await prepare_call(session, actor, cfg, box, tool_id=tool_id, name=name,
                                          server=server, arguments=arguments, database=database)
    result = await execute_call(prepared, database, actor, cfg, arguments, knowledge=knowledge,
                                hosted=hosted, run_id=run_id)
    ids: dict[str, Any] = {"trace_id": trace_id, "session_id": session_id,
                           "message_id": message_id, "run_id": run_id,
                           "run_step_id": run_step_id}
    if prepared.reservation is None:
        run = await _record_alone(database, actor, cfg, prepared, arguments, result, **ids)
    else:
        async with scoped(database, actor, cfg) as session:
            run = await record_call(session, actor, prepared, arguments, result, **ids)
    if result.failure is not None:
        result.failure.extra = {"tool_run_id": str(run.id)}
        raise result.failure
    return run


async def list_runs(
    session: AsyncSession, actor: Principal, *, tool_id: uuid.UUID | None = None,
    tool_name: str | None = None, status: str | None = None, trace_id: str | None = None,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[ToolRun], str | None]:
    """Newest first."""
    stmt = select(ToolRun)
    if not actor.is_admin:
        stmt = stmt.where(ToolRun.user_id == actor.user_id)
    stmt = where_equal(stmt, (ToolRun.tool_id, tool_id), (ToolRun.status, status),
                       (ToolRun.trace_id, trace_id))
    if tool_name is not None:  # typed composed or decomposed, as the tool is found by name
        stmt = stmt.where(ToolRun.tool_name.in_(unicode_forms(tool_name)))
    return await newest_first(session, stmt, ToolRun.created_at, ToolRun.id,
                              limit=limit, cursor=cursor)


async def get_run(session: AsyncSession, actor: Principal, run_id: uuid.UUID) -> ToolRun:
    stmt = select(ToolRun).where(ToolRun.id == run_id)
    if not actor.is_admin:
        stmt = stmt.where(ToolRun.user_id == actor.user_id)
    run = await session.scalar(stmt)
    if run is None:
        raise NotFound(f"tool run {run_id} does not exist")
    return run


__all__ = ["Tool", "ToolUnavailable", "call_tool", "check_schema_ends", "get_run", "list_runs",
           "validate_arguments"]
