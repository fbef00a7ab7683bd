"""What a test scripts: steps, each answering the next matching request (or every one).

A step matches a request by ``model`` (None: any) and ``path`` (``"chat"``: both
``/v1/chat/completions`` and ``/v1/messages``, ``"embeddings"``, ``"models"``; None:
the kind's default, any path for failures).  The stub answers each request with the
first matching step in the order scripted; ``times`` steps are used up, ``times=None``
ones answer until ``/_reset``.  No matching step: the defaults (``Reply()``,
``Models()``, ``Embed()``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

Path = Literal["chat", "embeddings", "models"]


@dataclass(frozen=True)
class Call:
    """One tool call; ``id`` None: ``call_stub_<n>`` (``toolu_stub_<n>`` for Anthropic)."""

    name: str
    arguments: dict[str, Any] | str = field(default_factory=dict)
    id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Step:
    model: str | None = None
    path: Path | None = None
    times: int | None = 1  # None: every matching request until reset
    delay_ms: int = 0  # before answering
    default_path: ClassVar[Path | None] = None

    def matches(self, path: Path, model: str | None) -> bool:
        return (self.path or self.default_path) in (None, path) and self.model in (None, model)

    def to_json(self) -> dict[str, Any]:
        return {"step": type(self).__name__, **dataclasses.asdict(self)}

    @staticmethod
    def from_json(data: dict[str, Any]) -> Step:
        data = dict(data)
        kind = KINDS[data.pop("step")]
        if "tool_calls" in data:
            data["tool_calls"] = tuple(Call(**c) for c in data["tool_calls"])
        return kind(**data)


@dataclass(frozen=True)
class Reply(Step):
    """A chat answer: ``text`` (None: ``"echo: <last user text> (model <model>)"``), or
    ``json`` (structured output, sent as its JSON text), with optional tool calls."""

    text: str | None = None
    json: Any = field(default=None, kw_only=True)
    tool_calls: Sequence[Call] = field(default=(), kw_only=True)
    finish_reason: str | None = field(default=None, kw_only=True)  # None: stop / tool_calls
    # True: whitespace words counted; False: no usage block; (prompt, completion): these.
    usage: bool | Sequence[int] = field(default=True, kw_only=True)
    logprob: float = field(default=-0.05, kw_only=True)  # per token, when logprobs are asked
    chunk_delay_ms: int = field(default=0, kw_only=True)  # between streamed chunks
    default_path: ClassVar[Path | None] = "chat"


def ToolCalls(*calls: Call, **reply: Any) -> Reply:
    """An assistant turn that calls tools (``finish_reason: "tool_calls"``)."""
    return Reply(reply.pop("text", ""), tool_calls=calls, **reply)


@dataclass(frozen=True, kw_only=True)
class Drop(Reply):
    """Answer like Reply but drop the connection after ``after`` streamed content chunks
    (a plain answer is one chunk)."""

    after: int = 0


@dataclass(frozen=True)
class Fail(Step):
    """An HTTP error in the API's shape (OpenAI, or Anthropic's on /v1/messages);
    ``body`` replaces the whole error body."""

    status: int = 500
    message: str | None = None  # None: "stub injected failure <status>"
    body: dict[str, Any] | None = field(default=None, kw_only=True)


@dataclass(frozen=True)
class Hang(Step):
    """Never answer (until the client gives up)."""


@dataclass(frozen=True)
class Junk(Step):
    """"text": a non-JSON 200; "shape": JSON of the wrong shape; "stream": non-JSON events."""

    kind: Literal["text", "shape", "stream"] = "text"


@dataclass(frozen=True)
class Models(Step):
    ids: Sequence[str] = ("stub-model",)
    default_path: ClassVar[Path | None] = "models"


@dataclass(frozen=True)
class Embed(Step):
    """Embeddings of ``dim`` floats when the request gives no ``dimensions``."""

    dim: int = 8
    default_path: ClassVar[Path | None] = "embeddings"


KINDS: dict[str, type[Step]] = {k.__name__: k for k in (Reply, Drop, Fail, Hang, Junk, Models, Embed)}


@dataclass(frozen=True)
class Seen:
    """A request the stub received."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    client_port: int | None = None  # the TCP connection it came on (reuse shows as one port)

    @property
    def model(self) -> str | None:
        return self.body.get("model")

    @property
    def api_key(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return auth[7:] if auth.lower().startswith("bearer ") else self.headers.get("x-api-key")
