"""Hostile inbound mail, as any sender who knows one persona's address could send it: a
message of tens of thousands of tiny parts is refused as the parser builds them (not
after parsing the whole tree), deeply nested multiparts are malformed rather than a
crash, and encoded attachment names end as harmless labels."""

from __future__ import annotations

import time

import pytest

from roost.agents import mailparse

HEAD = (b"From: a@example.com\r\nTo: b@example.com\r\nMIME-Version: 1.0\r\n")


def test_a_mail_of_tens_of_thousands_of_tiny_parts_is_refused_early() -> None:
    raw = (HEAD + b"Content-Type: multipart/mixed; boundary=X\r\n\r\n"
           + b"--X\r\nContent-Type: application/x\r\n\r\nz\r\n" * 25_000 + b"--X--\r\n")
    assert len(raw) < 1_100_000  # a megabyte, well under the SMTP size limit
    started = time.monotonic()
    with pytest.raises(mailparse.MailTooLarge,
                       match=f"more than {mailparse.MAX_PARTS} MIME parts"):
        mailparse.parse(raw, max_attachment_bytes=10_000)
    # Parsing the whole tree took ~15 s of CPU; the refusal takes a small fraction of a
    # second (the bound leaves room for a loaded machine).
    assert time.monotonic() - started < 5


def test_deeply_nested_multiparts_are_refused_as_malformed() -> None:
    raw = HEAD + b"".join(b"Content-Type: multipart/mixed; boundary=B%d\r\n\r\n--B%d\r\n"
                          % (i, i) for i in range(3000))
    raw += b"Content-Type: text/plain\r\n\r\nx\r\n"
    with pytest.raises(mailparse.MailRejected):
        mailparse.parse(raw, max_attachment_bytes=10_000)


@pytest.mark.parametrize("disposition", [
    b"attachment; filename*=utf-8''%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    b"attachment; filename*=x-unknown''abc",
    b"attachment; filename*=utf-8''%FF%FE%00",
    b"attachment; filename*0*=utf-8''a; filename*2=b; filename*1*=%ZZ",
    b'attachment; filename="=?utf-8?b?Li4vLi4vZXRjL3Bhc3N3ZA==?="',
    b'attachment; filename="=?x-bogus?q?abc?="',
    b'attachment; filename="\xff\xfe.txt"',
], ids=["rfc2231-dotdot", "unknown-charset", "rfc2231-nul", "broken-continuations",
        "encoded-word-dotdot", "bogus-encoded-word", "raw-bytes"])
def test_an_encoded_attachment_name_stays_a_plain_label(disposition: bytes) -> None:
    raw = (HEAD + b"Content-Type: multipart/mixed; boundary=XX\r\n\r\n--XX\r\n"
           b"Content-Type: text/plain\r\n\r\nhi\r\n--XX\r\n"
           b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
           b"Content-Disposition: " + disposition + b"\r\n\r\naGVsbG8=\r\n--XX--\r\n")
    (attachment,) = mailparse.parse(raw, max_attachment_bytes=10_000).attachments
    assert attachment.data == b"hello"
    assert "/" not in attachment.name and "\\" not in attachment.name
    assert not attachment.name.startswith(".") and attachment.name.isprintable()
