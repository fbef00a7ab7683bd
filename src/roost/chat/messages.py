"""Messages of a chat session: listing, storing, and the model's answer.

Posting a message that the model answers is one recorded LLM call
(``roost.llm.calls``): the user's message and the ``pending`` request are committed
together before any provider is asked, so a failed or cancelled call leaves the user's
message stored and the request ``failed``; the answer is stored with the call's records
and the audit record in the call's final transaction.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import AsyncGenerator, Hashable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, cast

import structlog
from pydantic import TypeAdapter
from sqlalchemy import (
    Insert,
    Integer,
    Select,
    String,
    Table,
    Update,
    Uuid,
    bindparam,
    func,
    select,
    true,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit import service as audit
from roost.audit.models import AuditLog
from roost.audit.service import entry_values
from roost.billing.models import UsageRecord
from roost.chat import runtime_settings
from roost.chat.keys import decrypt, decrypt_many
from roost.chat.models import (
    TOOL_CALL_ID_CHARS,
    ChatMessage,
    ChatSession,
)
from roost.chat.schemas import (
    ExchangeOut,
    MessageCreate,
    MessageOut,
)
from roost.db.base import utcnow, uuid7
from roost.db.engine import Database
from roost.db.groupcommit import GroupCommit
from roost.db.statements import bound_insert, prefixed, row_json
from roost.db.transaction import driver_connection, driver_fetch
from roost.errors import Conflict, NotFound, PayloadTooLarge, RoostError, Unprocessable
from roost.inputs import is_blank
from roost.llm import calls, routing
from roost.llm.gateway import LLMGateway
from roost.llm.orchestration import Attempt, response_confidence
from roost.llm.records import CallOutcome
from roost.llm.schemas import UsageOut
from roost.llm.types import ChatMessage as LLMMessage
from roost.llm.types import ChatRequest, ToolCall
from roost.pagination import DEFAULT_LIMIT, INT32_MAX, cursor_int, encode_cursor, page_of
from roost.principal import Principal
from roost.prompts import service as prompts
from roost.security.crypto import MessageCipher
from roost.system_settings import runtime

log = structlog.get_logger(__name__)

MESSAGE = "chat_message"
CHAT_PROMPT_KEY = "chat.system"  # chat sessions' system prompt (docs/prompts.md)
_TOOL_CALLS = TypeAdapter(list[ToolCall])
_TOOL_NAME_CHARS: Final = cast(String, ChatMessage.__table__.c.tool_call_name.type).length or 256


# What a message answer shows: read as plain rows on the history path (no ORM entities,
# identity map or change tracking for what is only decrypted and returned).
_MESSAGE_COLUMNS = tuple(
    getattr(ChatMessage, name) for name in (
        "id", "session_id", "seq", "role", "content", "tool_call_name", "tool_call_id",
        "tool_calls", "tokens_in", "tokens_out", "model", "llm_request_id",
        "conversation_domain", "plan_step", "confidence_score", "embedding_model_used",
        "created_at",
    )
)


_MESSAGE_FIELDS = tuple(column.key for column in _MESSAGE_COLUMNS)
_MESSAGES_OUT = TypeAdapter(list[MessageOut])


def message_values(cipher: MessageCipher, rows: Sequence[Any]) -> list[dict[str, Any]]:
    """The plain values of each message's :class:`MessageOut` (JSON-ready but for UUIDs
    and datetimes): the contents decrypted in one batch (``decrypt_many``)."""
    texts = decrypt_many(cipher, [row["content"] for row in rows])
    values: list[dict[str, Any]] = []
    names = tuple(rows[0].keys()) if rows else ()
    for row, text in zip(rows, texts, strict=True):
        value = dict(zip(names, row, strict=True))  # a third less than dict(row.items())
        value.pop("found", None)  # the history statement's session column
        value["content"] = text
        if row["tool_calls"] is not None:
            value["tool_calls"] = _TOOL_CALLS.dump_python(
                _TOOL_CALLS.validate_json(decrypt(cipher, row["tool_calls"])), mode="json")
        values.append(value)
    return values


@functools.cache
def _history_statement(*, with_cursor: bool, admin: bool) -> Select[Any]:
    """One statement: the session (visible to the caller, else 404) with its page beside
    it, so a read costs the round trip of its query alone.  Built once per shape, with
    bound parameters: building the lateral subquery's columns cost more Python than the
    query's round trip."""
    page = select(*_MESSAGE_COLUMNS).where(ChatMessage.session_id == ChatSession.id)
    if with_cursor:
        page = page.where(ChatMessage.seq < bindparam("before_seq", type_=Integer))
    lateral = (page.order_by(ChatMessage.seq.desc())
               .limit(bindparam("page_limit", type_=Integer)).lateral("page"))
    stmt = (
        select(ChatSession.id.label("found"), *lateral.c)
        .select_from(ChatSession)
        .outerjoin(lateral, true())
        .where(ChatSession.id == bindparam("session_id", type_=Uuid))
    )
    if not admin:
        stmt = stmt.where(ChatSession.user_id == bindparam("user_id", type_=Uuid))
    return stmt


async def list_messages(
    session: AsyncSession, gateway: LLMGateway, actor: Principal, session_id: uuid.UUID, *,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[MessageOut], str | None]:
    """Newest first.  The cursor is the last ``seq`` seen: later pages only go back in
    time, so messages posted meanwhile neither repeat nor shift what is left to read."""
    values, next_cursor = await list_message_values(session, gateway, actor, session_id,
                                                    limit=limit, cursor=cursor)
    return _MESSAGES_OUT.validate_python(values), next_cursor


async def list_message_values(
    session: AsyncSession, gateway: LLMGateway, actor: Principal, session_id: uuid.UUID, *,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """:func:`list_messages` as plain values (:func:`message_values`): what the history
    route serialises straight to JSON, without building a model per message."""
    stmt = _history_statement(with_cursor=cursor is not None, admin=actor.is_admin)
    params: dict[str, Any] = {"session_id": session_id, "page_limit": limit + 1}
    if cursor is not None:
        params["before_seq"] = cursor_int(cursor, "seq", most=INT32_MAX)
    if not actor.is_admin:
        params["user_id"] = actor.user_id
    found = await driver_fetch(session, stmt, params)  # the hot read: no ORM around it
    return _page_values(gateway, session_id, found, limit)


_HISTORY: Final = "SELECT * FROM roost_chat_history($1, $2, $3, $4, $5, $6)"


async def read_confirming(
    database: Database, gateway: LLMGateway, actor: Principal, session_id: uuid.UUID, *,
    limit: int, cursor: str | None, confirmation: str, scope: str,
) -> tuple[list[dict[str, Any]], str | None]:
    """:func:`list_message_values` for a caller this process knows, in one round trip and
    no transaction around it: ``roost_chat_history`` (migration 1050) has the database
    confirm the caller (``confirmation``, JSON; SQLSTATE 28000 when the credential no
    longer resolves to ``actor``), scopes its implicit transaction (``scope``) and reads
    the session with its page, as the history statement does in a request's
    transaction (three round trips there, with its ``BEGIN`` and ``COMMIT``)."""
    before = cursor_int(cursor, "seq", most=INT32_MAX) if cursor is not None else None
    owner = None if actor.is_admin else actor.user_id
    async with database.autocommit() as driver:
        found = await driver.fetch(_HISTORY, confirmation, scope, session_id, owner, before,
                                   limit + 1)
    return _page_values(gateway, session_id, found, limit)


def _page_values(gateway: LLMGateway, session_id: uuid.UUID, found: Sequence[Any],
                 limit: int) -> tuple[list[dict[str, Any]], str | None]:
    """A history page's values and next cursor from the session's row(s) with its page
    beside it (no row: 404)."""
    if not found:
        raise NotFound(f"no chat session with id {session_id}")
    rows, next_cursor = page_of(
        [r for r in found if r["seq"] is not None], limit,
        lambda r: encode_cursor({"seq": r["seq"]}))
    return message_values(gateway.cipher, rows), next_cursor


def _check_content(data: MessageCreate, limit: int) -> None:
    if len(data.content) > limit:
        raise PayloadTooLarge(
            f"message content is {len(data.content)} characters; the limit is {limit} "
            "(runtime setting chat_max_message_chars)"
        )
    # A message's tool calls are part of it: sent back as context on every later reply
    # (and billed as tokens), they count toward the same limit.
    size = len(data.content) + sum(len(c.id) + len(c.name) + len(c.arguments)
                                   for c in data.tool_calls or ())
    if size > limit:
        raise PayloadTooLarge(
            f"message content and tool calls are {size} characters; the limit is {limit} "
            "(runtime setting chat_max_message_chars)", extra={"field": "tool_calls"})
    # Invisible characters only (zero-width spaces, a BOM) show nothing either.
    if data.role in ("user", "system", "developer") and is_blank(data.content):
        raise Unprocessable("message content must not be empty", extra={"field": "content"})
    if data.reply and data.role != "user":
        raise Unprocessable(
            f"only a user message can be answered by the model; send role {data.role!r} "
            "with reply=false to record it", extra={"field": "reply"}
        )
    if data.role == "tool" and not data.tool_call_id:
        raise Unprocessable("a tool message needs the tool_call_id it answers",
                            extra={"field": "tool_call_id"})
    if data.tool_calls and data.role != "assistant":
        raise Unprocessable("only an assistant message carries tool_calls",
                            extra={"field": "tool_calls"})
    given: set[str] = set()
    for call in data.tool_calls or ():
        if call.id in given:
            # A result answers a call by its id: two calls sharing one cannot both be
            # answered, and a provider refuses the pair (400) on every later reply.
            raise Unprocessable(f"tool_calls gives the id {call.id[:100]!r} to more than one "
                                "call: each call needs its own", extra={"field": "tool_calls"})
        given.add(call.id)
    if "\x00" in data.content:
        raise Unprocessable("message content must not contain NUL characters",
                            extra={"field": "content"})


def _check_open(status: str, expires_at: datetime | None) -> None:
    """A session's status and expiry allow a post (else 409)."""
    if status != "active":
        raise Conflict(f"the session is {status}; set its status to 'active' to post to it")
    if expires_at is not None and expires_at <= utcnow():
        raise Conflict("the session has expired; extend expires_at to post to it")


@functools.cache
def _post_statement() -> Update:
    """An answered post's ``UPDATE chat_sessions ... RETURNING``: the session's row locked to
    commit (as a ``SELECT ... FOR UPDATE`` would), its message and request counters bumped
    (the new ``message_count`` is the message's position), and what the post checks and
    uses of the session: one round trip, no ORM entity.  Built once."""
    table = cast(Table, ChatSession.__table__)
    return (update(table).where(table.c.id == bindparam("session_id", type_=Uuid))
            .values(message_count=table.c.message_count + 1,
                    request_count=table.c.request_count + 1, last_activity_at=func.now())
            .returning(table.c.message_count, table.c.user_id, table.c.status,
                       table.c.expires_at, table.c.model))


async def _insert_message(
    session: AsyncSession, gateway: LLMGateway, owner_id: uuid.UUID, session_id: uuid.UUID, *,
    seq: int, role: str, content: str, tool_calls: list[ToolCall] | None = None, **fields: Any,
) -> MessageOut:
    """Store a message at ``seq`` (allocated by :func:`_post_statement`); returns it as
    answered, from the values written (the text in clear: nothing to decrypt).  One
    prebuilt INSERT, no ORM entity."""
    unknown = set(fields) - set(_MESSAGE_FIELDS)
    if unknown:
        raise TypeError(f"not a chat message column: {sorted(unknown)}")
    values = _new_message(session_id, role, seq, fields)
    stored = {**_encrypted(gateway, values, content, tool_calls), "user_id": owner_id}
    await session.execute(_message_insert(), prefixed("m_", stored))
    return MessageOut.model_validate({**values, "content": content, "tool_calls": tool_calls})


def _new_message(session_id: uuid.UUID, role: str, seq: int | None,
                 fields: dict[str, Any]) -> dict[str, Any]:
    """A new message's columns as answered (the text not yet encrypted)."""
    return {**dict.fromkeys(_MESSAGE_FIELDS), **fields, "id": uuid7(), "created_at": utcnow(),
            "session_id": session_id, "seq": seq, "role": role}


def _encrypted(gateway: LLMGateway, values: dict[str, Any], content: str,
               tool_calls: list[ToolCall] | None) -> dict[str, Any]:
    """``values`` as stored: the text and the tool calls encrypted."""
    return {**values, "content": gateway.cipher.encrypt(content),
            "tool_calls": (gateway.cipher.encrypt(_TOOL_CALLS.dump_json(tool_calls).decode())
                           if tool_calls else None)}


@functools.cache
def _message_insert() -> Insert:
    return bound_insert(ChatMessage, "m_", (*_MESSAGE_FIELDS, "user_id"))


_STORE: Final = """SELECT user_id, status, expires_at, message_count, stored
FROM roost_store_chat_message($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"""


async def record_confirming(
    database: Database, gateway: LLMGateway, actor: Principal, session_id: uuid.UUID,
    data: MessageCreate, *, confirmation: str, scope: str,
) -> MessageOut | None:
    """A ``reply: false`` post of a caller this process knows, in one round trip and no
    transaction around it: ``roost_store_chat_message`` (migration 1040) confirms the
    caller in the database (``confirmation``, JSON; SQLSTATE 28000 and nothing written
    when the credential no longer resolves to ``actor``), scopes its implicit
    transaction (``scope``, JSON: the role switch included, so row-level security checks
    the writes), stores the message and its audit record, and commits as it ends.  A
    post in a request transaction was three round trips (its scoped ``BEGIN``, the
    statement, ``COMMIT``) and an ORM session around them.  None when this process's
    runtime settings are not at hand (the caller posts the usual way)."""
    if not runtime.serves_database(database.url.database):
        return None
    known, limit = runtime.cached(runtime_settings.MAX_MESSAGE_CHARS,
                                  gateway.settings.chat_max_message_chars)
    if not known:
        return None
    _check_content(data, limit)
    values, arguments = _store_arguments(gateway, actor, session_id, role=data.role,
                                         content=data.content, tool_calls=data.tool_calls,
                                         fields=_posted_fields(data), require_open=True,
                                         action="chat.message.create",
                                         metadata={"role": data.role, "reply": False})
    rows = await _store_group(database).submit((confirmation, scope), arguments)
    return _stored(rows, values, data.content, data.tool_calls)[1]


_STORE_MANY: Final = """SELECT item, user_id, status, expires_at, message_count, stored
FROM roost_store_chat_messages($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"""


def _store_group(database: Database) -> GroupCommit[tuple[Any, ...], Sequence[Any]]:
    """The process's group commit of known callers' ``reply: false`` posts on
    ``database``: the posts one caller (one confirmation and scope) sends while another
    of them is being written are stored by one statement, ``roost_store_chat_messages``
    (migration 1310), in one transaction: one round trip, confirmation, scope and commit
    for all of them (docs/benchmarks.md, "Group commit")."""
    group = database.group_commits.get("chat.store")
    if group is None:
        group = database.group_commits["chat.store"] = GroupCommit(
            functools.partial(_store_many, database), functools.partial(_store_one, database))
    return cast(GroupCommit[tuple[Any, ...], Sequence[Any]], group)


async def _store_one(database: Database, key: Hashable,
                     arguments: tuple[Any, ...]) -> Sequence[Any]:
    confirmation, scope = cast(tuple[str, str], key)
    async with database.autocommit() as driver:
        return cast(Sequence[Any], await driver.fetch(_STORE, confirmation, scope, *arguments))


async def _store_many(database: Database, key: Hashable,
                      items: list[tuple[Any, ...]]) -> list[Sequence[Any]]:
    """Each item's rows (as :func:`_store_one` answers them), stored by one statement.
    The items go in session order, so batches that share sessions lock them alike."""
    confirmation, scope = cast(tuple[str, str], key)
    order = sorted(range(len(items)), key=lambda index: items[index][0].bytes)
    actor_id, is_admin, require_open = items[0][1:4]  # one caller's, one kind of post
    columns = [[items[index][column] for index in order] for column in (0, 4, 5, 6, 7)]
    async with database.autocommit() as driver:
        rows = await driver.fetch(_STORE_MANY, confirmation, scope, actor_id, is_admin,
                                  require_open, *columns)
    answers: list[list[Any]] = [[] for _ in items]
    for row in rows:
        answers[order[row["item"] - 1]].append(row)
    return list(answers)


def _posted_fields(data: MessageCreate) -> dict[str, Any]:
    return {"tool_call_name": data.tool_call_name, "tool_call_id": data.tool_call_id,
            "conversation_domain": data.conversation_domain, "plan_step": data.plan_step,
            "confidence_score": data.confidence_score,
            "embedding_model_used": data.embedding_model_used}


async def _record_message(
    session: AsyncSession, gateway: LLMGateway, actor: Principal, session_id: uuid.UUID,
    data: MessageCreate,
) -> Exchange:
    """Store a message no model is to answer, with its audit record: one statement
    (:func:`_store_recorded`), no ORM.  A closed or expired session refuses it (409)."""
    found, message = await _store_recorded(
        session, gateway, actor, session_id, role=data.role, content=data.content,
        tool_calls=data.tool_calls, fields=_posted_fields(data), require_open=True,
        action="chat.message.create", metadata={"role": data.role, "reply": False})
    return Exchange(session_id=session_id, owner_id=found["user_id"], user_message=message)


async def store_answer(
    gateway: LLMGateway, actor: Principal, session_id: uuid.UUID, *, content: str,
    fields: dict[str, Any], metadata: dict[str, Any],
) -> MessageOut:
    """Store an answer worked out for the session (an agent's run) as its assistant
    message, audited ``chat.message.reply``, as a model's answer is: no user-input checks
    (its length is not the user's message limit) and stored even if the session was
    closed or expired meanwhile."""
    async with gateway.transaction(actor) as session:
        _, message = await _store_recorded(
            session, gateway, actor, session_id, role="assistant", content=content,
            tool_calls=None, fields=fields, require_open=False, action="chat.message.reply",
            metadata=metadata)
    return message


async def _store_recorded(
    session: AsyncSession, gateway: LLMGateway, actor: Principal, session_id: uuid.UUID, *,
    role: str, content: str, tool_calls: list[ToolCall] | None, fields: dict[str, Any],
    require_open: bool, action: str, metadata: dict[str, Any],
) -> tuple[Any, MessageOut]:
    """A message at the session's next position and its audit record (``action``, with
    ``metadata`` and the message's ``seq``) in one statement, ``roost_store_chat_message``
    in the session's scoped transaction; returns the session's row as bumped
    (``user_id``, ``status``, ``expires_at``, ``message_count``) and the message as
    answered.  404 when the actor may not post to the session (or it is gone); with
    ``require_open``, 409 when it is closed or expired (nothing written)."""
    values, arguments = _store_arguments(gateway, actor, session_id, role=role,
                                         content=content, tool_calls=tool_calls,
                                         fields=fields, require_open=require_open,
                                         action=action, metadata=metadata)
    driver = await driver_connection(session)
    return _stored(await driver.fetch(_STORE, None, None, *arguments), values, content,
                   tool_calls)


def _store_arguments(
    gateway: LLMGateway, actor: Principal, session_id: uuid.UUID, *, role: str,
    content: str, tool_calls: list[ToolCall] | None, fields: dict[str, Any],
    require_open: bool, action: str, metadata: dict[str, Any],
) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """The new message's values as answered (its ``seq`` still unknown) and the store's
    arguments after the confirmation and scope: the message's columns as JSON, its text
    and tool calls encrypted, the audit record as JSON."""
    values = _new_message(session_id, role, None, fields)
    stored = _encrypted(gateway, values, content, tool_calls)
    row = {key: value for key, value in stored.items()
           if key not in ("seq", "content", "tool_calls")}  # allocated / given as bytea
    record = entry_values(action, user_id=actor.user_id, resource_type=MESSAGE,
                          resource_id=values["id"], metadata=metadata)
    return values, (session_id, actor.user_id, actor.is_admin, require_open,
                    row_json(ChatMessage, row), stored["content"], stored["tool_calls"],
                    row_json(AuditLog, record))


def _stored(rows: Sequence[Any], values: dict[str, Any], content: str,
            tool_calls: list[ToolCall] | None) -> tuple[Any, MessageOut]:
    """The store's answer: the session's row and the message as answered, or 404/409."""
    if not rows:
        raise NotFound(f"no chat session with id {values['session_id']}")
    found = rows[0]
    if not found["stored"]:
        _check_open(found["status"], found["expires_at"])
        raise Conflict("the session was closed or expired while posting; set it to 'active'")
    message = MessageOut.model_validate({**values, "seq": found["message_count"],
                                         "content": content, "tool_calls": tool_calls})
    return found, message


async def _system_message(
    session: AsyncSession, gateway: LLMGateway, session_id: uuid.UUID, owner_id: uuid.UUID
) -> str | None:
    """The ``chat.system`` prompt for the session's owner (theirs, their group's, the
    factory default: docs/prompts.md), its use counted and noted on the session (a rating
    of the session rates it); ROOST_CHAT_SYSTEM_PROMPT when no version resolves."""
    values = {"date": utcnow().date().isoformat()}
    used = await prompts.use(session, owner_id, CHAT_PROMPT_KEY, values=values)
    if used is None:
        # The setting may use {{date}} only (the settings refuse any other placeholder):
        # rendered as its factory version is, never the braces.
        text = gateway.settings.chat_system_prompt
        return prompts.render_chat_setting(text, values) if text else text
    await session.execute(
        update(ChatSession).where(ChatSession.id == session_id,
                                  ChatSession.system_prompt_id.is_distinct_from(used.prompt_id))
        .values(system_prompt_id=used.prompt_id).execution_options(synchronize_session=False))
    return used.text


async def _context(
    session: AsyncSession, gateway: LLMGateway, session_id: uuid.UUID, owner_id: uuid.UUID
) -> list[LLMMessage]:
    """The last messages of the session, oldest first, as the model will see them (never
    starting with a tool result)."""
    limit = await runtime.get(session, runtime_settings.CONTEXT_MESSAGES,
                              gateway.settings.chat_context_messages)
    rows = await driver_fetch(session, _context_statement(),
                              {"session_id": session_id, "context_limit": limit})
    # A window that starts inside a tool exchange would send tool results without the
    # assistant message that called them, which providers refuse (400): they are left
    # out (the window's size is a cap, so it is not widened back to their call).
    while rows and rows[-1]["role"] == "tool":
        rows.pop()
    texts = decrypt_many(gateway.cipher, [row["content"] for row in rows])  # one batch
    out: list[LLMMessage] = []
    system = await _system_message(session, gateway, session_id, owner_id)
    if system:
        out.append(LLMMessage(role="system", content=system))
    history: list[LLMMessage] = []
    for row, text in zip(reversed(rows), reversed(texts), strict=True):
        tool_calls = None
        if row["tool_calls"] is not None:
            tool_calls = _TOOL_CALLS.validate_json(decrypt(gateway.cipher, row["tool_calls"]))
        history.append(LLMMessage(
            role=row["role"], content=text or (None if tool_calls else ""),
            tool_call_id=row["tool_call_id"] if row["role"] == "tool" else None,
            tool_calls=tool_calls,
        ))
    return out + complete_tool_exchanges(history)


def complete_tool_exchanges(history: list[LLMMessage]) -> list[LLMMessage]:
    """``history`` with only whole tool exchanges: a tool result answering no call of the
    assistant message before it, and a call no result answers, are left out (an assistant
    message left with neither text nor calls too).  A client may store either
    (``reply: false``); providers refuse both (400), so every answered post of the session
    failed until the stray message left the window."""
    out: list[LLMMessage] = []
    calling_at: int | None = None  # where the assistant message whose results may follow is
    answered: set[str] = set()

    def close() -> None:
        nonlocal calling_at
        if calling_at is not None:
            calling = out[calling_at]
            # One call per answered id (the first): a message stored before ids were
            # checked may give two calls one id, which one result cannot answer.
            kept, seen = [], set()
            for call in calling.tool_calls or ():
                if call.id in answered and call.id not in seen:
                    kept.append(call)
                    seen.add(call.id)
            if len(kept) != len(calling.tool_calls or ()):
                if kept:
                    out[calling_at] = calling.model_copy(update={"tool_calls": kept})
                elif calling.content:
                    out[calling_at] = calling.model_copy(update={"tool_calls": None})
                else:  # nothing answered it: no result follows it either
                    del out[calling_at]
        calling_at = None
        answered.clear()

    for message in history:
        if message.role == "tool":
            calls = out[calling_at].tool_calls or () if calling_at is not None else ()
            if message.tool_call_id in {c.id for c in calls} and \
                    message.tool_call_id not in answered:
                answered.add(message.tool_call_id or "")
                out.append(message)
            continue
        close()
        out.append(message)
        if message.role == "assistant" and message.tool_calls:
            calling_at = len(out) - 1
    close()
    return out


@functools.cache
def _context_statement() -> Select[str, bytes, str | None, bytes | None]:
    """The columns the model sees of a session's last messages, newest first: plain rows
    on the driver connection (no ORM entities for what is only decrypted and sent on)."""
    return (select(ChatMessage.role, ChatMessage.content, ChatMessage.tool_call_id,
                   ChatMessage.tool_calls)
            .where(ChatMessage.session_id == bindparam("session_id", type_=Uuid))
            .order_by(ChatMessage.seq.desc())
            .limit(bindparam("context_limit", type_=Integer)))


CONTEXT_PREAMBLE = (
    "Answer the next message using these excerpts from the user's documents when they are "
    "relevant, and name the sources you used. If they do not contain the answer, say so."
)


def context_messages(data: MessageCreate) -> list[LLMMessage]:
    """Retrieved excerpts as one system message right before the question they serve."""
    if not data.context:
        return []
    parts = [CONTEXT_PREAMBLE] + [f"[{i}] {p.source}\n{p.text}" for i, p in enumerate(data.context, 1)]
    return [LLMMessage(role="system", content="\n\n".join(parts))]


@dataclass
class Exchange:
    """A stored user message and, when the model is to answer it, its pending call."""

    session_id: uuid.UUID
    owner_id: uuid.UUID
    user_message: MessageOut
    call: calls.PendingCall | None = None

    @property
    def request_id(self) -> uuid.UUID | None:
        return self.call.request_id if self.call is not None else None


async def post_message(
    gateway: LLMGateway, actor: Principal, session_id: uuid.UUID, data: MessageCreate, *,
    session: AsyncSession | None = None,
) -> Exchange:
    """Transaction 1: store the message (and, to be answered, the pending LLM request),
    in ``session`` (a transaction scoped to ``actor``, which the caller commits before
    the model is asked) or in a transaction of its own.

    Routing happens first, so "no provider" (409) and "unknown model" (404) store nothing.
    """
    if session is None:
        async with gateway.transaction(actor) as own:
            return await post_message(gateway, actor, session_id, data, session=own)
    _check_content(data, await runtime.get(session, runtime_settings.MAX_MESSAGE_CHARS,
                                           gateway.settings.chat_max_message_chars))
    if not data.reply:
        return await _record_message(session, gateway, actor, session_id, data)
    # The session's row locked, its counters bumped and the message's position allocated
    # in one statement; a refusal below rolls the bump back with the rest.
    chat_session = (await session.execute(
        _post_statement(), {"session_id": session_id})).one_or_none()
    if chat_session is None or not (actor.is_admin or chat_session.user_id == actor.user_id):
        raise NotFound(f"no chat session with id {session_id}")
    _check_open(chat_session.status, chat_session.expires_at)
    route = await routing.resolve_route(
        session, gateway, data.model or chat_session.model, data.ensemble)
    history = await _context(session, gateway, session_id, chat_session.user_id)
    stored = await _insert_message(
        session, gateway, chat_session.user_id, session_id, seq=chat_session.message_count,
        role=data.role, content=data.content, tool_calls=data.tool_calls,
        tool_call_name=data.tool_call_name, tool_call_id=data.tool_call_id,
        conversation_domain=data.conversation_domain, plan_step=data.plan_step,
        confidence_score=data.confidence_score, embedding_model_used=data.embedding_model_used,
    )
    chat = ChatRequest(
        messages=[*history, *context_messages(data), LLMMessage(role="user", content=data.content)],
        temperature=data.temperature, max_tokens=data.max_tokens, top_p=data.top_p,
        stop=data.stop,
    )
    request_type = "ensemble" if route.mode == "ensemble" else "chat_stream" if data.stream else "chat"
    # Stored as running: the route calls the model as soon as this commits (no separate
    # transaction of four round trips to mark it so).
    call = await calls.add_request(
        session, gateway, _owner_principal(actor, chat_session.user_id), chat, route,
        request_type=request_type, session_id=session_id, running=True,
    )
    await audit.record(session, "chat.message.create", user_id=actor.user_id,
                       resource_type=MESSAGE, resource_id=stored.id,
                       metadata={"seq": stored.seq, "role": stored.role, "reply": True,
                                 "request_id": str(call.request_id), "mode": route.mode,
                                 "providers": [r.name for r in route.refs()]})
    return Exchange(session_id=session_id, owner_id=chat_session.user_id, user_message=stored,
                    call=call)


def _owner_principal(actor: Principal, owner_id: uuid.UUID) -> Principal:
    """LLM records of a session belong to its owner, even when an admin posts."""
    if actor.user_id == owner_id:
        return actor
    return Principal(user_id=owner_id, is_admin=actor.is_admin, kind=actor.kind,
                     group_ids=actor.group_ids)


def usage_out(usage: UsageRecord) -> UsageOut:
    return UsageOut(tokens_input=usage.tokens_input, tokens_output=usage.tokens_output,
                    credits_used=usage.credits_used, latency_ms=usage.latency_ms,
                    model=usage.model)


def _fitted(value: str, length: int) -> str:
    """A provider's tool call id or name fitted to its plain-text column (no NUL, at most
    ``length`` characters): the full value stays in the encrypted ``tool_calls``."""
    return value.replace("\x00", "")[:length]


def _reply_hooks(
    gateway: LLMGateway, actor: Principal, exchange: Exchange
) -> tuple[calls.SuccessHook[ExchangeOut], calls.FailureHook]:
    """What the call's final transaction stores for chat: on success the assistant
    message, on failure nothing more (the user's message stays); audited
    ``chat.message.reply`` either way."""

    async def store_answer(session: AsyncSession, outcome: CallOutcome) -> ExchangeOut:
        result = outcome.result
        assert outcome.usage is not None
        model = result.model or outcome.winner.name
        # The answer is stored even if the session was closed meanwhile (no status check).
        _, answer = await _store_recorded(
            session, gateway, actor, exchange.session_id, role="assistant",
            content=result.content, tool_calls=result.tool_calls or None, fields={
                "tool_call_name": (_fitted(result.tool_calls[0].name, _TOOL_NAME_CHARS)
                                   if result.tool_calls else None),
                "tool_call_id": (_fitted(result.tool_calls[0].id, TOOL_CALL_ID_CHARS)
                                 if result.tool_calls else None),
                "tokens_in": result.tokens_in, "tokens_out": result.tokens_out,
                "model": model, "llm_request_id": outcome.request_id,
                "confidence_score": float(response_confidence(result))},
            require_open=False, action="chat.message.reply",
            metadata={"request_id": str(outcome.request_id), "provider": outcome.winner.name,
                      "model": model, "tokens_in": result.tokens_in,
                      "tokens_out": result.tokens_out, "attempts": len(outcome.attempts)})
        return ExchangeOut(
            user_message=exchange.user_message, assistant_message=answer,
            request_id=outcome.request_id, provider=outcome.winner.name,
            usage=usage_out(outcome.usage),
        )

    async def store_failure(session: AsyncSession, message: str, attempts: Sequence[Attempt]) -> None:
        await audit.record(
            session, "chat.message.reply", user_id=actor.user_id, category="error",
            resource_type=MESSAGE, resource_id=exchange.user_message.id, success=False,
            error_message=message[:1000],
            metadata={"request_id": str(exchange.request_id),
                      "attempts": [{"provider": a.ref.name, "outcome": a.outcome,
                                    "error_kind": a.error_kind} for a in attempts]},
        )

    return store_answer, store_failure


async def answer(gateway: LLMGateway, actor: Principal, exchange: Exchange) -> ExchangeOut:
    """Ask the model (no transaction open meanwhile) and store the answer or the failure."""
    if exchange.call is None:
        return ExchangeOut(user_message=exchange.user_message)
    on_success, on_failure = _reply_hooks(gateway, actor, exchange)
    return await calls.run(gateway, exchange.call, on_success=on_success, on_failure=on_failure)


async def start_stream(
    gateway: LLMGateway, actor: Principal, exchange: Exchange
) -> calls.RecordedStream[ExchangeOut]:
    """Wait for the first chunk (fallback happens here); a failure before any output is
    stored and raised as an ordinary error answer."""
    assert exchange.call is not None
    on_success, on_failure = _reply_hooks(gateway, actor, exchange)
    return await calls.open_stream(gateway, exchange.call, on_success=on_success,
                                   on_failure=on_failure)


async def stream_events(
    exchange: Exchange, stream: calls.RecordedStream[ExchangeOut]
) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
    """Server-sent events: ``start``, ``delta``..., then ``done`` (or ``error``)."""
    yield "start", {"request_id": str(exchange.request_id),
                    "user_message": exchange.user_message.model_dump(mode="json")}
    try:
        async with stream:
            async for chunk in stream.chunks():
                if chunk.delta:
                    yield "delta", {"content": chunk.delta}
    except RoostError as problem:  # recorded as failed; the user's message stays
        yield "error", {"status": problem.status, "title": problem.title, "detail": problem.detail}
        return
    assert stream.saved is not None
    yield "done", stream.saved.model_dump(mode="json")
