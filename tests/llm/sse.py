"""Reading a /v1 stream's answer in tests."""

from __future__ import annotations

import json
from typing import Any


def v1_frames(body: str) -> list[Any]:
    """The ``data:`` frames of an OpenAI-style stream: each parsed, ``"[DONE]"`` as is."""
    return [data if data == "[DONE]" else json.loads(data)
            for line in body.split("\n") if line.startswith("data: ")
            for data in [line.removeprefix("data: ")]]
