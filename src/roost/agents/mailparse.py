"""Parsing an inbound message (stdlib ``email``, ``policy.default``): addresses, subject,
the text and HTML bodies, the threading headers and the attachments.

Pure and CPU-bound: callers run :func:`parse` in a thread.  Whatever it cannot trust it
refuses (:class:`MalformedMail`, an SMTP 554) rather than storing half a message: no
From address, a garbled header block, duplicated unique headers.  HTML is kept as sent
and never rendered; :func:`html_to_text` only extracts its text for an agent's input.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from email import errors as email_errors
from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import Policy
from html.parser import HTMLParser
from typing import Final

from roost.agents.attachments import clean_mime, sanitize_filename
from roost.errors import PayloadTooLarge, Unprocessable

MAX_ATTACHMENTS: Final = 100
# MIME parts the parser builds before it gives up: bodies, attachments and the multipart
# containers around them, with room to spare.  Counted as the parser creates them, so a
# message of tens of thousands of tiny parts is refused after a few hundred, not parsed
# whole first (which took seconds of CPU per megabyte).
MAX_PARTS: Final = 4 * MAX_ATTACHMENTS + 20
MAX_REFERENCES: Final = 50  # a long thread's References keep its root and the latest ones
MAX_HEADER_CHARS: Final = 998  # RFC 5322's line limit, and the columns' length
MAX_ADDRESS_CHARS: Final = 320
# A token holding a control character (NUL among them) or a lone surrogate (the parser's
# stand-in for a byte that is not UTF-8) is no message id: PostgreSQL text cannot hold it.
_MSG_ID = re.compile(r"<[^<>\s\x00-\x1f\x7f\ud800-\udfff]{1,996}>")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NOT_PRINTABLE = re.compile(r"[^\x20-\x7e]")
_UNIQUE_HEADERS: Final = ("from", "subject", "message-id", "in-reply-to", "to", "cc")


class MailRejected(Unprocessable):
    """A message Roost refuses; ``smtp_code`` is the reply the listener gives."""

    smtp_code = "554 5.6.0"


class MalformedMail(MailRejected):
    title, type_slug = "Malformed message", "malformed-mail"


class MailTooLarge(MailRejected):
    status, title, type_slug = PayloadTooLarge.status, "Message too large", "mail-too-large"
    smtp_code = "552 5.3.4"


@dataclass(frozen=True)
class ParsedAttachment:
    name: str
    mime_type: str
    data: bytes


@dataclass(frozen=True)
class ParsedMail:
    from_email: str  # the From address (addr-spec)
    from_header: str  # as displayed: "Name <addr>"
    to: tuple[str, ...]  # addr-specs of To, then Cc
    to_header: str | None
    cc_header: str | None
    subject: str | None
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    body_text: str | None
    body_html: str | None
    date: str | None
    size: int
    attachments: tuple[ParsedAttachment, ...] = field(default=())
    # Why the message is automatic mail no agent should answer (RFC 3834), else None.
    automatic: str | None = None


def clean_text(value: str | None, limit: int | None = None) -> str | None:
    """No NUL (PostgreSQL text cannot hold one) and no lone surrogate (UTF-8 cannot: a
    charset such as ``unicode_escape`` decodes ``\\ud800`` to one), optionally bounded."""
    if value is None:
        return None
    value = _LONE_SURROGATE.sub("\ufffd", value.replace("\x00", ""))
    return value[:limit] if limit is not None else value


_LONE_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def address_text(value: str) -> str | None:
    """An addr-spec as the parser or the SMTP envelope gives it (bytes that are not ASCII
    surrogate-escaped) as text, or None when it is no address Roost can store or look up:
    not UTF-8, or holding a control character such as NUL."""
    try:
        text = value.encode("utf-8", "surrogateescape").decode("utf-8")
    except UnicodeError:
        return None
    return None if _CONTROL.search(text) else text


# An id's bytes, not only its characters: a message id and a thread id are btree keys,
# and an entry past ~2,700 bytes is an error PostgreSQL raises at every try (996
# four-byte characters are ~4,000): a sender was told 451 "try again" for ever.
MAX_MESSAGE_ID_BYTES: Final = 998


def message_ids(value: str | None) -> list[str]:
    """The ``<id>`` tokens of a Message-ID, In-Reply-To or References value (an id
    longer than :data:`MAX_MESSAGE_ID_BYTES` in UTF-8 is none: the message gets one of
    Roost's, as with no id)."""
    return [found for found in _MSG_ID.findall(value or "")
            if len(found.encode("utf-8", "surrogatepass")) <= MAX_MESSAGE_ID_BYTES]


# A Message-ID some mailers write without its angle brackets: one local@domain token.
_BARE_ID = re.compile(r"[^<>\s\x00-\x1f\x7f\ud800-\udfff@]+@[^<>\s\x00-\x1f\x7f\ud800-\udfff@]+")


def _bare_id(value: object) -> list[str]:
    """``[<local@domain>]`` for a Message-ID written as a bare ``local@domain`` (else no id):
    without it the message got a random id of Roost's, and each retry of its delivery
    (a lost ``250``) was stored, and started a run, again."""
    text = str(value or "").strip()
    if not _BARE_ID.fullmatch(text):
        return []
    return message_ids(f"<{text}>")


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _addresses(message: EmailMessage, name: str) -> tuple[list[str], str | None]:
    header = message[name]
    if header is None:
        return [], None
    found = (address_text(a.addr_spec) for a in getattr(header, "addresses", ()))
    specs = [a for a in found if a and "@" in a and len(a) <= MAX_ADDRESS_CHARS]
    return specs, clean_text(_one_line(str(header)))


# Codecs Python has that no mail is written in: a charset naming one is read as UTF-8.
# The escape decoders turn the body's backslashes into characters, and on this Python
# (before 3.11.13, CVE-2025-4516) unicode_escape with an error handler, which the email
# package always passes, can touch freed memory.
_NOT_MAIL_CHARSETS: Final = frozenset({
    "unicode_escape", "raw_unicode_escape", "punycode", "idna", "undefined"})


def _mail_charset(part: Message) -> bool:
    """Whether the part's declared charset (default ASCII) is a codec mail is written in."""
    charset = part.get_param("charset", "ascii")
    try:
        name = codecs.lookup(str(charset)).name.replace("-", "_")
    except (LookupError, TypeError, ValueError):
        return True  # get_content says so (LookupError): the fallback below
    return name not in _NOT_MAIL_CHARSETS


def _text_of(part: Message) -> str:
    try:
        if not _mail_charset(part):
            raise LookupError("not a mail charset")
        content = part.get_content()  # type: ignore[attr-defined]
    except (LookupError, ValueError, AssertionError):  # an unknown charset, a bad encoding
        raw = part.get_payload(decode=True)
        content = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else ""
    text = content if isinstance(content, str) else str(content)
    return clean_text(text.replace("\r\n", "\n")) or ""  # the wire's CRLF, stored as LF


def _data_of(part: Message) -> bytes:
    if part.get_content_type() == "message/rfc822":
        inner = part.get_payload(0)
        try:
            return inner.as_bytes(policy=policy.default)  # type: ignore[union-attr, no-any-return]
        except Exception:  # a forwarded message too broken to serialize again: its text
            return str(inner).encode("utf-8", "replace")
    raw = part.get_payload(decode=True)
    return raw if isinstance(raw, bytes) else b""


def _leaves(part: Message, in_alternative: bool = False) -> Iterator[tuple[Message, bool]]:
    """Every leaf part (a forwarded message counts as one), with whether it sits in a
    multipart/alternative (then a text part is another rendering of the body)."""
    if part.get_content_type() == "message/rfc822" or not part.is_multipart():
        yield part, in_alternative
        return
    alternative = part.get_content_type() == "multipart/alternative"
    for sub in part.get_payload():
        if isinstance(sub, Message):
            yield from _leaves(sub, alternative)


def _attachments(message: EmailMessage, bodies: Sequence[Message],
                 max_bytes: int) -> tuple[ParsedAttachment, ...]:
    found: list[ParsedAttachment] = []
    for part, in_alternative in _leaves(message):
        if any(part is body for body in bodies):
            continue
        ctype = part.get_content_type()
        filename = part.get_filename()
        if ctype in ("text/plain", "text/html") and in_alternative and not filename \
                and part.get_content_disposition() != "attachment":
            continue  # the body's other rendering
        if len(found) >= MAX_ATTACHMENTS:
            raise MailTooLarge(f"the message has more than {MAX_ATTACHMENTS} attachments")
        data = _data_of(part)
        mime = clean_mime(ctype, part.get_content_charset())
        name = sanitize_filename(filename, mime)
        if len(data) > max_bytes:
            raise MailTooLarge(f"attachment {name!r} is {len(data)} bytes; the limit is "
                               f"{max_bytes}")
        found.append(ParsedAttachment(name=name, mime_type=mime, data=data))
    return tuple(found)


def _check_headers(message: EmailMessage) -> None:
    if not message.keys():
        raise MalformedMail("the message has no header")
    if any(isinstance(d, email_errors.MissingHeaderBodySeparatorDefect)
           for d in message.defects):
        raise MalformedMail("the header block has a line that is not a header; separate "
                            "the headers from the body with an empty line")
    for name in _UNIQUE_HEADERS:
        if len(message.get_all(name) or []) > 1:
            raise MalformedMail(f"the message has more than one {name.title()} header")


def _counting_factory() -> Callable[..., EmailMessage]:
    """The parser's message factory, refusing the message past :data:`MAX_PARTS` parts."""
    made = 0

    def make(policy: Policy = policy.default) -> EmailMessage:
        nonlocal made
        made += 1
        if made > MAX_PARTS + 1:  # (the parser calls it once more to try its signature)
            raise MailTooLarge(f"the message has more than {MAX_PARTS} MIME parts")
        return EmailMessage(policy=policy)

    return make


def _automatic(message: EmailMessage) -> str | None:
    """Why ``message`` is automatic mail, which must not be answered automatically (RFC
    3834: an auto-reply to an auto-reply is a mail loop): ``Auto-Submitted`` other than
    ``no``, or ``Precedence`` bulk, junk or list (the older convention of lists and
    autoresponders)."""
    # Every occurrence of each header (a second "Auto-Submitted: auto-replied" after a
    # "no" started a run), its comments dropped ("no (a person)" is RFC 3834's "no").
    for value in message.get_all("auto-submitted") or []:
        submitted = _uncommented(str(value)).split(";")[0].strip().lower()
        if submitted and submitted != "no":
            return (f"automatic message (Auto-Submitted: "
                    f"{_NOT_PRINTABLE.sub('?', submitted)[:50]})")
    for value in message.get_all("precedence") or []:
        precedence = _uncommented(str(value)).strip().lower()
        if precedence in ("bulk", "junk", "list"):
            return f"automatic message (Precedence: {precedence})"
    return None


_COMMENT: Final = re.compile(r"\([^()]*\)")


def _uncommented(value: str) -> str:
    """``value`` without its RFC 5322 comments (nested ones too; at most 10 levels)."""
    for _ in range(10):
        value, found = _COMMENT.subn(" ", value)
        if not found:
            break
    return value


def parse(raw: bytes, *, max_attachment_bytes: int) -> ParsedMail:
    """The message's parts, or :class:`MalformedMail` / :class:`MailTooLarge`."""
    try:
        message = BytesParser(_counting_factory(), policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        _check_headers(message)
        senders, from_header = _addresses(message, "from")
        if len(senders) != 1:
            raise MalformedMail("the message needs exactly one valid From address")
        to, to_header = _addresses(message, "to")
        cc, cc_header = _addresses(message, "cc")
        subject = message["subject"]
        ids = message_ids(str(message["message-id"] or "")) or _bare_id(message["message-id"])
        in_reply_to = message_ids(str(message["in-reply-to"] or ""))
        references = message_ids(" ".join(str(h) for h in message.get_all("references") or []))
        if len(references) > MAX_REFERENCES:  # the root, then the newest
            references = references[:1] + references[-(MAX_REFERENCES - 1):]
        text_part = message.get_body(preferencelist=("plain",))
        html_part = message.get_body(preferencelist=("html",))
        bodies = [p for p in (text_part, html_part) if p is not None]
        date = message["date"]
        return ParsedMail(
            from_email=senders[0], from_header=from_header or senders[0], to=tuple(to + cc),
            to_header=to_header, cc_header=cc_header,
            subject=clean_text(_one_line(str(subject)), 10_000) if subject is not None else None,
            message_id=ids[0] if ids else None,
            in_reply_to=in_reply_to[-1] if in_reply_to else None,
            references=tuple(references),
            body_text=_text_of(text_part) if text_part is not None else None,
            body_html=_text_of(html_part) if html_part is not None else None,
            date=clean_text(_one_line(str(date)), 200) if date is not None else None,
            size=len(raw),
            attachments=_attachments(message, bodies, max_attachment_bytes),
            automatic=_automatic(message),
        )
    except MailRejected:
        raise
    except Exception as exc:  # the parser's own failures on hostile input
        raise MalformedMail(f"the message cannot be parsed ({type(exc).__name__})") from None


class _TextExtractor(HTMLParser):
    _SKIP: Final = frozenset({"script", "style", "head", "title"})
    _BREAK: Final = frozenset({"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5",
                               "h6", "blockquote", "pre", "table"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BREAK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(html: str) -> str:
    """The visible text of an HTML body (no rendering, no fetching): for an agent's input
    when a message has no text part."""
    extractor = _TextExtractor()
    extractor.feed(html)
    extractor.close()
    text = "".join(extractor.parts)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
