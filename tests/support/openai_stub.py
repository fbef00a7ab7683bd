"""A small OpenAI- and Anthropic-compatible HTTP server for tests, run as a real process.

Tests start it with :func:`start_stub` (a child ``python -m
tests.support.openai_stub`` on 127.0.0.1, port chosen by the kernel) and point
real HTTP clients at ``stub.base_url``.  Answers are deterministic:

- chat reply: the configured ``reply`` or ``"echo: <last user message> (model <model>)"``;
- token usage: whitespace-separated words (prompt: all message texts; completion: the reply);
- embeddings: unit vectors derived from SHA-256 of the text, ``embedding_dim`` long;
- streaming: the reply split after each whitespace run, one piece per chunk.

Endpoints: ``POST /v1/chat/completions`` (plain and ``stream: true`` SSE ending
with ``data: [DONE]``), ``GET /v1/models``, ``POST /v1/embeddings``,
``POST /v1/messages`` (Anthropic Messages, plain and streamed events),
``POST /_control`` (change behaviour at runtime), ``GET /_stats`` (request counts
and the last requests received).

Behaviour keys (global, or per model under ``"models": {"name": {...}}``; a
model's keys override the global ones):

    reply             fixed reply text (None: echo)
    latency_ms        delay before answering
    chunk_delay_ms    delay between streamed chunks
    fail_status       answer with this HTTP status ...
    fail_times        ... for the next K requests (None: for every request)
    hang              never answer (until the client disconnects)
    junk              "text" (non-JSON 200), "shape" (JSON of the wrong shape),
                      "stream" (non-JSON SSE events)
    finish_reason     "stop" | "length" | "tool_calls" | "content_filter"
    logprob           per-token logprob reported when the request asks for logprobs
    tool_call         {"name": str, "arguments": dict}: answer with a tool call
    embedding_dim     embedding size when the request gives no ``dimensions``
    fail_after_chunks drop the connection after N streamed content chunks
    require_api_key   reject requests without this key (401)
    model_list        ids listed by GET /v1/models (configured models are added)
    usage             false: no OpenAI usage block, plain or streamed (servers that omit it)

``POST /_control`` accepts the same keys plus ``"reset": true`` (back to the
start-up behaviour, stats cleared) and ``"models": {"name": null}`` to drop a
model's rules.  Unknown keys are rejected with 400 so typos in tests show up.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import hashlib
import json
import math
import os
import re
import selectors
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

DEFAULTS: dict[str, Any] = {
    "reply": None,
    "latency_ms": 0,
    "chunk_delay_ms": 0,
    "fail_status": None,
    "fail_times": None,
    "hang": False,
    "junk": None,
    "finish_reason": "stop",
    "logprob": None,
    "tool_call": None,
    "embedding_dim": 8,
    "fail_after_chunks": None,
    "require_api_key": None,
    "model_list": ["stub-model"],
    "usage": True,
}
DEFAULT_LOGPROB = -0.05
ANTHROPIC_STOP = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
REPO_ROOT = Path(__file__).resolve().parents[2]


# --- deterministic content ---------------------------------------------------------------


def words(text: str) -> int:
    return len(text.split())


def pieces(text: str) -> list[str]:
    """Split text into stream pieces whose concatenation is exactly the text."""
    return re.findall(r"\S+\s*|\s+", text)


def embedding_for(text: str, dim: int) -> list[float]:
    values: list[float] = []
    counter = 0
    while len(values) < dim:
        digest = hashlib.sha256(f"{counter}:{text}".encode()).digest()
        values.extend(b / 127.5 - 1.0 for b in digest)
        counter += 1
    vec = values[:dim]
    norm = math.sqrt(sum(x * x for x in vec)) or 1.0
    return [x / norm for x in vec]


def openai_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


# --- state -------------------------------------------------------------------------------


class StubState:
    def __init__(self, startup: dict[str, Any]) -> None:
        self.startup = copy.deepcopy(startup)
        self.rules: dict[str, Any] = {}
        self.model_rules: dict[str, dict[str, Any]] = {}
        self.counts: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=100)
        self.reset()
        self.apply(startup)

    def reset(self) -> None:
        self.rules = {}
        self.model_rules = {}
        self.counts = Counter()
        self.recent.clear()

    def apply(self, update: dict[str, Any]) -> None:
        update = dict(update)
        if update.pop("reset", False):
            self.reset()
            self._merge(copy.deepcopy(self.startup))
        self._merge(update)

    def _merge(self, update: dict[str, Any]) -> None:
        models = update.pop("models", None) or {}
        _check_keys(update)
        self.rules.update(update)
        for name, rules in models.items():
            if rules is None:
                self.model_rules.pop(name, None)
                continue
            _check_keys(rules)
            self.model_rules.setdefault(name, {}).update(rules)

    def effective(self, model: str | None) -> dict[str, Any]:
        return {**DEFAULTS, **self.rules, **self.model_rules.get(model or "", {})}

    def take_failure(self, model: str | None) -> int | None:
        """Status to fail with, consuming one of the K planned failures."""
        for scope in (self.model_rules.get(model or ""), self.rules):
            if scope and scope.get("fail_status"):
                times = scope.get("fail_times")
                if times is None:
                    return int(scope["fail_status"])
                if times > 0:
                    scope["fail_times"] = times - 1
                    return int(scope["fail_status"])
                return None
        return None

    def record(self, path: str, model: str | None, entry: dict[str, Any]) -> None:
        self.counts["total"] += 1
        self.counts[f"path:{path}"] += 1
        if model:
            self.counts[f"model:{model}"] += 1
            self.counts[f"{path}:{model}"] += 1
        self.recent.append({"path": path, "model": model, **entry})

    def stats(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "recent": list(self.recent)}

    def model_ids(self) -> list[str]:
        listed = list(self.effective(None)["model_list"])
        return listed + sorted(m for m in self.model_rules if m not in listed)


def _check_keys(rules: dict[str, Any]) -> None:
    unknown = set(rules) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown behaviour keys {sorted(unknown)}; known: {sorted(DEFAULTS)}")


# --- the ASGI app -------------------------------------------------------------------------


def build_app(state: StubState) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
    from starlette.routing import Route

    def openai_error(status: int, message: str) -> Response:
        kind = "server_error" if status >= 500 else "invalid_request_error"
        body = {"error": {"message": message, "type": kind, "code": status}}
        return JSONResponse(body, status_code=status)

    def anthropic_error(status: int, message: str) -> Response:
        kind = "api_error" if status >= 500 else "invalid_request_error"
        if status == 529:
            kind = "overloaded_error"
        body = {"type": "error", "error": {"type": kind, "message": message}}
        return JSONResponse(body, status_code=status)

    async def read_json(request: Request) -> dict[str, Any]:
        try:
            data = await request.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    async def wait_for_disconnect(request: Request) -> Response:
        # "Hang forever", but notice when the client gives up so the server
        # can shut down promptly.
        # The body is already read, so the next ASGI message is the disconnect.
        while (await request.receive())["type"] != "http.disconnect":
            pass
        return Response(status_code=499)

    async def common(
        request: Request, path: str, model: str | None, body: dict[str, Any], anthropic: bool
    ) -> tuple[dict[str, Any], Response | None]:
        """Record the request and apply auth, latency, failures, hang and junk rules."""
        rules = state.effective(model)
        key = request.headers.get("x-api-key") if anthropic else None
        auth = request.headers.get("authorization", "")
        if not anthropic and auth.lower().startswith("bearer "):
            key = auth[7:]
        state.record(
            path,
            model,
            {
                "stream": bool(body.get("stream")),
                "has_api_key": bool(key),
                "anthropic_version": request.headers.get("anthropic-version"),
                "body": body,
            },
        )
        error = anthropic_error if anthropic else openai_error
        if rules["require_api_key"] and key != rules["require_api_key"]:
            # Like real providers, mention (a masked form of) the key received.
            shown = f"{key[:3]}...{key[-2:]}" if key else "none"
            return rules, error(401, f"Incorrect API key provided: {shown}")
        if anthropic and not request.headers.get("anthropic-version"):
            return rules, error(400, "anthropic-version header is required")
        if rules["latency_ms"]:
            await asyncio.sleep(rules["latency_ms"] / 1000)
        status = state.take_failure(model)
        if status is not None:
            return rules, error(status, f"stub injected failure {status}")
        if rules["hang"]:
            return rules, await wait_for_disconnect(request)
        junk = rules["junk"]
        if junk == "text" or (junk == "stream" and not body.get("stream")):
            return rules, PlainTextResponse("<html>definitely not json</html>")
        if junk == "shape":
            return rules, JSONResponse({"object": "surprise", "unexpected": [1, 2, 3]})
        return rules, None

    def reply_for(rules: dict[str, Any], model: str, last_user: str) -> str:
        if rules["reply"] is not None:
            return str(rules["reply"])
        return f"echo: {last_user} (model {model})"

    async def sse(
        events: Iterator[str], rules: dict[str, Any], content_events: set[int]
    ) -> AsyncIterator[bytes]:
        delay = rules["chunk_delay_ms"] / 1000
        drop_after = rules["fail_after_chunks"]
        sent = 0
        for i, event in enumerate(events):
            if i in content_events:
                if drop_after is not None and sent >= drop_after:
                    # Abort the response mid-body: the client sees a broken stream.
                    raise ConnectionAbortedError("stub: dropping the stream on purpose")
                sent += 1
                if delay:
                    await asyncio.sleep(delay)
            yield event.encode()

    # --- OpenAI ---------------------------------------------------------------------

    async def chat_completions(request: Request) -> Response:
        body = await read_json(request)
        model = str(body.get("model") or "stub-model")
        rules, early = await common(request, "/v1/chat/completions", model, body, False)
        if early is not None:
            return early
        messages = body.get("messages") or []
        if not isinstance(messages, list) or not messages:
            return openai_error(400, "'messages' must be a non-empty array")
        last_user = next(
            (openai_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"),
            "",
        )
        reply = reply_for(rules, model, last_user)
        prompt_tokens = sum(words(openai_text(m.get("content"))) for m in messages)
        tool = rules["tool_call"]
        finish = "tool_calls" if tool else rules["finish_reason"]
        want_logprobs = bool(body.get("logprobs"))
        logprob = rules["logprob"] if rules["logprob"] is not None else DEFAULT_LOGPROB
        cid = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        created = int(time.time())
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": words(reply),
            "total_tokens": prompt_tokens + words(reply),
        }

        def lp(piece: str) -> dict[str, Any]:
            return {"content": [{"token": piece, "logprob": logprob, "bytes": None, "top_logprobs": []}]}

        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": reply, "refusal": None}
            if tool:
                message["tool_calls"] = [
                    {
                        "id": "call_stub_1",
                        "type": "function",
                        "function": {
                            "name": tool["name"],
                            "arguments": json.dumps(tool["arguments"]),
                        },
                    }
                ]
            choice: dict[str, Any] = {"index": 0, "message": message, "finish_reason": finish}
            if want_logprobs:
                choice["logprobs"] = {
                    "content": [
                        {"token": w, "logprob": logprob, "bytes": None, "top_logprobs": []}
                        for w in reply.split()
                    ]
                }
            return JSONResponse(
                {
                    "id": cid,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    **({"usage": usage} if rules["usage"] else {}),
                }
            )

        junk_stream = rules["junk"] == "stream"

        def chunk(delta: dict[str, Any], finish_reason: str | None = None, **extra: Any) -> str:
            if junk_stream:
                return "data: {this is not json\n\n"
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, **extra}
            obj = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [choice],
            }
            return f"data: {json.dumps(obj)}\n\n"

        def events() -> Iterator[str]:
            yield chunk({"role": "assistant", "content": ""})
            for piece in pieces(reply):
                extra: dict[str, Any] = {"logprobs": lp(piece)} if want_logprobs else {}
                yield chunk({"content": piece}, None, **extra)
            if tool:
                args = json.dumps(tool["arguments"])
                half = len(args) // 2
                start = {
                    "index": 0,
                    "id": "call_stub_1",
                    "type": "function",
                    "function": {"name": tool["name"], "arguments": ""},
                }
                yield chunk({"tool_calls": [start]})
                for part in (args[:half], args[half:]):
                    yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
            yield chunk({}, finish)
            if rules["usage"] and (body.get("stream_options") or {}).get("include_usage"):
                obj = {
                    "id": cid,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": usage,
                }
                yield f"data: {json.dumps(obj)}\n\n"
            yield "data: [DONE]\n\n"

        content_events = set(range(1, 1 + len(pieces(reply))))
        return StreamingResponse(sse(events(), rules, content_events), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        anthropic = bool(request.headers.get("anthropic-version"))
        _, early = await common(request, "/v1/models", None, {}, anthropic)
        if early is not None:
            return early
        ids = state.model_ids()
        if anthropic:
            data = [
                {"id": m, "type": "model", "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
                for m in ids
            ]
            first, last = (ids[0], ids[-1]) if ids else (None, None)
            return JSONResponse({"data": data, "has_more": False, "first_id": first, "last_id": last})
        listing = [{"id": m, "object": "model", "created": 0, "owned_by": "stub"} for m in ids]
        return JSONResponse({"object": "list", "data": listing})

    async def embeddings(request: Request) -> Response:
        body = await read_json(request)
        model = str(body.get("model") or "stub-embed")
        rules, early = await common(request, "/v1/embeddings", model, body, False)
        if early is not None:
            return early
        raw = body.get("input")
        texts = [raw] if isinstance(raw, str) else raw
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return openai_error(400, "'input' must be a string or an array of strings")
        dim = int(body.get("dimensions") or rules["embedding_dim"])
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vec = embedding_for(text, dim)
            value: Any = vec
            if as_base64:  # the official SDK asks for base64 float32 by default
                value = base64.b64encode(struct.pack(f"<{dim}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": value})
        tokens = sum(words(t) for t in texts)
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return JSONResponse({"object": "list", "data": data, "model": model, "usage": usage})

    # --- Anthropic ------------------------------------------------------------------

    def anthropic_text(content: Any) -> str:
        if isinstance(content, str):
            return content
        if isinstance(content, list):
            return "".join(
                str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text"
            )
        return ""

    async def messages_endpoint(request: Request) -> Response:
        body = await read_json(request)
        model = str(body.get("model") or "stub-model")
        rules, early = await common(request, "/v1/messages", model, body, True)
        if early is not None:
            return early
        turns = body.get("messages") or []
        if not isinstance(turns, list) or not turns or "max_tokens" not in body:
            return anthropic_error(400, "'messages' and 'max_tokens' are required")
        if any(m.get("role") not in ("user", "assistant") for m in turns):
            return anthropic_error(400, "roles must be 'user' or 'assistant'")
        last_user = next(
            (anthropic_text(m.get("content")) for m in reversed(turns) if m.get("role") == "user"),
            "",
        )
        reply = reply_for(rules, model, last_user)
        system = body.get("system")
        system_text = system if isinstance(system, str) else anthropic_text(system)
        input_tokens = words(system_text) + sum(words(anthropic_text(m.get("content"))) for m in turns)
        tool = rules["tool_call"]
        stop = "tool_use" if tool else ANTHROPIC_STOP.get(rules["finish_reason"], "end_turn")
        mid = f"msg_{uuid.uuid4().hex[:12]}"
        blocks: list[dict[str, Any]] = [{"type": "text", "text": reply}]
        if tool:
            blocks.append(
                {
                    "type": "tool_use",
                    "id": "toolu_stub_1",
                    "name": tool["name"],
                    "input": tool["arguments"],
                }
            )

        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": mid,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": blocks,
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": {"input_tokens": input_tokens, "output_tokens": words(reply)},
                }
            )

        def event(name: str, data: dict[str, Any]) -> str:
            if rules["junk"] == "stream":
                return f"event: {name}\ndata: <<not json>>\n\n"
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"

        def events() -> Iterator[str]:
            message: dict[str, Any] = {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": input_tokens, "output_tokens": 1},
            }
            yield event("message_start", {"message": message})
            yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
            yield event("ping", {})
            for piece in pieces(reply):
                delta = {"type": "text_delta", "text": piece}
                yield event("content_block_delta", {"index": 0, "delta": delta})
            yield event("content_block_stop", {"index": 0})
            if tool:
                start = {
                    "type": "tool_use",
                    "id": "toolu_stub_1",
                    "name": tool["name"],
                    "input": {},
                }
                yield event("content_block_start", {"index": 1, "content_block": start})
                args = json.dumps(tool["arguments"])
                half = len(args) // 2
                for part in (args[:half], args[half:]):
                    delta = {"type": "input_json_delta", "partial_json": part}
                    yield event("content_block_delta", {"index": 1, "delta": delta})
                yield event("content_block_stop", {"index": 1})
            yield event(
                "message_delta",
                {
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": words(reply)},
                },
            )
            yield event("message_stop", {})

        content_events = set(range(3, 3 + len(pieces(reply))))
        return StreamingResponse(sse(events(), rules, content_events), media_type="text/event-stream")

    # --- control --------------------------------------------------------------------

    async def control(request: Request) -> Response:
        try:
            update = await request.json()
            if not isinstance(update, dict):
                raise ValueError("body must be a JSON object")
            state.apply(update)
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"rules": state.rules, "models": state.model_rules})

    async def stats(request: Request) -> Response:
        return JSONResponse(state.stats())

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/messages", messages_endpoint, methods=["POST"]),
            Route("/_control", control, methods=["POST"]),
            Route("/_stats", stats, methods=["GET"]),
        ]
    )


# --- process entry point ------------------------------------------------------------------


def _exit_when_parent_goes() -> None:
    # The parent holds our stdin open; EOF means it is gone (even if it was
    # killed without stopping us), so never outlive the test run.
    sys.stdin.buffer.read()
    os._exit(0)


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="OpenAI/Anthropic-compatible test stub")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: let the kernel choose")
    parser.add_argument("--behaviour-json", default="{}")
    parser.add_argument("--log-level", default="error")
    parser.add_argument("--watch-stdin", action="store_true")
    args = parser.parse_args(argv)

    state = StubState(json.loads(args.behaviour_json))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    # Tell the parent which port the kernel picked (race-free port choice).
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    if args.watch_stdin:
        threading.Thread(target=_exit_when_parent_goes, daemon=True).start()
    config = uvicorn.Config(
        build_app(state),
        log_level=args.log_level,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
    )
    uvicorn.Server(config).run(sockets=[sock])


# --- helper used by tests -------------------------------------------------------------------


class StubServer:
    """Handle on a running stub process."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self.root_url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root_url}/v1"  # what OpenAI-style clients take

    def control(self, **update: Any) -> dict[str, Any]:
        resp = httpx.post(f"{self.root_url}/_control", json=update, timeout=10)
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def set_model(self, model: str, **rules: Any) -> dict[str, Any]:
        return self.control(models={model: rules})

    def reset(self) -> None:
        self.control(reset=True)

    def stats(self) -> dict[str, Any]:
        resp = httpx.get(f"{self.root_url}/_stats", timeout=10)
        resp.raise_for_status()
        result: dict[str, Any] = resp.json()
        return result

    def count(self, key: str) -> int:
        """A counter from /_stats: "total", "path:/v1/messages", "model:m1", "/v1/x:m1"."""
        return int(self.stats()["counts"].get(key, 0))

    async def acontrol(self, **update: Any) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.post(f"{self.root_url}/_control", json=update)
            resp.raise_for_status()
            result: dict[str, Any] = resp.json()
            return result

    async def astats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            resp = await client.get(f"{self.root_url}/_stats")
            resp.raise_for_status()
            result: dict[str, Any] = resp.json()
            return result

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is not None:
            return
        if self.process.stdin:
            self.process.stdin.close()
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)
        finally:
            if self.process.stdout:
                self.process.stdout.close()

    def __enter__(self) -> StubServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _read_port(proc: subprocess.Popen[bytes], deadline: float) -> int:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=0.1):
                line = proc.stdout.readline().decode().strip()
                if line.startswith("PORT "):
                    return int(line.split()[1])
                if not line and proc.poll() is not None:
                    break
    raise RuntimeError(f"openai stub did not report its port (exit code {proc.poll()})")


def start_stub(*, startup_timeout: float = 20.0, log_level: str = "error", **behaviour: Any) -> StubServer:
    """Start the stub as a separate process and wait until it answers."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.openai_stub",
            "--behaviour-json",
            json.dumps(behaviour),
            "--log-level",
            log_level,
            "--watch-stdin",
        ],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    deadline = time.monotonic() + startup_timeout
    try:
        server = StubServer(proc, _read_port(proc, deadline))
        while True:
            try:
                if httpx.get(f"{server.root_url}/_stats", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("openai stub did not start answering in time")
            time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


if __name__ == "__main__":
    main()
