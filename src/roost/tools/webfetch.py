"""The built-in ``web_fetch`` tool: a URL's text through web ingestion's SSRF guard.

``roost.knowledge.fetching.fetch_url`` checks every hop (scheme, no credentials, every
address of the host public), pins the connection to the checked address (no DNS
rebinding) and caps size and time.  Loopback and private addresses are refused unless
the URL's host is in ``ROOST_TOOLS_ALLOWED_HOSTS``; then no redirect is followed, since
the allowance is for that host and ``fetch_url`` would extend it to every hop.  The text
is extracted as ingestion does (``roost.knowledge.parsing``: HTML to plain text, PDF
text, Markdown and plain text as they are).
"""

from __future__ import annotations

import json
from typing import Any, Final

from roost import __version__
from roost.knowledge.fetching import FetchError, FetchRefused, fetch_url, url_host
from roost.knowledge.parsing import (
    HEADING_PATH_SEPARATOR,
    ParsedDocument,
    ParseError,
    parse_document,
)
from roost.process import cpu_bound
from roost.tools.builtins import BuiltinToolError
from roost.tools.config import ToolsConfig

DEFAULT_MAX_CHARS: Final = 20_000
MAX_FETCH_BYTES: Final = 5 * 1024 * 1024
MAX_REDIRECTS: Final = 5


def _text(parsed: ParsedDocument) -> str:
    """The sections with their headings written in: ingestion keeps headings apart (chunk
    metadata), but a reader of the page wants them where they stood."""
    parts: list[str] = []
    shown: list[str] = []
    for section in parsed.sections:
        path = section.heading.split(HEADING_PATH_SEPARATOR) if section.heading else []
        common = 0
        while common < min(len(path), len(shown)) and path[common] == shown[common]:
            common += 1
        parts.extend(path[common:])  # the headings opened since the last section
        shown = path
        parts.append(section.text)
    return "\n\n".join(parts)


async def web_fetch(cfg: ToolsConfig, arguments: dict[str, Any]) -> dict[str, Any]:
    url = str(arguments["url"])
    max_chars = int(arguments.get("max_chars", DEFAULT_MAX_CHARS))
    allowed = cfg.host_allowed(url_host(url))
    try:
        document = await fetch_url(
            url, allow_private=allowed, max_bytes=MAX_FETCH_BYTES, timeout_s=cfg.call_timeout_s,
            max_redirects=0 if allowed else MAX_REDIRECTS,
            user_agent=f"Roost/{__version__} (web_fetch tool)",
        )
    except FetchRefused as exc:
        exc.detail = exc.detail.replace(
            "only public internet addresses can be ingested",
            "only public internet addresses can be fetched unless an administrator lists "
            "the host in ROOST_TOOLS_ALLOWED_HOSTS",
        )
        raise
    except FetchError as exc:
        if allowed and "redirected more than 0 times" in exc.detail:
            exc.detail = (f"{url[:200]!r} redirected; redirects are not followed from hosts "
                          "in ROOST_TOOLS_ALLOWED_HOSTS")
        raise
    try:
        # CPU-bound (HTML, PDF): off the event loop.
        parsed = await cpu_bound(parse_document, document.data,
                                       filename=document.filename, mime=document.content_type)
    except ParseError as exc:
        raise BuiltinToolError(
            f"{document.final_url[:200]} has no text to return: {exc.detail}") from None
    text = _text(parsed)
    if not text.strip():  # a script-only app shell, an empty page: as ingestion says it
        raise BuiltinToolError(f"{document.final_url[:200]} has no text to return: only "
                               "markup, scripts or nothing at all")
    # The echoed fields grow with the URL (2,048 characters, percent-encoded in final_url):
    # each gets at most an eighth of the output cap, so the page's text keeps its room.
    share = cfg.max_output_bytes // 8
    result = {
        "url": _fitting(document.url, share),
        "final_url": _fitting(document.final_url, share),
        "status": document.status,  # 200 or 203; anything else is an error
        "content_type": _fitting(document.content_type or "", share) or None,
        "title": _fitting(parsed.title, share) if parsed.title else parsed.title,
        "text": "",
        "chars": len(text),
        "truncated": True,
    }
    kept = _fitting(text[:max_chars], cfg.max_output_bytes - _json_bytes(result))
    return {**result, "text": kept, "truncated": len(kept) < len(text)}


def _json_bytes(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def _fitting(text: str, budget: int) -> str:
    """The longest start of ``text`` whose JSON string takes at most ``budget`` more bytes
    than an empty one: the result must fit in ROOST_TOOLS_MAX_OUTPUT_BYTES, as an MCP
    server's must, and a page cut to fit serves the model better than a failed call."""
    if _json_bytes(text) - 2 <= budget:
        return text
    low, high = 0, len(text)  # the longest fitting prefix: low fits, high does not
    while high - low > 1:
        middle = (low + high) // 2
        if _json_bytes(text[:middle]) - 2 <= budget:
            low = middle
        else:
            high = middle
    return text[:low]
