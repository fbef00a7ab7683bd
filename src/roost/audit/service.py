"""Recording, querying, verifying and pruning the audit log.

``record`` joins the caller's transaction: the audit row commits or rolls back with the
change it describes.  It takes no lock: the row is inserted unlinked and the chainer
(roost.audit.chainer, :func:`link_pending`) links it into the hash chain after commit.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict, Unpack

from sqlalchemy import Text, cast, func, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer
from sqlalchemy.orm.attributes import set_committed_value

from roost.audit.models import EVENT_CATEGORIES, AuditLog
from roost.audit.redaction import redact
from roost.context import current_context
from roost.db.base import utcnow, uuid7
from roost.db.statements import flush_pending, insert_row
from roost.errors import BadRequest
from roost.pagination import DEFAULT_LIMIT, cursor_int, encode_cursor, page_of
from roost.principal import Principal

GENESIS_HASH = bytes(32)
RETENTION_ACTION = "audit.retention"
FUTURE_SKEW = timedelta(hours=1)
"""How far ahead of the clock a record may be dated (migration 1280's insert check);
retention counts a record dated further ahead, stored before that check, as old."""

# A date no Python datetime holds (before year 1, after 9999: stored before migration 1280
# refused them) is read clamped to that range: one such record must not fail every
# listing page that holds it.
_READABLE_CREATED_AT = func.greatest(
    func.least(AuditLog.created_at,
               literal_column("timestamptz '9999-12-31 23:59:59.999999+00'")),
    literal_column("timestamptz '0001-01-01 00:00:00+00'"),
)


class AuditFields(TypedDict, total=False):
    """What an audit record says besides its action (all optional)."""

    user_id: uuid.UUID | None
    persona_id: uuid.UUID | None
    run_id: uuid.UUID | None
    category: str  # one of EVENT_CATEGORIES; "action" when not given
    resource_type: str | None
    resource_id: str | uuid.UUID | None
    changes: dict[str, Any] | None
    metadata: dict[str, Any] | None
    description: str | None
    success: bool  # True when not given
    error_message: str | None
    trace_id: str | None


async def record(session: AsyncSession, action: str,
                 **fields: Unpack[AuditFields]) -> dict[str, Any]:
    """Append one audit record in the caller's transaction (secrets redacted); returns
    its columns as written.  What the caller has added before is flushed first (the
    record may name it); the record itself is one prebuilt insert
    (roost.db.statements.insert_row), with no ORM object."""
    await flush_pending(session)
    return await insert_row(session, AuditLog, entry_values(action, **fields))


def owner_if_other(actor: Principal, owner: uuid.UUID) -> dict[str, str]:
    """An audit record names who acted (``user_id``), as every domain's do; a change of
    someone else's row (a group admin's, an administrator's) also names its owner, for
    the record's ``changes``."""
    return {} if actor.user_id == owner else {"owner": str(owner)}


def entry_values(action: str, **fields: Unpack[AuditFields]) -> dict[str, Any]:
    """One audit record's columns (attribute names of :class:`AuditLog`: secrets redacted,
    the request's context filled in), for :func:`record` or a caller that inserts it
    within another statement (``insert(AuditLog).values(**entry_values(...))``)."""
    category = fields.get("category", "action")
    if category not in EVENT_CATEGORIES:
        raise ValueError(f"audit category must be one of {EVENT_CATEGORIES}, got {category!r}")
    resource_id, changes = fields.get("resource_id"), fields.get("changes")
    metadata = fields.get("metadata")
    ctx = current_context()
    return {
        "id": uuid7(), "created_at": utcnow(), "action": action,
        "user_id": fields.get("user_id"), "persona_id": fields.get("persona_id"),
        "run_id": fields.get("run_id"), "event_category": category,
        "resource_type": fields.get("resource_type"),
        "resource_id": str(resource_id) if resource_id is not None else None,
        "changes": redact(changes) if changes is not None else None,
        "event_metadata": redact(metadata) if metadata is not None else None,
        "description": fields.get("description"), "ip_address": ctx.ip_address,
        "user_agent": ctx.user_agent[:1000] if ctx.user_agent else None,
        "correlation_id": ctx.request_id, "trace_id": fields.get("trace_id"),
        "success": fields.get("success", True), "error_message": fields.get("error_message"),
    }


@dataclass(frozen=True)
class AuditFilter:
    user_id: uuid.UUID | None = None
    persona_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
    action: str | None = None
    category: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    correlation_id: str | None = None
    trace_id: str | None = None
    success: bool | None = None
    since: datetime | None = None
    until: datetime | None = None


def _spellings(resource_id: str) -> set[str]:
    """``resource_id`` as given and, when it is a UUID, in its canonical form."""
    try:
        return {resource_id, str(uuid.UUID(resource_id))}
    except ValueError:
        return {resource_id}


async def query(
    session: AsyncSession, filters: AuditFilter, *, limit: int = DEFAULT_LIMIT,
    cursor: str | None = None,
) -> tuple[list[AuditLog], str | None]:
    """Newest first, keyset-paginated on ``seq``."""
    # The JSON columns as their text, decoded here: a record inserted by other hands may
    # hold jsonb Python's json cannot read (an integer of 5,000 digits, arrays nested
    # 3,000 deep), which the driver's decoding turned into a 500 for every page holding it.
    stmt = select(AuditLog, _READABLE_CREATED_AT, cast(AuditLog.changes, Text),
                  cast(AuditLog.event_metadata, Text)).options(
        defer(AuditLog.created_at), defer(AuditLog.changes), defer(AuditLog.event_metadata))
    for column, value in (
        (AuditLog.user_id, filters.user_id),
        (AuditLog.persona_id, filters.persona_id),
        (AuditLog.run_id, filters.run_id),
        (AuditLog.action, filters.action),
        (AuditLog.event_category, filters.category),
        (AuditLog.resource_type, filters.resource_type),
        (AuditLog.correlation_id, filters.correlation_id),
        (AuditLog.trace_id, filters.trace_id),
        (AuditLog.success, filters.success),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if filters.resource_id is not None:
        # Ids are recorded in their canonical spelling: a UUID pasted in upper case (or
        # without dashes) finds its records too, as the uuid-typed filters do.
        stmt = stmt.where(AuditLog.resource_id.in_(_spellings(filters.resource_id)))
    if filters.since is not None:
        stmt = stmt.where(AuditLog.created_at >= filters.since)
    if filters.until is not None:
        stmt = stmt.where(AuditLog.created_at < filters.until)
    if cursor is not None:
        stmt = stmt.where(AuditLog.seq < cursor_int(cursor, "seq"))
    rows: list[AuditLog] = []
    for row, created_at, changes, metadata in (await session.execute(
            stmt.order_by(AuditLog.seq.desc()).limit(limit + 1))).tuples():
        set_committed_value(row, "created_at", created_at)  # loaded, not a change to flush
        set_committed_value(row, "changes", _stored_json(changes))
        set_committed_value(row, "event_metadata", _stored_json(metadata))
        rows.append(row)
    return page_of(rows, limit, lambda row: encode_cursor({"seq": row.seq}))


def _stored_json(stored: str | None) -> Any:
    """A JSON column's value from its text; text Python's json cannot decode (too long an
    integer, too deep a nesting) listed as that text, a string, rather than failing."""
    if stored is None:
        return None
    try:
        return json.loads(stored)
    except (ValueError, RecursionError):
        return stored


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    rows_checked: int
    broken_seq: int | None = None
    """The first broken row's ``seq`` (insertion order, as the log's listing and filters
    use), not its ``chain_seq`` (its place in the chain, as ``head_chain_seq``)."""
    broken_id: uuid.UUID | None = None
    reason: str | None = None
    linked_now: int = 0
    """Committed rows that were still unlinked and that this verification linked first."""
    head_chain_seq: int | None = None
    """The newest linked row's place in the chain (None: the chain is empty)."""
    head_hash: str | None = None
    """That row's ``row_hash`` (hex).  Kept outside the database and compared with a later
    report, it shows the newest records were not cut off, which the chain alone cannot
    (docs/architecture.md, "The audit log")."""


async def link_pending(session: AsyncSession, *, limit: int = 10_000, wait: bool = True) -> int:
    """Link up to ``limit`` committed, unlinked audit rows into the chain, in ``seq`` order.

    One chainer at a time (the chain's advisory lock, held to the end of the caller's
    transaction: commit soon).  ``wait=False`` returns -1 at once when another session
    holds it.  Rows of transactions still in progress are invisible here and are linked
    by a later call, after the rows committed before them."""
    linked: int = (
        await session.execute(text("SELECT roost_audit_link(:n, :wait)"), {"n": limit, "wait": wait})
    ).scalar_one()
    return linked


_FIRST_BROKEN = text(
    """
    WITH chain AS (
      SELECT a.seq, a.id, a.prev_hash, a.row_hash,
             roost_audit_hash(a.prev_hash, a) AS computed,
             lag(a.row_hash) OVER (ORDER BY a.chain_seq) AS predecessor,
             row_number() OVER (ORDER BY a.chain_seq) AS n
      FROM audit_logs a
      WHERE a.chain_seq IS NOT NULL
    )
    SELECT seq, id, prev_hash, row_hash, computed, predecessor, n
    FROM chain
    WHERE row_hash IS NULL OR prev_hash IS NULL OR computed IS DISTINCT FROM row_hash
       OR n = 1 OR prev_hash IS DISTINCT FROM predecessor AND n > 1
    ORDER BY n
    LIMIT 2
    """
)

_HEAD = text(
    "SELECT chain_seq, row_hash FROM audit_logs WHERE chain_seq IS NOT NULL "
    "ORDER BY chain_seq DESC LIMIT 1"
)


async def verify_chain(session: AsyncSession) -> ChainReport:
    """Link what is pending, then recompute every row's hash and link; report the first
    broken one.

    The first remaining row must link to the genesis hash or to an anchor that a
    retention run recorded when it pruned the rows before it.  Linking first means every
    committed row is checked; a row's content is protected from the moment it is linked
    (docs/architecture.md, "The audit log", says how long that may take).
    """
    linked_now = await link_pending(session, limit=2_147_483_647)
    total: int = (
        await session.execute(text("SELECT count(*) FROM audit_logs WHERE chain_seq IS NOT NULL"))
    ).scalar_one()
    # Only what a retention run writes (64 hex digits) is an anchor: any role that may
    # insert audit rows can insert a record with another value, which must not stop the
    # check (it is linked, and so verified, like any other row).
    anchor_text = AuditLog.changes["anchor_hash"].astext
    anchor_hexes: Sequence[str] = (await session.scalars(
        select(anchor_text).where(AuditLog.action == RETENTION_ACTION,
                                  anchor_text.regexp_match("^[0-9a-f]{64}$")))).all()
    anchors = {bytes.fromhex(a) for a in anchor_hexes}
    head = (await session.execute(_HEAD)).one_or_none()
    head_seq: int | None = head.chain_seq if head is not None else None
    head_hash = bytes(head.row_hash).hex() if head is not None and head.row_hash else None

    def report(seq: int | None = None, row_id: uuid.UUID | None = None,
               reason: str | None = None) -> ChainReport:
        return ChainReport(reason is None, total, seq, row_id, reason, linked_now,
                           head_seq, head_hash)

    # At most two rows: the first row (always listed: its link is checked against the
    # anchors here) and the first broken one after it.
    for row in (await session.execute(_FIRST_BROKEN)).all():
        seq: int = row.seq
        row_id: uuid.UUID = row.id
        prev_hash, row_hash, computed, n = row.prev_hash, row.row_hash, row.computed, row.n
        # A linked row always has both hashes: one set to NULL was tampered with (and
        # NULL compares as unknown, never as different, in SQL: hence IS DISTINCT FROM).
        if row_hash is None or prev_hash is None:
            return report(seq, row_id, "row's hash or link was removed")
        if computed != row_hash:
            return report(seq, row_id, "row content does not match its hash")
        if n == 1:
            if prev_hash != GENESIS_HASH and bytes(prev_hash) not in anchors:
                return report(seq, row_id,
                              "first row does not link to genesis or a retention anchor")
            continue
        return report(seq, row_id, "row does not link to the row before it")
    return report()


async def apply_retention(session: AsyncSession, older_than: timedelta) -> int:
    """Delete the oldest records created before now - ``older_than``; audited itself.

    Only a prefix of the chain is removed (every row before the first row that is still
    young enough), so the rest stays verifiable from the recorded anchor.  The newest
    linked row is always kept, however old: the retention record links after it, so the
    head never goes back (with none left it would restart the chain at ``chain_seq`` 1).
    """
    if older_than < timedelta(days=1):
        raise BadRequest("audit retention must keep at least one day of records")
    try:
        cutoff = utcnow() - older_than
    except OverflowError:  # before year 1: no record is that old
        return 0
    # Link what is pending, holding the chain lock to commit: no chainer links a row after
    # the anchor is taken, so the anchor is the hash of the last row deleted.
    await link_pending(session, limit=2_147_483_647)
    boundary: int | None = (
        await session.execute(
            # The first young row, else the newest (kept: see above).  Two subqueries, so
            # max() stays one probe of the chain_seq index.  A row dated beyond the skew
            # (stored before migration 1280) counts as old: else it would stay young, and
            # keep itself and every row after it, forever (the guard lets it be deleted).
            text("SELECT coalesce((SELECT min(chain_seq) FROM audit_logs WHERE created_at >= :cutoff "
                 "AND created_at <= now() + :skew), (SELECT max(chain_seq) FROM audit_logs))"),
            {"cutoff": cutoff, "skew": FUTURE_SKEW},
        )
    ).scalar_one()
    if boundary is None:  # an empty chain
        return 0
    await session.execute(
        text("SELECT set_config('roost.audit_retention_cutoff', :c, true)"),
        {"c": cutoff.isoformat()},
    )
    condition = ("chain_seq IS NOT NULL AND (created_at < :cutoff OR created_at > now() + :skew) "
                 "AND chain_seq < :boundary")
    params: dict[str, Any] = {"cutoff": cutoff, "boundary": boundary, "skew": FUTURE_SKEW}
    last = (
        await session.execute(
            text(f"SELECT row_hash FROM audit_logs WHERE {condition} ORDER BY chain_seq DESC LIMIT 1"),  # noqa: S608
            params,
        )
    ).scalar_one_or_none()
    if last is None:
        return 0
    deleted = (
        await session.execute(text(f"DELETE FROM audit_logs WHERE {condition}"), params)  # noqa: S608
    ).rowcount  # type: ignore[attr-defined]
    await session.execute(text("SELECT set_config('roost.audit_retention_cutoff', '', true)"))
    await record(
        session,
        RETENTION_ACTION,
        category="system",
        changes={"deleted": deleted, "cutoff": cutoff.isoformat(), "anchor_hash": bytes(last).hex()},
        description=f"pruned {deleted} audit records older than {cutoff.isoformat()}",
    )
    return int(deleted)
