"""Tool call overhead: what Roost adds to one MCP tool call over the bare SDK.

    .venv/bin/python bench/tools/overhead.py [--calls 1000] [--warmup 100] [--label after]

One embedded PostgreSQL (temporary directory), migrated; the test MCP server
(``tests/tools/mcp_echo_server.py``, stdio, MCPServer of the ``mcp`` SDK) registered as
a global server by the operator and discovered, its tools' descriptions embedded (the
deterministic hash embedder: a vector per tool, as in production); a user with an API
key.  Four ways of
making the same call, ``echo {"text": "overhead"}``, each to a long-lived stdio server
process started once and kept (so no process start is measured):

* **sdk**: ``ClientSession.call_tool`` on a session the script opens itself, with
  ``stdio_client``, to its own server process: the floor;
* **pool**: ``roost.tools.mcpclient.call_tool`` through Roost's stdio pool (lease,
  deadline, result dump and size cap), no database;
* **service**: ``roost.tools.calls.call_tool`` as a route calls it: the prepare
  transaction (find the tool under row-level security, check it, validate the
  arguments), the call through the pool, the record transaction (``tool_runs`` row and
  ``tool.call`` audit record);
* **http**: ``POST /api/v1/tools/{id}/call`` with the API key, through the app of
  ``create_app`` (its lifespan run) over httpx's ASGI transport (no sockets):
  authentication, the request's own transaction, routing, JSON in and out;
* **durable**: no tool at all: one transaction of one ``INSERT`` (a small JSON row) on a
  bare asyncpg connection, committed durably: the floor of recording anything about a
  call before answering (BEGIN, the insert, a COMMIT that waits for the WAL flush).

The five are interleaved call by call (sdk, pool, service, http, then pool, service,
http, sdk...: rotated each round) so drift on a shared machine hits them alike.
Reported: p50/p99 per way and Roost's overhead over the SDK, as the difference of the
medians and as the median of the per-round differences (paired).  Results are merged
into bench/results/tools_overhead.json under ``--label``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "tools_overhead.json"
ECHO = ROOT / "tests" / "tools" / "mcp_echo_server.py"
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # tests.support
ARGUMENTS = {"text": "overhead"}


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client
    from tests.support.identity import make_user

    import roost
    from roost.app import create_app
    from roost.config import Settings
    from roost.db.embedded import start_embedded
    from roost.db.engine import create_database, ensure_database_exists, to_async_url
    from roost.db.migrate import upgrade
    from roost.keyfiles import KeyMaterial
    from roost.knowledge.config import KnowledgeConfig
    from roost.principal import Principal
    from roost.security.crypto import SecretBox
    from roost.tools import calls, mcpclient, search, stdiopool
    from roost.tools.config import ToolsConfig
    from roost.tools.models import McpServer
    from roost.tools.servers import spec_for

    keys = KeyMaterial(
        secret_key=secrets.token_urlsafe(48), message_keys=(Fernet.generate_key().decode(),),
        secrets_key=base64.b64decode(base64.b64encode(secrets.token_bytes(32))),
        admin_token="rst_admin_" + secrets.token_urlsafe(24))
    admin = {"Authorization": f"Bearer {keys.admin_token}"}
    samples: dict[str, list[float]] = {"sdk": [], "pool": [], "service": [], "http": [],
                                       "durable": []}
    with tempfile.TemporaryDirectory(prefix="roost-bench-tools-") as tmp_dir:
        tmp = Path(tmp_dir)
        server = start_embedded(tmp / "pg", delete_on_exit=True)
        try:
            ensure_database_exists(server, "bench_tools")
            settings = Settings(data_dir=tmp / "data", log_json=True, llm_local_model=False,
                                log_level="warning", knowledge_embedding_provider="hash",
                                tools_call_timeout_s=30)
            database = create_database(settings, url=to_async_url(server.libpq_url("bench_tools")))
            await upgrade(database.engine)
            app = create_app(settings, database=database, keys=keys, configure_logs=True)
            user_id, headers = await make_user(database, username="overhead")
            actor = Principal(user_id=user_id, is_admin=False, kind="api_key")
            cfg = ToolsConfig.from_settings(settings)
            box = SecretBox.from_keys(keys.secrets_key)
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50002))
            params = StdioServerParameters(command=sys.executable, args=[str(ECHO)])
            with open(os.devnull, "w") as errlog:  # noqa: ASYNC230
                async with app.router.lifespan_context(app), httpx.AsyncClient(
                    transport=transport, base_url="http://roost.test", timeout=60
                ) as client, stdio_client(params, errlog=errlog) as (read, write), \
                        ClientSession(read, write) as direct:
                    await direct.initialize()
                    created = await client.post("/api/v1/mcp-servers", headers=admin, json={
                        "name": "echo", "transport": "stdio", "command": sys.executable,
                        "args": [str(ECHO)], "is_global": True})
                    assert created.status_code == 201, created.text
                    sid = created.json()["id"]
                    synced = await client.post(f"/api/v1/mcp-servers/{sid}/sync", headers=admin)
                    assert synced.status_code == 200, synced.text
                    listed = await client.get("/api/v1/tools", headers=headers,
                                              params={"server_id": sid, "name": "echo"})
                    tool_id = uuid.UUID(listed.json()["items"][0]["id"])
                    # Tools carry their description's vector in production (384 floats
                    # with the default model): the deterministic hash embedder makes one.
                    report = await search.embed_descriptions(
                        database, KnowledgeConfig.from_settings(settings).embedder)
                    assert report.embedded >= 1, report
                    # The spec the service path builds, for the pool-only path.
                    async with database.transaction() as session:
                        row = await session.get(McpServer, uuid.UUID(sid))
                        assert row is not None
                        spec = spec_for(row, box, cfg)
                    pool = stdiopool.default_pool(calls.stdio_limits(cfg))
                    raw = await asyncpg.connect(server.libpq_url("bench_tools"))
                    await raw.execute("CREATE TABLE bench_durable (id bigserial PRIMARY KEY, "
                                      "payload jsonb NOT NULL)")

                    async def sdk() -> None:
                        result = await direct.call_tool("echo", ARGUMENTS)
                        assert not result.is_error

                    async def via_pool() -> None:
                        outcome = await mcpclient.call_tool(
                            spec, "echo", ARGUMENTS, timeout_s=cfg.call_timeout_s,
                            max_bytes=cfg.max_output_bytes, pool=pool)
                        assert not outcome.is_error

                    async def service() -> None:
                        run = await calls.call_tool(database, actor, cfg, box, tool_id=tool_id,
                                                    arguments=ARGUMENTS)
                        assert run.status == "success"

                    async def http() -> None:
                        answer = await client.post(f"/api/v1/tools/{tool_id}/call",
                                                   headers=headers,
                                                   json={"arguments": ARGUMENTS})
                        assert answer.status_code == 200, answer.text

                    async def durable() -> None:
                        async with raw.transaction():
                            await raw.execute("INSERT INTO bench_durable (payload) VALUES ($1)",
                                              json.dumps(ARGUMENTS))

                    ways: dict[str, Callable[[], Awaitable[None]]] = {
                        "sdk": sdk, "pool": via_pool, "service": service, "http": http,
                        "durable": durable}
                    for _ in range(args.warmup):
                        for way in ways.values():
                            await way()
                    order = list(ways.items())
                    for i in range(args.calls):
                        # Rotated each round: no way always follows the same other one.
                        shift = i % len(order)
                        for name, way in order[shift:] + order[:shift]:
                            t0 = time.perf_counter()
                            await way()
                            samples[name].append((time.perf_counter() - t0) * 1000)
                    await raw.close()
            await database.dispose()
        finally:
            server.stop()
    out: dict[str, Any] = {"roost_file": roost.__file__, "calls": args.calls, "ways": {}}
    for name, values in samples.items():
        out["ways"][name] = {"p50_ms": round(statistics.median(values), 3),
                             "p99_ms": round(_pct(values, 0.99), 3),
                             "mean_ms": round(statistics.fmean(values), 3)}
    floor = out["ways"]["sdk"]["p50_ms"]
    out["overhead_p50_ms"] = {name: round(w["p50_ms"] - floor, 3)
                              for name, w in out["ways"].items() if name not in ("sdk", "durable")}
    # The same, paired: the median over rounds of (this way - the sdk call of the same
    # round), less sensitive to load that comes and goes on a shared machine.
    out["overhead_paired_p50_ms"] = {
        name: round(statistics.median(a - b for a, b in zip(values, samples["sdk"],
                                                                strict=True)), 3)
        for name, values in samples.items() if name not in ("sdk", "durable")}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--label", default="after", help="key in tools_overhead.json")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(f"\n[{args.label}] {'way':<10}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}"
          f"{'+p50 vs sdk':>13}{'paired':>9}")
    for name, w in result["ways"].items():
        extra = result["overhead_p50_ms"].get(name, 0.0)
        paired = result["overhead_paired_p50_ms"].get(name, 0.0)
        print(f"[{args.label}] {name:<10}{w['p50_ms']:>9.3f}{w['p99_ms']:>9.3f}"
              f"{w['mean_ms']:>9.3f}{extra:>13.3f}{paired:>9.3f}")
    existing: dict[str, Any] = {}
    if RESULTS.exists():
        existing = json.loads(RESULTS.read_text())
    existing["benchmark"] = "tools_overhead"
    existing["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                           "platform": platform.platform()}
    existing.setdefault("runs", {})[args.label] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)} [{args.label}]")


if __name__ == "__main__":
    main()
