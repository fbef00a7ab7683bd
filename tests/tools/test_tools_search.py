"""Semantic tool search: descriptions embedded off the request path (the
``tools.embed_descriptions`` job, ``roost tools embed``), ranked by cosine similarity,
tenant-scoped, and a clear 409 when no embedder can run."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import bindparam, text

from roost.app import create_app
from roost.config import Settings
from roost.db.engine import Database
from roost.db.vector import VectorType
from roost.identity.tenancy import apply_principal
from roost.keyfiles import KeyMaterial
from roost.knowledge.config import EmbedderSpec
from roost.knowledge.embeddings import LOCAL_MODEL_DIMENSIONS, LOCAL_MODEL_NAME
from roost.principal import Principal
from roost.tools.search import EMBED_TASK, embed_descriptions, search_sql
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer
from tests.support.sql import fetch, scalar
from tests.tools.conftest import CALL_TIMEOUT_S, MAX_OUTPUT_BYTES

pytestmark = pytest.mark.asyncio(loop_scope="session")

LOCAL = EmbedderSpec("local", LOCAL_MODEL_NAME, LOCAL_MODEL_DIMENSIONS)
SEARCH = "/api/v1/tools/search"

GLOBAL_TOOLS = {
    "get_weather_forecast": "Get the weather forecast (temperature, rain, wind) for a city.",
    "send_email": "Send an email message to a recipient with a subject and a body.",
    "convert_currency": "Convert an amount of money from one currency to another at today's rate.",
    "translate_text": "Translate text from one human language into another, e.g. French to English.",
    "create_calendar_event": "Create a meeting or appointment in the user's calendar.",
    "search_web": "Search the internet and return links to web pages.",
    "resize_image": "Resize or crop a picture to given width and height in pixels.",
    "run_sql_query": "Run a SQL query against the analytics database and return the rows.",
    "read_file": "Read the contents of a file on disk.",
    "write_file": "Write text to a file on disk, replacing it.",
    "list_directory": "List the files and folders in a directory.",
    "git_commit": "Record staged changes in the git repository with a commit message.",
    "create_github_issue": "Open a new issue in a GitHub repository with a title and body.",
    "stock_price": "Look up the latest share price of a company on the stock market.",
    "geocode_address": "Turn a street address into latitude and longitude coordinates.",
    "compute_route": "Plan a driving or walking route between two places with directions.",
    "transcribe_audio": "Transcribe speech in an audio recording into written text.",
    "generate_qr_code": "Generate a QR code image that encodes a URL or text.",
    "summarize_pdf": "Summarize a PDF document into a few key points.",
    "book_flight": "Search and book airline flights between two airports on a date.",
}
ALICE_TOOLS = {
    "order_pizza": "Order a pizza for delivery from a nearby restaurant.",
    "play_music": "Play a song or playlist on the user's speakers.",
    "set_timer": "Start a countdown timer that rings after some minutes.",
    "check_blood_pressure": "Record a blood pressure reading in the health diary.",
    "water_plants": "Turn on the garden irrigation to water the plants.",
    "lock_front_door": "Lock the smart lock of the house's front door.",
}
BOB_TOOLS = {  # closer to some queries than anything of alice's: must never show up
    "bob_weather_station": "Current weather and rain forecast from Bob's private weather station.",
    "bob_pizza_oven": "Order pizza to be baked in Bob's oven and delivered.",
    "bob_payroll": "Pay employees their monthly salaries.",
}
LABELLED = {  # query -> the tool that must come first for alice
    "will it rain tomorrow in Paris?": "get_weather_forecast",
    "how many dollars is 50 euros": "convert_currency",
    "I'm hungry, get me some food delivered": "order_pizza",
    "put a meeting with Sam on my agenda for Tuesday": "create_calendar_event",
    "what does this French sentence mean in English": "translate_text",
    "secure the house, lock up": "lock_front_door",
}


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data", log_json=True, max_request_bytes=64 * 1024,
        tools_allowed_hosts="127.0.0.1", tools_call_timeout_s=CALL_TIMEOUT_S,
        tools_max_output_bytes=MAX_OUTPUT_BYTES, knowledge_embedding_provider="local",
    )


async def add_server(database: Database, owner: uuid.UUID | None, name: str,
                     tools: dict[str, str]) -> dict[str, uuid.UUID]:
    """A server row and its tools, inserted as the owner role (as discovery would)."""
    server_id = uuid.uuid4()
    ids: dict[str, uuid.UUID] = {}
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO mcp_servers (id, user_id, name, transport, url) "
            "VALUES (:id, :uid, :name, 'streamable_http', 'https://mcp.example.com/mcp')"
        ), {"id": server_id, "uid": owner, "name": name})
        for tool, description in tools.items():
            ids[tool] = uuid.uuid4()
            await session.execute(text(
                "INSERT INTO tools (id, user_id, mcp_server_id, kind, name, description) "
                "VALUES (:id, :uid, :sid, 'mcp', :name, :description)"
            ), {"id": ids[tool], "uid": owner, "sid": server_id, "name": tool,
                "description": description})
    return ids


async def names(client: httpx.AsyncClient, headers: dict[str, str], q: str, k: int = 5) -> list[str]:
    resp = await client.get(SEARCH, params={"q": q, "k": k}, headers=headers)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["model"] == LOCAL_MODEL_NAME
    scores = [hit["score"] for hit in body["items"]]
    assert scores == sorted(scores, reverse=True) and all(-1 <= s <= 1.0001 for s in scores)
    return [hit["tool"]["name"] for hit in body["items"]]


@pytest.mark.needs_local
async def test_search_ranks_the_relevant_tool_first_within_the_callers_scope(
    client: httpx.AsyncClient, database: Database
) -> None:
    alice_id, alice = await make_user(database)
    bob_id, bob = await make_user(database)
    await add_server(database, None, "shared", GLOBAL_TOOLS)
    alice_tools = await add_server(database, alice_id, "home", ALICE_TOOLS)
    await add_server(database, bob_id, "bobs", BOB_TOOLS)

    # Nothing embedded yet: nothing found (the job has not run).
    assert await names(client, alice, "weather") == []
    report = await embed_descriptions(database, LOCAL)
    builtins = await scalar(database, "SELECT count(*) FROM tools WHERE kind = 'builtin'")
    total = len(GLOBAL_TOOLS) + len(ALICE_TOOLS) + len(BOB_TOOLS) + builtins
    assert (report.stale, report.embedded) == (total, total)
    assert (await embed_descriptions(database, LOCAL)).stale == 0  # idempotent

    for query, expected in LABELLED.items():
        found = await names(client, alice, query)
        assert found and found[0] == expected, (query, found)
        assert not any(name.startswith("bob_") for name in found), (query, found)
    everything = await names(client, alice, "weather pizza payroll salaries", k=50)
    assert not any(name.startswith("bob_") for name in everything)
    assert len(everything) == len(GLOBAL_TOOLS) + len(ALICE_TOOLS) + builtins
    # Bob finds his own station first, and alice's tools never.
    bob_found = await names(client, bob, "weather station rain forecast", k=50)
    assert bob_found[0] == "bob_weather_station"
    assert not set(bob_found) & set(ALICE_TOOLS)

    # Unavailable tools are not offered; a changed description is embedded again.
    async with database.transaction() as session:
        await session.execute(text("UPDATE tools SET available = false WHERE id = :id"),
                              {"id": alice_tools["order_pizza"]})
        await session.execute(text(
            "UPDATE tools SET description = 'Feed the goldfish in the aquarium.' WHERE id = :id"
        ), {"id": alice_tools["water_plants"]})
    assert "order_pizza" not in await names(client, alice, "I'm hungry, get me some food delivered")
    assert (await embed_descriptions(database, LOCAL)).embedded == 1
    assert (await names(client, alice, "feed my fish"))[0] == "water_plants"

    # The default model's partial HNSW index serves the search's expression and predicate
    # (the planner prefers a scan of so few rows unless told otherwise: with sequential
    # scans alone off it may still read the user_id index and sort, as the statistics go;
    # without sorts only an index that yields the distance order can answer).
    async with database.transaction() as session:
        await apply_principal(session, Principal(user_id=alice_id, is_admin=False, kind="api_key"))
        await session.execute(text("SET LOCAL enable_seqscan = off"))
        await session.execute(text("SET LOCAL enable_sort = off"))
        plan = (await session.execute(
            text("EXPLAIN " + search_sql(LOCAL, Principal(user_id=alice_id, is_admin=False,
                                                         kind="api_key")))
            .bindparams(bindparam("qvec", type_=VectorType())),
            {"qvec": [0.05] * LOCAL_MODEL_DIMENSIONS, "k": 5, "uid": alice_id},
        )).scalars().all()
    assert "ix_tools_description_embedding_all_minilm_l6_v2" in "\n".join(plan), plan

    # Bad parameters.
    for params in ({"q": "x", "k": 51}, {"q": "x", "k": 0}, {"q": ""}, {}):
        resp = await client.get(SEARCH, params=params, headers=alice)
        assert resp.status_code == 422, (params, resp.text)


async def test_discovery_enqueues_the_embedding_job(
    client: httpx.AsyncClient, database: Database, http_mcp_url: str
) -> None:
    _, alice = await make_user(database)
    created = await client.post("/api/v1/mcp-servers", headers=alice, json={
        "name": "web", "transport": "streamable_http", "url": http_mcp_url})
    assert created.status_code == 201, created.text
    synced = await client.post(f"/api/v1/mcp-servers/{created.json()['id']}/sync", headers=alice)
    assert synced.status_code == 200, synced.text
    jobs = await fetch(database, "SELECT task_type, user_id FROM background_tasks "
                                 "WHERE task_type = :t", t=EMBED_TASK)
    assert len(jobs) == 1
    # Nothing changed: a second discovery enqueues nothing more.
    again = await client.post(f"/api/v1/mcp-servers/{created.json()['id']}/sync", headers=alice)
    assert again.status_code == 200, again.text
    assert await scalar(database, "SELECT count(*) FROM background_tasks WHERE task_type = :t",
                        t=EMBED_TASK) == 1


@pytest.fixture
def no_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as if the roost[local] extra were not installed."""
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)


async def test_search_without_the_local_extra_is_a_clear_409(
    database: Database, tmp_path: Path, test_keys: KeyMaterial, no_local_extra: None
) -> None:
    settings = Settings(data_dir=tmp_path / "data", knowledge_embedding_provider="local")
    app = create_app(settings, database=database, keys=test_keys, configure_logs=False)
    _, headers = await make_user(database)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as client:
        resp = await client.get(SEARCH, params={"q": "weather"}, headers=headers)
        listed = await client.get("/api/v1/tools", headers=headers)
    assert resp.status_code == 409, resp.text
    problem: dict[str, Any] = resp.json()
    assert problem["type"].endswith("embedder-unavailable")
    assert "roost[local]" in problem["detail"] and "pip install" in problem["detail"]
    assert listed.status_code == 200  # listing does not need the embedder


@pytest.mark.needs_local
async def test_roost_tools_embed_and_search(
    pg_server: PgTestServer, db_name: str, tmp_path: Path, database: Database,
) -> None:
    builtins = await scalar(database, "SELECT count(*) FROM tools WHERE kind = 'builtin'")
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "local"}
    embedded = run_roost("tools", "embed", env=env)
    assert embedded.returncode == 0, embedded.stderr
    assert f"Embedded {builtins} tool description(s) with all-MiniLM-L6-v2" in embedded.stdout
    found = run_roost("tools", "search", "what time is it in Tokyo", "-k", "1", env=env)
    assert found.returncode == 0, found.stderr
    assert "current_time" in found.stdout and "knowledge_search" not in found.stdout
