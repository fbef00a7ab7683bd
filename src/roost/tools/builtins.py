"""Built-in tools: run inside Roost, registered as global ``tools`` rows (kind
``builtin``) by migrations 0500 and 0520 with these ids, names and input schemas."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy.ext.asyncio import AsyncSession

from roost.errors import Unprocessable
from roost.inputs import parse_tool_arguments
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.schemas import SearchRequest
from roost.knowledge.search import search
from roost.principal import Principal

CURRENT_TIME_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000001")
KNOWLEDGE_SEARCH_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000002")
# Migration 0520; run by roost.tools.webfetch and roost.tools.lspservers.
WEB_FETCH_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000003")
LSP_DIAGNOSTICS_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000004")
# The built-ins this domain runs itself (roost.tools.calls._run), anywhere; the other
# built-in rows (send_email, memory, tasks, calendar) are run by their domains
# inside agent runs only (``hosted``).
OWN_IDS: Final = frozenset({CURRENT_TIME_ID, KNOWLEDGE_SEARCH_ID, WEB_FETCH_ID,
                            LSP_DIAGNOSTICS_ID})
# The built-ins that neither read nor change their caller's own data (rows, documents,
# memories, calendars, tasks, mail, language servers): the only built-ins offered in a
# stranger's run of a public agent, whose author wrote the prompt and whose persona's
# members read the run (docs/agents.md, "Public agents").  Every other built-in, a new one
# included, acts on its caller's data until it is listed here after a review.
IMPERSONAL_IDS: Final = frozenset({CURRENT_TIME_ID, WEB_FETCH_ID})


def personal(tool_id: uuid.UUID, kind: str) -> bool:
    """A built-in that acts on its caller's own data (see ``IMPERSONAL_IDS``).  Another
    kind of tool (an MCP server's) is its owner's: a global one sees no caller's rows."""
    return kind == "builtin" and tool_id not in IMPERSONAL_IDS


class BuiltinToolError(Unprocessable):
    title, type_slug = "Tool failed", "tool-failed"


async def current_time(arguments: dict[str, Any]) -> dict[str, Any]:
    now = datetime.now(UTC)
    name = arguments.get("timezone") or "UTC"
    try:
        zone = ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # never echoed (docs/mcp.md): whatever the caller put there may be a secret
        raise BuiltinToolError("unknown time zone (an IANA name such as Europe/Paris)"
                               ) from None
    local = now.astimezone(zone)
    return {"utc": now.isoformat(), "timezone": name, "local": local.isoformat(),
            "unix": now.timestamp()}


async def knowledge_search(
    session: AsyncSession, actor: Principal, cfg: KnowledgeConfig, arguments: dict[str, Any]
) -> dict[str, Any]:
    """Hybrid search of the documents the caller may read (their RLS scope)."""
    # What the schema let by and the request's model refuses: a 422, not a 500.
    request = parse_tool_arguments(SearchRequest, "knowledge_search", {
        "query": arguments.get("query"), "k": arguments.get("k", 5),
        "collection": arguments.get("collection")})
    found = await search(session, actor, cfg, request)
    return {
        "query": found.query,
        "results": [
            {"document_id": str(hit.document_id), "chunk_index": hit.chunk_index,
             "content": hit.content, "score": hit.score}
            for hit in found.results
        ],
    }
