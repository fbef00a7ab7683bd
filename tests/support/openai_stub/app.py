"""The stub's ASGI app: OpenAI's chat completions (plain and SSE), models and embeddings,
Anthropic's messages (plain and streamed), and the control endpoints ``POST /_script``,
``GET /_requests`` and ``POST /_reset``."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import json
import math
import re
import struct
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.support.openai_stub.script import (
    Drop,
    Embed,
    Fail,
    Hang,
    Junk,
    Models,
    Path,
    Reply,
    Seen,
    Step,
)

PATHS: dict[str, Path] = {"/v1/chat/completions": "chat", "/v1/messages": "chat",
                          "/v1/models": "models", "/v1/embeddings": "embeddings"}
DEFAULTS: dict[Path, Step] = {"chat": Reply(), "models": Models(), "embeddings": Embed()}
ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}


def words(text: str) -> int:
    return len(text.split())


def pieces(text: str) -> list[str]:
    """Stream pieces whose concatenation is exactly the text."""
    return re.findall(r"\S+\s*|\s+", text)


def text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content
                       if isinstance(p, dict) and p.get("type") == "text")
    return content if isinstance(content, str) else ""


def embedding_for(text: str, dim: int) -> list[float]:
    """A unit vector from SHA-256 of the text: equal texts, equal vectors."""
    values: list[float] = []
    while len(values) < dim:
        digest = hashlib.sha256(f"{len(values) // 32}:{text}".encode()).digest()
        values.extend(b / 127.5 - 1.0 for b in digest)
    norm = math.sqrt(sum(x * x for x in values[:dim])) or 1.0
    return [x / norm for x in values[:dim]]


class State:
    def __init__(self) -> None:
        self.steps: list[Step] = []
        self.seen: deque[Seen] = deque(maxlen=10_000)

    def take(self, path: Path, model: str | None) -> Step:
        for i, step in enumerate(self.steps):
            if step.matches(path, model):
                if step.times is not None:
                    if step.times > 1:
                        self.steps[i] = dataclasses.replace(step, times=step.times - 1)
                    else:
                        del self.steps[i]
                return step
        return DEFAULTS[path]


def sse(name: str, data: dict[str, Any] | str) -> str:
    return f"event: {name}\ndata: {data if isinstance(data, str) else json.dumps(data)}\n\n"


async def send(events: list[tuple[bool, str]], step: Reply) -> AsyncIterator[bytes]:
    """Yield the events, pausing before content ones and dropping where the step says."""
    sent = 0
    for is_content, event in events:
        if is_content:
            if isinstance(step, Drop) and sent >= step.after:
                raise ConnectionAbortedError("stub: dropping the connection on purpose")
            sent += 1
            if step.chunk_delay_ms:
                await asyncio.sleep(step.chunk_delay_ms / 1000)
        yield event.encode()


def stream(events: list[tuple[bool, str]], step: Reply, media_type: str = "text/event-stream") -> Response:
    return StreamingResponse(send(events, step), media_type=media_type)


def error(step: Fail, anthropic: bool) -> Response:
    message = step.message or f"stub injected failure {step.status}"
    kind = "server_error" if step.status >= 500 else "invalid_request_error"
    body: dict[str, Any] = {"error": {"message": message, "type": kind, "code": step.status}}
    if anthropic:
        kind = {529: "overloaded_error"}.get(step.status, "api_error" if step.status >= 500 else kind)
        body = {"type": "error", "error": {"type": kind, "message": message}}
    return JSONResponse(step.body or body, status_code=step.status)


def chat(step: Reply, seen: Seen, anthropic: bool) -> Response:
    body, model = seen.body, seen.model or "stub-model"
    turns = body.get("messages") or []
    last_user = next((text_of(m.get("content")) for m in reversed(turns) if m.get("role") == "user"), "")
    content = step.text if step.text is not None else f"echo: {last_user} (model {model})"
    if step.json is not None:
        content = json.dumps(step.json)
    calls = [(c.id or f"{'toolu' if anthropic else 'call'}_stub_{i + 1}", c.name,
              c.arguments if isinstance(c.arguments, str) else json.dumps(c.arguments))
             for i, c in enumerate(step.tool_calls)]
    finish = step.finish_reason or ("tool_calls" if calls else "stop")
    usage = step.usage if not isinstance(step.usage, bool) else (
        (words(text_of(body.get("system"))) + sum(words(text_of(m.get("content"))) for m in turns),
         words(content)) if step.usage else None)
    answer = anthropic_chat if anthropic else openai_chat
    return answer(step, seen, model, content, calls, finish, usage)


def openai_chat(step: Reply, seen: Seen, model: str, content: str, calls: list[tuple[str, str, str]],
                finish: str, usage: Any) -> Response:
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "created": int(time.time()), "model": model}
    logprobs = bool(seen.body.get("logprobs"))
    usage_block = {"usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1],
                             "total_tokens": usage[0] + usage[1]}} if usage else {}

    def lp(tokens: list[str]) -> dict[str, Any]:
        entries: list[dict[str, Any]] = [
            {"token": t, "logprob": step.logprob, "bytes": None, "top_logprobs": []} for t in tokens]
        return {"logprobs": {"content": entries}} if logprobs else {}

    tool_calls = [{"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in calls]
    if not seen.body.get("stream"):
        message = {"role": "assistant", "content": content, "refusal": None}
        choice = {"index": 0, "message": {**message, **({"tool_calls": tool_calls} if calls else {})},
                  "finish_reason": finish, **lp(content.split())}
        answer = {**base, "object": "chat.completion", "choices": [choice], **usage_block}
        return stream([(True, json.dumps(answer))], step, "application/json")

    def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, **extra}
        return f"data: {json.dumps({**base, 'object': 'chat.completion.chunk', 'choices': [choice]})}\n\n"

    events = [(False, chunk({"role": "assistant", "content": ""}))]
    events += [(True, chunk({"content": p}, **lp([p]))) for p in pieces(content)]
    for index, (cid, name, args) in enumerate(calls):
        start = {"index": index, "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}
        events += [(False, chunk({"tool_calls": [start]}))] + [
            (False, chunk({"tool_calls": [{"index": index, "function": {"arguments": part}}]}))
            for part in (args[: len(args) // 2], args[len(args) // 2 :])]
    events.append((False, chunk({}, finish)))
    if usage_block and (seen.body.get("stream_options") or {}).get("include_usage"):
        last = {**base, "object": "chat.completion.chunk", "choices": [], **usage_block}
        events.append((False, f"data: {json.dumps(last)}\n\n"))
    return stream([*events, (False, "data: [DONE]\n\n")], step)


def anthropic_chat(step: Reply, seen: Seen, model: str, content: str, calls: list[tuple[str, str, str]],
                   finish: str, usage: Any) -> Response:
    stop = ANTHROPIC_STOP.get(finish, "end_turn")
    tokens_in, tokens_out = usage or (0, 0)
    uses = [{"type": "tool_use", "id": i, "name": n, "input": json.loads(a)} for i, n, a in calls]
    message = {"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant",
               "model": model, "stop_sequence": None}
    if not seen.body.get("stream"):
        answer = {**message, "content": [{"type": "text", "text": content}, *uses], "stop_reason": stop,
                  "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out}}
        return stream([(True, json.dumps(answer))], step, "application/json")

    def event(name: str, **data: Any) -> tuple[bool, str]:
        return name == "content_block_delta" and data["index"] == 0, sse(name, {"type": name, **data})

    start: dict[str, Any] = {**message, "content": [], "stop_reason": None,
                             "usage": {"input_tokens": tokens_in, "output_tokens": 1}}
    events = [event("message_start", message=start),
              event("content_block_start", index=0, content_block={"type": "text", "text": ""}),
              event("ping")]
    events += [event("content_block_delta", index=0, delta={"type": "text_delta", "text": p})
               for p in pieces(content)]
    events.append(event("content_block_stop", index=0))
    for index, (use, (_, _, args)) in enumerate(zip(uses, calls, strict=True), start=1):
        events.append(event("content_block_start", index=index, content_block={**use, "input": {}}))
        events += [event("content_block_delta", index=index,
                         delta={"type": "input_json_delta", "partial_json": part})
                   for part in (args[: len(args) // 2], args[len(args) // 2 :])]
        events.append(event("content_block_stop", index=index))
    events += [event("message_delta", delta={"stop_reason": stop, "stop_sequence": None},
                     usage={"output_tokens": tokens_out}), event("message_stop")]
    return stream(events, step)


def embeddings(step: Embed, seen: Seen) -> Response:
    raw = seen.body.get("input")
    texts: list[str] = [raw] if isinstance(raw, str) else list(raw or [])
    dim = int(seen.body.get("dimensions") or step.dim)
    data = []
    for i, text in enumerate(texts):
        value: Any = embedding_for(text, dim)
        if seen.body.get("encoding_format") == "base64":  # the official SDK's default
            value = base64.b64encode(struct.pack(f"<{dim}f", *value)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(words(t) for t in texts)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return JSONResponse({"object": "list", "data": data, "model": seen.model or "stub-embed", "usage": usage})


def build_app(state: State) -> Starlette:
    async def api(request: Request) -> Response:
        try:
            body = await request.json() if request.method == "POST" else {}
        except ValueError:
            body = {}
        seen = Seen(request.url.path, dict(request.headers), body if isinstance(body, dict) else {},
                    request.client.port if request.client else None)
        state.seen.append(seen)
        path, anthropic = PATHS[seen.path], seen.path == "/v1/messages"
        step = state.take(path, seen.model)
        if step.delay_ms:
            await asyncio.sleep(step.delay_ms / 1000)
        if isinstance(step, Fail):
            return error(step, anthropic)
        if isinstance(step, Hang):  # the body is read: the next message is the disconnect
            while (await request.receive())["type"] != "http.disconnect":
                pass
            return Response(status_code=499)
        if isinstance(step, Junk) and step.kind == "shape":
            return JSONResponse({"object": "surprise", "unexpected": [1, 2, 3]})
        if isinstance(step, Junk) and step.kind == "stream" and seen.body.get("stream"):
            junk = [(False, "event: message_start\ndata: {this is not json\n\n")] * 2
            return stream(junk, Reply())
        if isinstance(step, Junk):
            return PlainTextResponse("<html>definitely not json</html>")
        if isinstance(step, Models):
            return JSONResponse({"object": "list", "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": "stub"} for m in step.ids]})
        if isinstance(step, Embed):
            return embeddings(step, seen)
        assert isinstance(step, Reply), step
        return chat(step, seen, anthropic)

    async def script(request: Request) -> Response:
        try:
            steps = [Step.from_json(s) for s in await request.json()]
        except (ValueError, TypeError, KeyError) as exc:  # typos in tests show up
            return JSONResponse({"error": repr(exc)}, status_code=400)
        state.steps += steps
        return JSONResponse({"steps": len(state.steps)})

    async def requests(request: Request) -> Response:
        return JSONResponse([{"path": s.path, "headers": s.headers, "body": s.body,
                              "client_port": s.client_port} for s in state.seen])

    async def reset(request: Request) -> Response:
        state.steps.clear()
        state.seen.clear()
        return JSONResponse({})

    return Starlette(routes=[
        *(Route(p, api, methods=["GET" if p == "/v1/models" else "POST"]) for p in PATHS),
        Route("/_script", script, methods=["POST"]),
        Route("/_requests", requests, methods=["GET"]),
        Route("/_reset", reset, methods=["POST"]),
    ])
