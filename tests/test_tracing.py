"""OpenTelemetry traces (roost.tracing, docs/operations.md "Traces"): the spans of a
request, its SQL, an LLM call, a job and an agent run's steps, caught by the SDK's
in-memory exporter; the OTLP exporter ROOST_OTEL_ENABLED configures, sending to a
receiver on loopback; and, with tracing off, nothing of the SDK loaded."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from roost import tracing
from roost.config import Settings
from roost.db.engine import Database, create_database
from roost.tasks.handlers import PermanentError, TaskContext, task
from roost.tasks.service import enqueue
from tests.agents.conftest import make_agent, running_worker, wait_for_run
from tests.chat.conftest import add_provider
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.openai_stub import Reply, StubServer
from tests.support.openai_stub.script import Call, ToolCalls
from tests.support.pg import PgTestServer
from tests.support.workers import in_process_worker

pytestmark = pytest.mark.needs_otel

Headers = dict[str, str]


@task("test.traced", max_retries=0)
async def traced_job(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    async with ctx.database.transaction() as session:
        await session.execute(tracing_probe())
    return {"ok": True}


@task("test.traced_failure", max_retries=0)
async def traced_failure(ctx: TaskContext, payload: dict[str, Any]) -> None:
    raise PermanentError("the payload names no such thing")


def tracing_probe() -> Any:
    from sqlalchemy import text

    return text("SELECT 1")


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_timeout_s=5.0,
                    llm_local_model=False, knowledge_embedding_provider="hash")


@pytest.fixture(autouse=True)
def spans() -> Iterator[Any]:
    """Tracing on, into the SDK's in-memory exporter, before the test's database engine
    exists (autouse fixtures come first), so its SQL is traced too."""
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracing.install(exporter)
    try:
        yield exporter
    finally:
        tracing.uninstall()


def named(exporter: Any, prefix: str) -> list[Any]:
    return [s for s in exporter.get_finished_spans() if s.name.startswith(prefix)]


def one(exporter: Any, name: str) -> Any:
    found = [s for s in exporter.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in exporter.get_finished_spans()]
    return found[0]


async def test_a_request_is_a_server_span_named_by_its_route_with_its_sql(
    client: httpx.AsyncClient, admin_headers: Headers, spans: Any,
) -> None:
    missing = uuid.uuid4()
    resp = await client.get(f"/api/v1/tools/{missing}", headers=admin_headers)
    assert resp.status_code == 404
    server = one(spans, "GET /api/v1/tools/{tool_id}")
    assert server.kind.name == "SERVER"
    assert server.attributes["http.route"] == "/api/v1/tools/{tool_id}"
    assert server.attributes["http.response.status_code"] == 404
    assert server.attributes["url.path"] == f"/api/v1/tools/{missing}"
    assert server.attributes["roost.request_id"] == resp.headers["x-request-id"]
    assert server.status.status_code.name == "UNSET"  # a 404 is the client's, not a fault
    # Its SQL: transactions, children of the request, with their statement counts.
    sql = [s for s in named(spans, "db.transaction")
           if s.parent is not None and s.parent.span_id == server.context.span_id]
    assert sql and all(s.attributes["roost.db.statements"] >= 1 for s in sql)
    assert {s.attributes["db.system.name"] for s in sql} == {"postgresql"}


async def test_a_request_that_fails_unexpectedly_is_a_failed_span(
    app: FastAPI, spans: Any,
) -> None:
    @app.get("/_test/traced-boom")
    async def boom() -> None:
        raise RuntimeError("the route broke")

    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as client:
        resp = await client.get("/_test/traced-boom")
    assert resp.status_code == 500
    server = one(spans, "GET /_test/traced-boom")
    assert server.attributes["http.response.status_code"] == 500
    assert server.status.status_code.name == "ERROR"


async def test_a_caller_traceparent_puts_the_request_in_the_callers_trace(
    client: httpx.AsyncClient, spans: Any,
) -> None:
    trace_hex, parent_hex = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    resp = await client.get("/api/v1/no-such-thing",
                            headers={"traceparent": f"00-{trace_hex}-{parent_hex}-01"})
    assert resp.status_code == 404
    server = one(spans, "GET unmatched")
    assert server.context.trace_id == int(trace_hex, 16)
    assert server.parent.span_id == int(parent_hex, 16) and server.parent.is_remote


async def test_an_llm_call_is_a_child_of_its_request_with_provider_model_and_tokens(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    spans: Any,
) -> None:
    await add_provider(client, admin_headers, stub)
    _user_id, headers = await make_user(database)
    stub.script(Reply("traced answer"))
    resp = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "stub-model", "messages": [{"role": "user", "content": "hello there"}]})
    assert resp.status_code == 200, resp.text
    request = one(spans, "POST /v1/chat/completions")
    llm = one(spans, "chat stub-model")
    assert llm.kind.name == "CLIENT"
    assert llm.parent.span_id == request.context.span_id
    assert llm.context.trace_id == request.context.trace_id
    usage = resp.json()["usage"]
    assert llm.attributes["gen_ai.provider.name"] == "openai"
    assert llm.attributes["roost.llm.provider"] == "stub"
    assert llm.attributes["gen_ai.request.model"] == "stub-model"
    assert llm.attributes["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert llm.attributes["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    # The call's own transactions (its final records) are inside its span.
    assert any(s.parent is not None and s.parent.span_id == llm.context.span_id
               for s in named(spans, "db.transaction"))


async def test_a_streamed_llm_call_is_a_span_too(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    spans: Any,
) -> None:
    await add_provider(client, admin_headers, stub)
    _user_id, headers = await make_user(database)
    stub.script(Reply("streamed answer"))
    resp = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "stub-model", "stream": True,
        "messages": [{"role": "user", "content": "stream it"}]})
    assert resp.status_code == 200 and "[DONE]" in resp.text
    request = one(spans, "POST /v1/chat/completions")
    llm = one(spans, "chat stub-model")
    assert llm.attributes["roost.llm.streamed"] is True
    assert llm.parent.span_id == request.context.span_id
    assert llm.attributes["gen_ai.usage.output_tokens"] > 0


async def test_a_job_run_by_the_worker_is_a_span_with_its_outcome(
    database: Database, spans: Any,
) -> None:
    async with database.transaction() as session:
        done = await enqueue(session, "test.traced", {"n": 1})
        failed = await enqueue(session, "test.traced_failure", {"n": 2})
    async with in_process_worker(database):
        for _ in range(200):
            if len(named(spans, "job ")) == 2:
                break
            await asyncio.sleep(0.05)
    job = one(spans, "job test.traced")
    assert job.kind.name == "CONSUMER"
    assert job.attributes["roost.task.id"] == str(done.id)
    assert job.attributes["roost.task.outcome"] == "completed"
    assert job.status.status_code.name == "UNSET"
    assert any(s.parent is not None and s.parent.span_id == job.context.span_id
               for s in named(spans, "db.transaction"))
    bad = one(spans, "job test.traced_failure")
    assert bad.attributes["roost.task.id"] == str(failed.id)
    assert bad.attributes["roost.task.outcome"] == "permanent_error"
    assert bad.status.status_code.name == "ERROR"
    assert "no such thing" in (bad.status.description or "")


async def test_an_agent_runs_steps_carry_the_runs_trace_id(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, test_settings: Settings, spans: Any,
) -> None:
    await add_provider(client, admin_headers, stub)
    user_id, headers = await make_user(database)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})), Reply("It is now."))
    async with running_worker(app, database, test_settings):
        resp = await client.post(f"/api/v1/agents/{agent.id}/runs",
                                 json={"input": "What time is it?"}, headers=headers)
        assert resp.status_code == 202, resp.text
        run = await wait_for_run(client, headers, resp.json()["id"])
    assert run["status"] == "completed", run
    trace_id = run["trace_id"]
    otel_trace = int(trace_id.split("-")[1], 16)
    # No traceparent was sent: the run's trace is the request's that started it.
    start = one(spans, "POST /api/v1/agents/{agent_id}/runs")
    assert start.context.trace_id == otel_trace
    run_span = one(spans, "agent.run")
    assert run_span.context.trace_id == otel_trace
    assert run_span.attributes["roost.trace_id"] == trace_id
    assert run_span.attributes["roost.run.outcome"] == "completed"
    job = one(spans, "job agents.run")  # the job that ran it is linked
    assert [link.context.span_id for link in run_span.links] == [job.context.span_id]
    steps = named(spans, "agent.step ")
    assert [s.name for s in sorted(steps, key=lambda s: s.start_time)] == [
        "agent.step llm_call", "agent.step tool_call", "agent.step llm_call"]
    for step in steps:
        assert step.context.trace_id == otel_trace
        assert step.parent.span_id == run_span.context.span_id
        assert step.attributes["roost.trace_id"] == trace_id
        assert step.attributes["roost.run.id"] == run["id"]
    first_call = min((s for s in steps if s.name == "agent.step llm_call"),
                     key=lambda s: s.start_time)
    assert first_call.attributes["roost.run.step_number"] == 1
    assert first_call.attributes["roost.tool_calls"] == 1
    llm = sorted((s for s in spans.get_finished_spans()
                  if s.attributes.get("gen_ai.operation.name") == "chat"), key=lambda s: s.start_time)
    assert [s.name for s in llm] == ["chat", "chat"]  # the agent names no model
    assert all(s.attributes["roost.run.id"] == run["id"] for s in llm)
    assert [s.parent.span_id for s in llm] == [
        s.context.span_id for s in sorted(steps, key=lambda s: s.start_time)
        if s.name == "agent.step llm_call"]
    tool_step = one(spans, "agent.step tool_call")
    tool = one(spans, "execute_tool current_time")
    assert tool.parent.span_id == tool_step.context.span_id
    assert tool.attributes["roost.tool.status"] == "success"


CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENTS = {  # header -> whether W3C Trace Context lets the request join that trace
    "garbage": ("garbage", False),
    "zero span id": (f"00-{CALLER_TRACE}-0000000000000000-01", False),
    "upper-case hex": (f"00-{CALLER_TRACE.upper()}-00F067AA0BA902B7-01", False),
    "version ff": (f"ff-{CALLER_TRACE}-00f067aa0ba902b7-01", False),
    "version 00 with more fields": (f"00-{CALLER_TRACE}-00f067aa0ba902b7-01-extra", False),
    "usable": (f"00-{CALLER_TRACE}-00f067aa0ba902b7-01", True),
    "a later version with more fields": (f"01-{CALLER_TRACE}-00f067aa0ba902b7-01-extra", True),
}


@pytest.mark.parametrize("case", TRACEPARENTS)
async def test_a_run_is_in_the_trace_of_the_request_that_started_it_whatever_its_traceparent(
    client: httpx.AsyncClient, database: Database, spans: Any, case: str,
) -> None:
    """The run's stored trace id is its request's span's: the caller's trace when its
    traceparent is usable, a new one when OpenTelemetry ignores it (the run once kept
    the caller's ids the span refused, or a trace of its own for garbage)."""
    header, usable = TRACEPARENTS[case]
    user_id, headers = await make_user(database)
    agent = await make_agent(database, user_id)
    started = await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "hi"},
                                headers={**headers, "traceparent": header})
    assert started.status_code == 202, started.text
    stored = started.json()["trace_id"].split("-")[1]
    request_span = one(spans, "POST /api/v1/agents/{agent_id}/runs")
    assert f"{request_span.context.trace_id:032x}" == stored
    assert (stored == CALLER_TRACE) is usable, stored


async def test_two_traceparent_headers_start_a_new_trace(
    client: httpx.AsyncClient, database: Database, spans: Any,
) -> None:
    """Two traceparent headers are invalid (W3C Trace Context): the request's span joined
    the last one's trace, while the run route (tracing off) read the first: now neither,
    a new trace for both, and they agree."""
    other = "0af7651916cd43dd8448eb211c80319c"
    user_id, headers = await make_user(database)
    agent = await make_agent(database, user_id)
    started = await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "hi"},
                                headers=[*headers.items(),
                                         ("traceparent", f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"),
                                         ("traceparent", f"00-{other}-00f067aa0ba902b7-01")])
    assert started.status_code == 202, started.text
    stored = started.json()["trace_id"].split("-")[1]
    request_span = one(spans, "POST /api/v1/agents/{agent_id}/runs")
    assert f"{request_span.context.trace_id:032x}" == stored
    assert stored not in (CALLER_TRACE, other), stored
    assert request_span.parent is None


async def test_a_run_of_an_unsampled_caller_keeps_its_sampling_decision(
    client: httpx.AsyncClient, database: Database, spans: Any,
) -> None:
    """A caller's traceparent with flags 00 (not sampled): the run's stored trace_id ended
    in -01 whatever the caller said, so its spans were recorded as orphans of a trace the
    request's (parent-based) sampler dropped. It keeps the decision: -00, no run span."""
    user_id, headers = await make_user(database)
    agent = await make_agent(database, user_id)
    started = await client.post(
        f"/api/v1/agents/{agent.id}/runs", json={"input": "hi"},
        headers={**headers, "traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-00"})
    assert started.status_code == 202, started.text
    stored = started.json()["trace_id"]
    assert stored.split("-")[1] == CALLER_TRACE and stored.endswith("-00"), stored
    assert tracing.trace_ids(stored)[2] is False
    assert not named(spans, "POST /api/v1/agents")  # the request itself was not sampled
    sampled = await client.post(
        f"/api/v1/agents/{agent.id}/runs", json={"input": "hi"},
        headers={**headers, "traceparent": f"00-{CALLER_TRACE}-00f067aa0ba902b7-01"})
    assert sampled.json()["trace_id"].endswith("-01"), sampled.text


@pytest.mark.parametrize(("variable", "value", "said"), [
    ("OTEL_BSP_SCHEDULE_DELAY", "-5", "OTEL_BSP_SCHEDULE_DELAY must be positive"),
    ("OTEL_BSP_MAX_QUEUE_SIZE", "0", "OTEL_BSP_MAX_QUEUE_SIZE must be a positive integer"),
    ("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "100000",
     "OTEL_BSP_MAX_EXPORT_BATCH_SIZE must be less than or equal to OTEL_BSP_MAX_QUEUE_SIZE"),
    ("OTEL_BSP_EXPORT_TIMEOUT", "abc", "OTEL_BSP_EXPORT_TIMEOUT must be a whole number"),
])
def test_a_batching_variable_the_sdk_refuses_is_one_line_at_start(
    tmp_path: Path, pg_server: PgTestServer, db_name: str, variable: str, value: str,
    said: str,
) -> None:
    """ROOST_OTEL_ENABLED=true with a bad OTEL_BSP_* value: every command that opens the
    database died with the SDK's ValueError as a traceback (or, for a value that is no
    number, logged one and went on): now one line naming the variable, exit 2."""
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path),
           "ROOST_OTEL_ENABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9",
           variable: value}
    done = run_roost("limits", "show", env=env)
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert done.stderr.strip() == f"invalid configuration: {said} (the OpenTelemetry SDK's " \
        "batching variables)", done.stderr[-2000:]


@pytest.mark.parametrize("case", TRACEPARENTS)
def test_a_headers_trace_id_follows_w3c_trace_context(case: str) -> None:
    """tracing.header_trace_id reads a header as the request's span does, tracing on or off."""
    header, usable = TRACEPARENTS[case]
    assert tracing.header_trace_id(header) == (CALLER_TRACE if usable else None)


def test_a_stored_trace_id_maps_to_one_trace() -> None:
    trace_hex, parent_hex = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    assert tracing.trace_ids(f"00-{trace_hex}-{parent_hex}-01") == (
        int(trace_hex, 16), int(parent_hex, 16), True)
    other = tracing.trace_ids("run-0193c6a4-0000-7000-8000-000000000001")
    assert other == tracing.trace_ids("run-0193c6a4-0000-7000-8000-000000000001")
    assert other[0] != tracing.trace_ids("workflow-1")[0] and other[0] > 0


def test_off_tracing_loads_nothing_of_the_sdk_and_costs_a_shared_no_op(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from roost.app import create_app\n"
        "from roost.config import Settings\n"
        "from roost import tracing\n"
        "create_app(Settings(), configure_logs=False)\n"
        "assert not tracing.configure(Settings())\n"
        "with tracing.span('x') as s:\n"
        "    s.set('k', 1)\n"
        "assert s is tracing.NOOP and tracing.start('y') is tracing.NOOP\n"
        "assert tracing.traceparent() is None and tracing.current() is tracing.NOOP\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry.sdk'))\n"
        "assert not loaded, loaded\n"
    )
    env = {"ROOST_OTEL_ENABLED": "false", "ROOST_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-3000:]


class _Receiver(BaseHTTPRequestHandler):
    """An OTLP http/protobuf receiver: keeps what it is sent, answers 200."""

    bodies: list[bytes]
    paths: list[str]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.paths.append(self.path)
        self.bodies.append(self.rfile.read(length))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


async def test_enabled_by_settings_it_exports_by_otlp_to_the_configured_endpoint(
    pg_server: PgTestServer, db_name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """ROOST_OTEL_ENABLED and the standard OTEL_* variables, as a process that opens the
    database sees them: its SQL spans reach an OTLP http/protobuf receiver."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    tracing.uninstall()  # not the in-memory exporter: the one configure() builds
    bodies: list[bytes] = []
    paths: list[str] = []
    handler = type("Receiver", (_Receiver,), {"bodies": bodies, "paths": paths})
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.server_port}")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "roost-under-test")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    database = create_database(Settings(data_dir=tmp_path, otel_enabled=True),
                               url=pg_server.url_for(db_name))
    try:
        assert tracing.enabled()
        async with database.transaction() as session:
            await session.execute(tracing_probe())
            await session.execute(tracing_probe())
        await asyncio.to_thread(tracing.flush)
    finally:
        await database.dispose()
        tracing.uninstall()
        receiver.shutdown()
    assert paths and set(paths) == {"/v1/traces"}
    found = []
    for body in bodies:
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    attributes = {a.key: a.value for a in span.attributes}
                    found.append((service["service.name"], span.name,
                                  attributes["roost.db.statements"].int_value))
    assert ("roost-under-test", "db.transaction", 2) in found, found


async def test_statements_on_the_driver_are_a_span_too(database: Database, spans: Any) -> None:
    """``Database.autocommit`` (a warm tool call's record) bypasses the engine's events
    that trace a session's transactions: it starts its own span, with its outcome."""
    async with database.autocommit() as driver:
        await driver.execute("SELECT 1")
    with pytest.raises(Exception, match="division by zero"):
        async with database.autocommit() as driver:
            await driver.execute("SELECT 1 / 0")
    driven = [s for s in named(spans, "db.transaction") if s.attributes.get("roost.db.driver")]
    assert [s.attributes["roost.db.outcome"] for s in driven] == ["commit", "error"]
    assert all(s.kind.name == "CLIENT" and s.attributes["db.system.name"] == "postgresql"
               and s.attributes["roost.db.autocommit"] for s in driven)
