"""An OpenAI- and Anthropic-compatible server for tests, run as a real process, scripted
per request.

``start_stub()`` starts ``python -m tests.support.openai_stub`` on 127.0.0.1 (a port the
kernel picks); real clients use ``stub.base_url``.  Unscripted, it answers
deterministically: ``"echo: <last user message> (model <model>)"``, usage in
whitespace-separated words, the reply streamed a word at a time, models
``["stub-model"]``, embeddings as unit vectors from SHA-256 of the text (8 floats).

A test scripts what comes next (see ``script.py`` for the steps)::

    stub.script(ToolCalls(Call("lookup", {"q": "roost"})), Reply("done"))
    stub.script(Fail(503, model="m1", times=None), Reply(json={"vote": "a"}), Drop(after=2))
    stub.requests(path="/v1/chat/completions")[-1].body

over ``POST /_script`` (a JSON list of steps), ``GET /_requests`` and ``POST /_reset``.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from tests.support.openai_stub.app import embedding_for
from tests.support.openai_stub.script import (
    Call,
    Drop,
    Embed,
    Fail,
    Hang,
    Junk,
    Models,
    Reply,
    Seen,
    Step,
    ToolCalls,
)

__all__ = ["Call", "Drop", "Embed", "Fail", "Hang", "Junk", "Models", "Reply", "Seen", "Step",
           "StubServer", "ToolCalls", "embedding_for", "start_stub"]
REPO_ROOT = Path(__file__).resolve().parents[3]


class StubServer:
    """Handle on a running stub process."""

    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.root_url = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root_url}/v1"  # what OpenAI-style clients take

    def script(self, *steps: Step) -> None:
        """Queue steps after those already scripted."""
        resp = httpx.post(f"{self.root_url}/_script", json=[s.to_json() for s in steps], timeout=10)
        assert resp.status_code == 200, resp.text

    def requests(self, path: str | None = None, model: str | None = None) -> list[Seen]:
        """The requests received since the last reset, oldest first."""
        resp = httpx.get(f"{self.root_url}/_requests", timeout=10)
        resp.raise_for_status()
        seen = [Seen(**r) for r in resp.json()]
        return [s for s in seen if path in (None, s.path) and model in (None, s.model)]

    def reset(self) -> None:
        """Forget the script and the requests seen."""
        httpx.post(f"{self.root_url}/_reset", timeout=10).raise_for_status()

    def stop(self, timeout: float = 5.0) -> None:
        if self.process.poll() is None:
            assert self.process.stdin and self.process.stdout
            self.process.stdin.close()
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
            self.process.stdout.close()

    def __enter__(self) -> StubServer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


def _read_port(proc: subprocess.Popen[bytes], deadline: float) -> int:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline and proc.poll() is None:
            if sel.select(timeout=0.1):
                line = proc.stdout.readline().decode()
                if line.startswith("PORT "):
                    return int(line.split()[1])
    raise RuntimeError(f"openai stub did not report its port (exit code {proc.poll()})")


def start_stub(*steps: Step, startup_timeout: float = 20.0, log_level: str = "error") -> StubServer:
    """Start the stub as a separate process, wait until it answers, script ``steps``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.support.openai_stub", "--log-level", log_level],
                            cwd=REPO_ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    deadline = time.monotonic() + startup_timeout
    try:
        server = StubServer(proc, _read_port(proc, deadline))
        while True:
            try:
                server.script(*steps)
                return server
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("openai stub did not start answering in time") from None
                time.sleep(0.05)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
