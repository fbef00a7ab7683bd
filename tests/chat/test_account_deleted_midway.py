"""An account deleted or suspended while its chat answer is written, whole or streamed:
no answer is a 5xx, a stream ends with a frame, no model request is left open; a
suspended account's answer (authorised when it began) is kept and billed."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from tests.chat.conftest import sse_events
from tests.chat.test_races_chat import answering
from tests.support.lifecycle import end_account
from tests.support.openai_stub import StubServer
from tests.support.races import no_5xx, race_settings, until_none

Headers = dict[str, str]


@pytest.fixture
def test_settings(test_settings: Settings) -> Settings:
    # A first chunk late by seconds on a loaded CI machine is no failure here (the stub
    # sends one within 0.2 s); the answer is awaited for 30 s.
    return race_settings(test_settings, llm_timeout_s=15.0)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("how", ["delete", "suspend"])
async def test_an_account_ended_while_its_chat_answer_is_written(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], stream: bool, how: str,
) -> None:
    user_id, headers = user
    sid, posting = await answering(client, admin_headers, headers, database, stub, stream)
    await end_account(client, admin_headers, user_id, how)
    answer = await asyncio.wait_for(posting, 30)
    no_5xx(answer)
    # Deleted: the session went with the account, so the answer is not kept (a 409, or
    # a stream's last frame); suspended: the request was authorised when it began.
    if stream:
        assert answer.status_code == 201, answer.text
        name, data = sse_events(answer.text)[-1]
        if how == "delete":
            assert (name, data["status"]) == ("error", 409), answer.text[-300:]
        else:
            assert name == "done", answer.text[-300:]
    else:
        assert answer.status_code == (409 if how == "delete" else 201), answer.text
    assert await until_none(database, "SELECT count(*) FROM llm_requests "
                                      "WHERE status IN ('pending', 'running')") == 0
    if how == "suspend":  # answered, so billed
        assert await until_none(database, "SELECT count(*) FROM llm_requests r WHERE "
                                          "r.session_id = CAST(:s AS uuid) AND NOT EXISTS ("
                                          "SELECT 1 FROM usage_records u WHERE "
                                          "u.llm_request_id = r.id)", s=sid) == 0
