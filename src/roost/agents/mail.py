"""A persona's mailbox: storing inbound mail (from :mod:`roost.agents.mailserver`),
sending mail through the configured relay, reading both.

**Inbound.**  :func:`receive` parses a message (in a thread), writes its attachments
(content-addressed, :mod:`roost.agents.attachments`) and then, in one transaction, for
each recipient persona and in the scope of its owner (row-level security applies):
the ``emails`` row (idempotent on the persona, the direction and the Message-ID), its
``attachments`` rows, a run of the persona's ``email_agent_id`` (``source="email"``)
and an audit record.  Automatic mail (RFC 3834 ``Auto-Submitted``, ``Precedence``
bulk/junk/list, an empty envelope sender, the persona's own sent mail come back) is
stored and starts no run: answering it would loop.  A message without a Message-ID gets
one, so it can be threaded and answered.

**Threading.**  ``thread_id`` is the Message-ID of the thread's first message: the
thread of the persona's own earlier mail that the message answers (In-Reply-To, then
References newest first), else the first of References (the root, RFC 5322), else
In-Reply-To, else the message's own id.

**Outbound.**  :func:`send_email` records the message (``sent_at`` empty), delivers it
through ``ROOST_SMTP_RELAY_URL`` with no transaction open (smtplib in a thread), then
sets ``sent_at`` with the audit record; a refused delivery deletes the row and is
audited as a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import smtplib
import ssl
import unicodedata
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Final

import structlog
from email_validator import EmailNotValidError, validate_email
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents import mailparse
from roost.agents.attachments import StoredBlob, store_blob
from roost.agents.mail_schemas import SUBJECT_PATTERN, EmailSend
from roost.agents.models import Agent, Attachment, Email, Persona, Run
from roost.agents.runs import create_run
from roost.agents.schemas import MAX_RUN_INPUT_CHARS, RunCreate, address_key
from roost.audit.service import record
from roost.config import Relay, Settings, parse_relay_url
from roost.db.base import utcnow, uuid7
from roost.db.engine import Database
from roost.errors import (
    BadGateway,
    Conflict,
    Forbidden,
    GatewayTimeout,
    NotFound,
    RoostError,
    ServiceUnavailable,
    Unprocessable,
)
from roost.identity.common import lock_owner_quota
from roost.identity.models import User, UserGroupMembership
from roost.identity.tenancy import apply_principal
from roost.inputs import parse_tool_arguments
from roost.pagination import DEFAULT_LIMIT, newest_first, where_equal
from roost.principal import Principal
from roost.process import cpu_bound
from roost.tools.schemacheck import NO_NUL_PATTERN

log = structlog.get_logger(__name__)

EDITOR_ROLES: Final = ("owner", "editor")
MAX_RECIPIENTS: Final = 50


@dataclass(frozen=True)
class MailConfig:
    data_dir: Path
    max_message_bytes: int
    max_attachment_bytes: int
    relay: Relay | None
    from_domain: str
    timeout_s: float
    app_role: str
    max_connections: int  # the listener's (mailserver.ConnectionGate)
    max_connections_per_address: int
    max_mail_runs_per_hour: int  # per persona (_start_run)

    @classmethod
    def from_settings(cls, settings: Settings) -> MailConfig:
        url = settings.smtp_relay_url.get_secret_value() if settings.smtp_relay_url else ""
        return cls(data_dir=settings.data_dir,
                   max_message_bytes=settings.smtp_max_message_bytes,
                   max_attachment_bytes=settings.smtp_max_attachment_bytes,
                   relay=parse_relay_url(url) if url else None,
                   from_domain=settings.smtp_from_domain, timeout_s=settings.smtp_timeout_s,
                   app_role=settings.db_app_role,
                   max_connections=settings.smtp_max_connections,
                   max_connections_per_address=settings.smtp_max_connections_per_address,
                   max_mail_runs_per_hour=settings.smtp_max_mail_runs_per_hour)


@dataclass(frozen=True)
class Received:
    email_id: uuid.UUID
    persona_id: uuid.UUID
    created: bool  # false: this Message-ID was already in the persona's mailbox
    run_id: uuid.UUID | None


# --- who may read and send -----------------------------------------------------------


async def persona_role(session: AsyncSession, actor: Principal, persona_id: uuid.UUID) -> str:
    """The actor's role in the persona (``admin`` for administrators), 404 when they
    may not see it (row-level security answers the same)."""
    persona = await session.get(Persona, persona_id)
    if persona is None:
        raise NotFound(f"persona {persona_id} does not exist")
    if actor.is_admin:
        return "admin"
    role = await session.scalar(select(func.roost_persona_role(persona_id)))
    if role is None:
        raise NotFound(f"persona {persona_id} does not exist")
    return str(role)


# --- inbound -------------------------------------------------------------------------


async def find_persona_id(database: Database, address: str) -> uuid.UUID | None:
    """The active persona receiving mail at ``address`` (as the system: the sender is
    nobody in particular).  An address that is not UTF-8 or holds a control character is
    nobody's, and is not sent to PostgreSQL (its text cannot hold it)."""
    text = mailparse.address_text(address)
    if text is None:
        return None
    async with database.transaction() as session:
        return await session.scalar(select(Persona.id).where(
            func.lower(Persona.email_address) == address_key(text), Persona.is_active))


async def _thread_of(session: AsyncSession, persona_id: uuid.UUID,
                     parsed: mailparse.ParsedMail, own_id: str) -> str:
    answered = ([parsed.in_reply_to] if parsed.in_reply_to else []) + \
        list(reversed(parsed.references))
    if answered:
        # A Message-ID stored twice (a received mail reusing one the persona sent): the
        # persona's own sent mail decides, else the first stored; a later copy must not
        # steer the replies to a mail into a thread its sender chose.
        known: dict[str, str] = {}
        for message_id, thread in (await session.execute(
                select(Email.message_id, func.coalesce(Email.thread_id, Email.message_id))
                .where(Email.persona_id == persona_id, Email.message_id.in_(answered))
                .order_by(Email.direction != "outbound", Email.created_at))).tuples():
            known.setdefault(str(message_id), str(thread))
        for message_id in answered:  # the most recent message it answers first
            if message_id in known:
                return str(known[message_id])
    if parsed.references:
        return parsed.references[0]
    return parsed.in_reply_to or own_id


def _run_input(persona: Persona, email_id: uuid.UUID, parsed: mailparse.ParsedMail,
               message_id: str, attachments: Sequence[Attachment]) -> str:
    lines = [f"You received an email in the mailbox of {persona.name} "
             f"<{persona.email_address}> (email id {email_id}).",
             f"From: {parsed.from_header}"]
    if parsed.to_header:
        lines.append(f"To: {parsed.to_header}")
    if parsed.cc_header:
        lines.append(f"Cc: {parsed.cc_header}")
    if parsed.date:
        lines.append(f"Date: {parsed.date}")
    lines += [f"Subject: {parsed.subject or '(no subject)'}", f"Message-ID: {message_id}"]
    if attachments:
        lines.append("Attachments: " + ", ".join(
            f"{a.name} ({a.mime_type}, {a.file_size} bytes, id {a.id})" for a in attachments))
    if parsed.body_text is not None:
        body = parsed.body_text
    elif parsed.body_html is not None:
        body = mailparse.html_to_text(parsed.body_html)
    else:
        body = "(no text)"
    text = "\n".join(lines) + "\n\n" + body.strip()
    return text[:MAX_RUN_INPUT_CHARS]


async def _owner_principal(session: AsyncSession, owner_id: uuid.UUID) -> Principal | None:
    """The persona owner as the actor of what their mail starts, while their account is
    active (a suspended owner's mail is stored, it starts nothing)."""
    user = await session.get(User, owner_id)
    if user is None or user.status != "active" or not user.is_active:
        return None
    groups = frozenset((await session.scalars(select(UserGroupMembership.group_id).where(
        UserGroupMembership.user_id == owner_id))).all())
    return Principal(user_id=owner_id, is_admin=False, kind="system", group_ids=groups)


async def _deliver_to(
    session: AsyncSession, cfg: MailConfig, persona: Persona, parsed: mailparse.ParsedMail,
    message_id: str, blobs: Sequence[tuple[mailparse.ParsedAttachment, StoredBlob]],
    recipient: str, owner: Principal | None, automatic: str | None,
) -> Received:
    """One persona's copy of the message, in the transaction of :func:`receive`."""
    scope = owner or Principal(user_id=persona.owner_id, is_admin=False, kind="system")
    await apply_principal(session, scope, app_role=cfg.app_role)
    email_id = uuid7()
    now = utcnow()
    header_to = {address_key(a) for a in parsed.to}
    inserted = await session.scalar(pg_insert(Email).values(
        id=email_id, persona_id=persona.id, user_id=persona.owner_id, direction="inbound",
        message_id=message_id, in_reply_to=parsed.in_reply_to,
        thread_id=await _thread_of(session, persona.id, parsed, message_id),
        from_email=parsed.from_email, to_email=parsed.to_header or recipient,
        cc=parsed.cc_header, bcc=None if address_key(recipient) in header_to else recipient,
        subject=parsed.subject, body_text=parsed.body_text, body_html=parsed.body_html,
        size_bytes=parsed.size, received_at=now, created_at=now,
    ).on_conflict_do_nothing(
        index_elements=[Email.persona_id, Email.direction, Email.message_id],
        index_where=Email.message_id.is_not(None),
    ).returning(Email.id))
    if inserted is None:  # a retransmission: the first copy stands
        existing = await session.scalar(select(Email).where(
            Email.persona_id == persona.id, Email.direction == "inbound",
            Email.message_id == message_id))
        assert existing is not None
        return Received(existing.id, persona.id, False, existing.run_id)
    attachments = [Attachment(id=uuid7(), email_id=email_id, persona_id=persona.id,
                              user_id=persona.owner_id, name=part.name,
                              file_path=blob.file_path, file_size=blob.size,
                              mime_type=part.mime_type, sha256=blob.sha256, created_at=now)
                   for part, blob in blobs]
    session.add_all(attachments)
    await session.flush()
    run_id, skipped = await _start_run(session, cfg, persona, owner, email_id, parsed,
                                       message_id, attachments, automatic)
    await record(session, "agent.email.receive", user_id=persona.owner_id,
                 persona_id=persona.id, run_id=run_id, resource_type="email",
                 resource_id=email_id,
                 metadata={"message_id": message_id[:300], "size": parsed.size,
                           "attachments": len(attachments), "run_skipped": skipped})
    return Received(email_id, persona.id, True, run_id)


async def _mail_runs_in_last_hour(session: AsyncSession, persona_id: uuid.UUID) -> int:
    """Runs the persona's inbound mail started in the last hour, counted under a lock of
    the persona's own (held to the end of the transaction), so messages delivered at once
    cannot all pass the cap."""
    await lock_owner_quota(session, persona_id, "mail-runs")
    return int(await session.scalar(
        select(func.count()).select_from(Email).where(
            Email.persona_id == persona_id, Email.direction == "inbound",
            Email.run_id.is_not(None),
            Email.created_at > func.now() - timedelta(hours=1))) or 0)


async def _start_run(
    session: AsyncSession, cfg: MailConfig, persona: Persona, owner: Principal | None,
    email_id: uuid.UUID, parsed: mailparse.ParsedMail, message_id: str,
    attachments: Sequence[Attachment], automatic: str | None,
) -> tuple[uuid.UUID | None, str | None]:
    """A run of the persona's mail agent, as its owner; (run id, why none was started).
    Automatic mail (an auto-reply, a bounce, the persona's own mail come back) starts
    none: answering it is how two agents, or an agent and an autoresponder, would mail
    each other for ever, a run and LLM calls per turn."""
    if persona.email_agent_id is None:
        return None, None
    if automatic is not None:
        return None, automatic
    own = await session.scalar(select(Email.id).where(
        Email.persona_id == persona.id, Email.direction == "outbound",
        Email.message_id == message_id).limit(1))
    if own is not None:  # relayed back to its own mailbox (a copy to itself, a loop)
        return None, "the persona's own sent mail"
    if owner is None:
        return None, "the persona's owner account is not active"
    agent = await session.get(Agent, persona.email_agent_id)  # in the owner's scope
    if agent is None:
        return None, "the mail agent is not visible to the persona's owner"
    if agent.persona_id != persona.id:  # moved to another persona since it was chosen
        return None, "the mail agent no longer belongs to the persona"
    if not agent.is_active:
        return None, "the mail agent is inactive"
    if await _mail_runs_in_last_hour(session, persona.id) >= cfg.max_mail_runs_per_hour:
        # A correspondent whose mail is not marked automatic (another system's agent, a
        # flood) would otherwise cost a run and its LLM calls per message, for ever.
        return None, (f"the persona's mail started {cfg.max_mail_runs_per_hour} runs in "
                      "the last hour (ROOST_SMTP_MAX_MAIL_RUNS_PER_HOUR)")
    body = RunCreate(input=_run_input(persona, email_id, parsed, message_id, attachments),
                     idempotency_key=f"email:{email_id}")
    try:
        # A savepoint: the owner's plan refusing the run (no credits left, the day's runs
        # taken) stores the mail without one, as every other reason not to start one
        # does; raised, it made the listener refuse the whole message (451) for ever,
        # the copies of other personas' owners with it.
        async with session.begin_nested():
            run, _created = await create_run(session, owner, agent, body, source="email")
    except RoostError as exc:
        return None, f"the run was refused: {exc.detail}"
    await session.execute(update(Email).where(Email.id == email_id).values(run_id=run.id))
    return run.id, None


async def receive(database: Database, cfg: MailConfig, raw: bytes,
                  recipients: Sequence[str], *, sender: str | None = None) -> list[Received]:
    """Store ``raw`` in the mailbox of each active persona among ``recipients`` (the
    envelope's), all in one transaction.  ``sender``: the envelope's (``MAIL FROM``),
    empty for a bounce; None when unknown.  Raises :class:`mailparse.MailRejected` for a
    message Roost refuses; nothing is stored then."""
    if len(raw) > cfg.max_message_bytes:
        raise mailparse.MailTooLarge(f"the message is {len(raw)} bytes; the limit is "
                                     f"{cfg.max_message_bytes}")
    parsed = await cpu_bound(mailparse.parse, raw, max_attachment_bytes=cfg.max_attachment_bytes)
    message_id = parsed.message_id or f"<{uuid7()}@{cfg.from_domain or 'roost.invalid'}>"
    automatic = parsed.automatic or (
        "automatic message (empty envelope sender: a bounce or delivery report)"
        if sender == "" else None)
    blobs = [(part, await store_blob(cfg.data_dir, part.data)) for part in parsed.attachments]
    delivered: list[Received] = []
    async with database.transaction() as session:
        wanted = {address_key(r) for r in recipients}
        personas = list((await session.scalars(
            select(Persona).where(func.lower(Persona.email_address).in_(wanted),
                                  Persona.is_active)
            .order_by(Persona.id))).all())
        owners = {p.owner_id: await _owner_principal(session, p.owner_id) for p in personas}
        for persona in personas:
            recipient = str(persona.email_address)
            delivered.append(await _deliver_to(session, cfg, persona, parsed, message_id,
                                               blobs, recipient, owners[persona.owner_id],
                                               automatic))
    for item in delivered:
        log.info("agents.mail_received", email_id=str(item.email_id),
                 persona_id=str(item.persona_id), created=item.created,
                 run_id=str(item.run_id) if item.run_id else None)
    return delivered


# --- outbound ------------------------------------------------------------------------


def _send_blocking(relay: Relay, helo: str, timeout_s: float, message: EmailMessage,
                   sender: str, recipients: list[str]) -> dict[str, Any]:
    context = ssl.create_default_context()
    client: smtplib.SMTP
    if relay.scheme == "smtps":
        client = smtplib.SMTP_SSL(relay.host, relay.port, local_hostname=helo,
                                  timeout=timeout_s, context=context)
    else:
        client = smtplib.SMTP(relay.host, relay.port, local_hostname=helo, timeout=timeout_s)
    try:
        client.ehlo()
        if relay.scheme == "smtp" and client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
        elif relay.scheme == "smtp" and relay.username and not relay.loopback:
            raise smtplib.SMTPNotSupportedError(
                "the relay does not offer STARTTLS; Roost does not send credentials in clear "
                "(use smtps:// or a relay on loopback)")
        if relay.username:
            client.login(relay.username, relay.password or "")
        return dict(client.send_message(message, from_addr=sender, to_addrs=recipients))
    finally:
        # Not ``with client``: its QUIT raises on any reply but 221, and a relay that has
        # queued the message (or refused it) cannot change that with its goodbye.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        client.close()


def _timed_out(exc: BaseException) -> bool:
    """Whether the relay stopped answering: smtplib reports a read that timed out as
    :class:`smtplib.SMTPServerDisconnected`, the timeout being its context."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _ascii_domain(domain: str) -> str:
    """``domain`` as SMTP commands and mail headers carry it: an internationalized name in
    its IDNA form (``xn--…``, IDNA 2008 as the recipients' check uses), the same domain
    for every relay, with or without SMTPUTF8."""
    if domain.isascii():
        return domain
    try:
        return validate_email(f"x@{domain}", check_deliverability=False,
                              globally_deliverable=False).ascii_domain
    except EmailNotValidError as exc:
        raise Unprocessable(f"the mail domain {domain[:100]!r} is not a valid "
                            f"internationalized domain name: {exc}") from None


def _ascii_address(value: str) -> str:
    local, _, domain = value.rpartition("@")
    return f"{local}@{_ascii_domain(domain)}"


def _mail_domain(cfg: MailConfig, sender: str) -> str:
    """The domain of the Message-IDs Roost writes and of its EHLO."""
    return _ascii_domain(cfg.from_domain or sender.rpartition("@")[2])


def _address(value: str, name: str | None = None) -> Address:
    local, _, domain = value.rpartition("@")
    return Address(display_name=_display_name(name or ""), username=local,
                   domain=_ascii_domain(domain))


def _display_name(name: str) -> str:
    """A persona's name as one header line: line breaks and other white space become one
    space, control characters go (the API refuses them; older names may hold them)."""
    return "".join(c for c in " ".join(name.split()) if unicodedata.category(c) != "Cc")


def _plain_id(message_id: str) -> bool:
    """Whether ``message_id`` can be written in In-Reply-To/References as it is: printable
    ASCII, not one that reads as an encoded word, and short enough for a header line of
    its own (a 998-character id, which inbound mail may carry, was written as encoded
    words)."""
    return ("=?" not in message_id and len(message_id) <= MAX_WRITTEN_ID_CHARS
            # Anything but printable ASCII is written as an encoded word (the policy is
            # not SMTPUTF8), which no client threads on.
            and message_id.isascii() and message_id.isprintable())


# Header lines written up to RFC 5322's 998 characters, not folded at 78: Python's email
# package mangles what it folds (a long Message-ID in In-Reply-To or References became
# encoded words, so the recipient's client could not thread the reply; a long quoted
# display name lost its quotes, so a comma split the sender in two and a "<x@y>" in it
# became the sender a reader sees).
OUTBOUND_POLICY: Final = email.policy.default.clone(max_line_length=998)
# An id folded onto a line of its own is written after one space: 997 characters at most.
MAX_WRITTEN_ID_CHARS: Final = 997


def _refuse_changed_addresses(message: EmailMessage, sender: Address,
                              recipients: list[Address]) -> None:
    """422 unless the written From, To and Cc read back as the addresses set (the sender
    with its display name): no spelling of a name or an address may make a reader see
    another sender or other recipients than those the message goes to."""
    written = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)

    def read(name: str) -> list[tuple[str, str]]:
        header = written[name]
        return [] if header is None else [(a.display_name, a.addr_spec.lower())
                                          for a in header.addresses]

    if read("From") != [(sender.display_name, sender.addr_spec.lower())]:
        raise Unprocessable("the persona's name cannot be written as a mail sender's name: "
                            "rename the persona", extra={"field": "from"})
    if [a for _, a in read("To") + read("Cc")] != [r.addr_spec.lower() for r in recipients]:
        raise Unprocessable("a recipient cannot be written in the mail's headers as given",
                            extra={"field": "to"})


def _refuse_broken_headers(message: EmailMessage) -> None:
    """422 for a header that, as Python's email package writes it, is not one header line
    (folded lines aside): an RFC 2047 encoded word (``=?utf-8?q?a=0D=0ABcc=3A_x?=``) in a
    subject, a recipient's local part or the persona's name is decoded when the header is
    set, and this Python writes what it decodes to out raw (a CR LF: a header line of the
    sender's choosing; a VT, which splits a line for some readers).  What is checked is
    the written header itself, so no spelling of the value gets past it."""
    for name, value in message.items():
        written = message.policy.fold(name, value).removesuffix("\n")
        lines = written.split("\n")
        if any(line[:1] not in (" ", "\t") for line in lines[1:]) or any(
                len(line.splitlines()) > 1 or "\x00" in line for line in lines):
            raise Unprocessable(f"the {name.lower()} decodes to a line break (an encoded word "
                                "=?...?= holding one): refused, no header injection",
                                extra={"field": name.lower()})


async def _prepare_outbound(
    session: AsyncSession, cfg: MailConfig, actor: Principal, persona_id: uuid.UUID,
    body: EmailSend, run_id: uuid.UUID | None,
) -> tuple[Email, EmailMessage]:
    role = await persona_role(session, actor, persona_id)
    if role not in (*EDITOR_ROLES, "admin"):
        raise Forbidden("only the persona's owners and editors send its mail")
    # After the sender's rights: someone else's persona is a 404 whatever the server's mail.
    if cfg.relay is None:
        raise ServiceUnavailable("sending mail is disabled: set ROOST_SMTP_RELAY_URL to an "
                                 "SMTP relay")
    persona = await session.get(Persona, persona_id)
    assert persona is not None
    if not persona.is_active:  # its mailbox is off: inbound mail to it is refused too
        raise Conflict(f"persona {persona_id} is inactive: set is_active to true to send "
                       "its mail")
    if not persona.email_address:
        raise Unprocessable(f"persona {persona_id} has no email address to send from; set "
                            "its email_address first")
    parent: Email | None = None
    if body.in_reply_to is not None:
        parent = await session.scalar(select(Email).where(
            Email.id == body.in_reply_to, Email.persona_id == persona_id))
        if parent is None:
            raise NotFound(f"email {body.in_reply_to} is not in this persona's mailbox")
    message_id = make_msgid(idstring=uuid7().hex,
                            domain=_mail_domain(cfg, persona.email_address))
    message = EmailMessage(policy=OUTBOUND_POLICY)
    sender = _address(persona.email_address, persona.name)
    message["From"] = sender
    message["To"] = [_address(a) for a in body.to]
    if body.cc:
        message["Cc"] = [_address(a) for a in body.cc]
    message["Subject"] = body.subject
    message["Date"] = format_datetime(utcnow())
    message["Message-ID"] = message_id
    if run_id is not None:  # an agent's mail: no autoresponder, Roost's included, answers it
        message["Auto-Submitted"] = "auto-replied" if parent is not None else "auto-generated"
    thread_id = message_id
    if parent is not None and parent.message_id:
        thread_id = parent.thread_id or parent.message_id
        # Ids a stranger chose: one holding an encoded word ("=?...?=", which Python's email
        # package decodes, a CR LF into a header line of the stranger's) is left out.
        if _plain_id(parent.message_id):
            message["In-Reply-To"] = parent.message_id
        references = [i for i in dict.fromkeys((parent.thread_id, parent.message_id))
                      if i and _plain_id(i)]
        if references:
            message["References"] = " ".join(references)
    _refuse_broken_headers(message)
    if str(message["Subject"]) != body.subject:
        # The header parser decodes an encoded word ("=?utf-8?q?...?=") set as text: the
        # recipient would read another subject (any text, a right-to-left override too)
        # than the one stored and shown here.  (One decoding to a line break is refused
        # above, naming that.)
        raise Unprocessable("the subject holds an encoded word (=?charset?...?=), which a "
                            "recipient would read decoded: write its text instead",
                            extra={"field": "subject"})
    _refuse_changed_addresses(message, sender, [*message["To"].addresses,
                                                *(message["Cc"].addresses if body.cc else ())])
    message.set_content(body.body)
    email = Email(id=uuid7(), persona_id=persona_id, user_id=actor.user_id or persona.owner_id,
                  run_id=run_id, direction="outbound", message_id=message_id,
                  in_reply_to=parent.message_id if parent else None, thread_id=thread_id,
                  from_email=persona.email_address, to_email=", ".join(body.to),
                  cc=", ".join(body.cc) or None, bcc=", ".join(body.bcc) or None,
                  subject=body.subject, body_text=body.body,
                  size_bytes=len(message.as_bytes()), created_at=utcnow())
    session.add(email)
    await session.flush()
    return email, message


async def send_email(
    database: Database, cfg: MailConfig, actor: Principal, persona_id: uuid.UUID,
    body: EmailSend, *, run_id: uuid.UUID | None = None,
) -> Email:
    """Send ``body`` from the persona's address through the relay and keep it in the
    persona's mailbox (``direction`` outbound).  The actor must be an owner or editor of
    the persona; ``run_id``: the run whose agent sent it."""
    # Before the row exists (EmailSend has checked each domain: this does not fail).
    recipients = list(dict.fromkeys(_ascii_address(a) for a in [*body.to, *body.cc, *body.bcc]))
    async with database.transaction() as session:
        await apply_principal(session, actor, app_role=cfg.app_role)
        email, message = await _prepare_outbound(session, cfg, actor, persona_id, body, run_id)
    assert cfg.relay is not None  # checked by _prepare_outbound
    helo = _mail_domain(cfg, email.from_email)
    failure: RoostError | None = None
    refused: dict[str, Any] = {}
    try:
        refused = await asyncio.to_thread(_send_blocking, cfg.relay, helo, cfg.timeout_s,
                                          message, _ascii_address(email.from_email),
                                          recipients)
    except smtplib.SMTPResponseException as exc:
        reply = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) \
            else str(exc.smtp_error)
        failure = BadGateway(f"the SMTP relay refused the message: {exc.smtp_code} "
                             f"{' '.join(reply.split())[:300]}")
    except smtplib.SMTPRecipientsRefused as exc:
        failure = BadGateway(f"the SMTP relay refused every recipient "
                             f"({', '.join(sorted(exc.recipients))[:300]})")
    except (smtplib.SMTPException, OSError) as exc:
        if _timed_out(exc):  # connecting, or a reply (greeting, after DATA, ...)
            failure = GatewayTimeout(f"the SMTP relay did not answer within "
                                     f"{cfg.timeout_s:g} s")
        else:
            failure = BadGateway(f"the SMTP relay could not be reached or used: "
                                 f"{type(exc).__name__}: {str(exc)[:300]}")
    async with database.transaction() as session:
        await apply_principal(session, actor, app_role=cfg.app_role)
        sent: Email | None = None
        if failure is not None:
            await session.execute(delete(Email).where(Email.id == email.id))
        else:
            sent = await session.scalar(update(Email).where(Email.id == email.id)
                                        .values(sent_at=utcnow()).returning(Email))
        await record(session, "agent.email.send", user_id=actor.user_id, persona_id=persona_id,
                     run_id=run_id, resource_type="email", resource_id=email.id,
                     success=failure is None, category="action" if failure is None else "error",
                     error_message=failure.detail if failure else None,
                     metadata={"message_id": email.message_id, "recipients": len(recipients),
                               "refused": sorted(refused)})
    if failure is not None:
        raise failure
    if sent is None:
        raise NotFound(f"email {email.id} does not exist")
    log.info("agents.mail_sent", email_id=str(email.id), persona_id=str(persona_id),
             recipients=len(recipients), refused=len(refused))
    return sent


# --- reading --------------------------------------------------------------------------


async def list_emails(
    session: AsyncSession, actor: Principal, persona_id: uuid.UUID, *,
    thread_id: str | None = None, direction: str | None = None,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[Email], str | None]:
    """The persona's mail, newest first (members only)."""
    await persona_role(session, actor, persona_id)
    stmt = where_equal(select(Email).where(Email.persona_id == persona_id),
                       (Email.thread_id, thread_id), (Email.direction, direction))
    return await newest_first(session, stmt, Email.created_at, Email.id, limit=limit,
                              cursor=cursor)


async def get_email(session: AsyncSession, actor: Principal, email_id: uuid.UUID) -> Email:
    email = await session.get(Email, email_id)
    if email is None:
        raise NotFound(f"email {email_id} does not exist")
    await persona_role(session, actor, email.persona_id)
    return email


# --- the send_email tool ---------------------------------------------------------------

# A global built-in ``tools`` row (kind ``builtin``) with this id, name and schema lets
# agents call :func:`send_email_tool` (see docs/agents-mail.md, "Sending from an agent").
SEND_EMAIL_TOOL_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000601")
SEND_EMAIL_TOOL_NAME: Final = "send_email"
SEND_EMAIL_TOOL_DESCRIPTION: Final = (
    "Send an email from your persona's address. to: recipient addresses; subject; body "
    "(plain text); in_reply_to: the id of an email in your mailbox to answer (threads the "
    "reply).")
SEND_EMAIL_TOOL_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["to", "subject", "body"],
    "properties": {
        "to": {"type": "array", "minItems": 1, "maxItems": MAX_RECIPIENTS,
               "items": {"type": "string", "minLength": 3, "maxLength": 320}},
        "cc": {"type": "array", "maxItems": MAX_RECIPIENTS,
               "items": {"type": "string", "minLength": 3, "maxLength": 320}},
        # Every line break the API refuses (migration 1180 gives the stored row the same).
        "subject": {"type": "string", "maxLength": 998, "pattern": SUBJECT_PATTERN},
        "body": {"type": "string", "maxLength": 1_000_000, "pattern": NO_NUL_PATTERN},
        "in_reply_to": {"type": "string", "format": "uuid"},
    },
}


async def send_email_tool(database: Database, cfg: MailConfig, actor: Principal,
                          arguments: dict[str, Any], *, run_id: uuid.UUID | None) -> dict[str, Any]:
    """The ``send_email`` built-in: mail from the persona of the calling run."""
    if run_id is None:
        raise Unprocessable("send_email is for agent runs: it sends from the run's persona")
    async with database.transaction() as session:
        await apply_principal(session, actor, app_role=cfg.app_role)
        persona_id = await session.scalar(select(Run.persona_id).where(Run.id == run_id))
    if persona_id is None:
        raise Unprocessable("this run's agent has no persona, so no mailbox to send from")
    # The schema the model is offered has no bcc (an agent's mail has no hidden
    # recipients); EmailSend, the API's body, has.
    extra = sorted(set(arguments) - set(SEND_EMAIL_TOOL_SCHEMA["properties"]))
    if extra:
        raise Unprocessable(f"send_email arguments are not valid: {', '.join(extra)[:200]}: "
                            "not an argument of send_email")
    body = parse_tool_arguments(EmailSend, "send_email", arguments)
    email = await send_email(database, cfg, actor, persona_id, body, run_id=run_id)
    return {"email_id": str(email.id), "message_id": email.message_id,
            "thread_id": email.thread_id, "to": body.to,
            "sent_at": email.sent_at.isoformat() if email.sent_at else None}


BuiltinTool = Callable[[Database, Principal, dict[str, Any], uuid.UUID | None],
                       Awaitable[dict[str, Any]]]


def builtin_tools(cfg: MailConfig) -> dict[uuid.UUID, BuiltinTool]:
    """The agents domain's built-in tools by ``tools`` row id, for the tool caller to run
    (the tools domain is below this one and cannot import it)."""

    async def send(database: Database, actor: Principal, arguments: dict[str, Any],
                   run_id: uuid.UUID | None) -> dict[str, Any]:
        return await send_email_tool(database, cfg, actor, arguments, run_id=run_id)

    return {SEND_EMAIL_TOOL_ID: send}
