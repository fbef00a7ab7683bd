"""Semantic tool search benchmark: top-5 recall on labelled queries among 10,000 tools,
and search latency.

    .venv/bin/python bench/tools/search.py [--tools 10000] [--repeat 10] [--ef 64,200]

One embedded PostgreSQL (temporary directory), migrated.  ``--tools`` tools are
generated (verb x object x system, e.g. "Archive an invoice in Salesforce."), one of
three tenants each (a third global); among them 24 hand-written *target* tools, each
with a paraphrased query that names none of its words where possible ("will it rain
tomorrow in Paris?" -> get_weather_forecast).  Everything is embedded with the local
all-MiniLM-L6-v2 through ``roost.tools.search.embed_descriptions`` (the job's code),
then each query runs through ``search_tools`` in a transaction scoped to the first
user as a request is (``apply_principal``: row-level security on).

Reported: embedding throughput (tools/s); top-1 and top-5 recall of the targets with
an exact scan (index off: what the model gives) and, per ``hnsw.ef_search``, with the
HNSW index, its top-5 overlap with the exact scan, and p50/p99 latency of the whole
search (query embedding included) and of the SQL alone (query vector precomputed),
over ``--repeat`` rounds of the queries.  Writes
bench/results/tools_search.json.  Needs the ``local`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "tools_search.json"
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # tests.support

TARGETS = {
    "get_weather_forecast": ("Get the weather forecast (temperature, rain, wind) for a city.",
                             "will it rain tomorrow in Paris?"),
    "convert_currency": ("Convert an amount of money from one currency to another.",
                         "how many dollars is 50 euros"),
    "translate_text": ("Translate text from one human language into another.",
                       "what does this French sentence mean in English"),
    "create_calendar_event": ("Create a meeting or appointment in the user's calendar.",
                              "put a meeting with Sam on my agenda for Tuesday"),
    "order_food_delivery": ("Order a meal for delivery from a nearby restaurant.",
                            "I'm hungry, get me some food brought over"),
    "lock_front_door": ("Lock the smart lock of the house's front door.",
                        "secure the house, lock up"),
    "transcribe_audio": ("Transcribe speech in an audio recording into written text.",
                         "turn this voice memo into words"),
    "resize_image": ("Resize or crop a picture to a given width and height in pixels.",
                     "make this photo smaller"),
    "stock_price": ("Look up the latest share price of a company on the stock market.",
                    "how is Apple trading today"),
    "geocode_address": ("Turn a street address into latitude and longitude coordinates.",
                        "where on the map is 10 Downing Street"),
    "compute_route": ("Plan a driving or walking route between two places with directions.",
                      "how do I get from the station to the museum"),
    "generate_qr_code": ("Generate a QR code image that encodes a URL or text.",
                         "make a scannable square code for my website link"),
    "summarize_pdf": ("Summarize a PDF document into a few key points.",
                      "give me the gist of this report file"),
    "book_flight": ("Search and book airline flights between two airports on a date.",
                    "get me a plane ticket to Lisbon next Friday"),
    "play_music": ("Play a song or playlist on the user's speakers.",
                   "put on some jazz"),
    "set_timer": ("Start a countdown timer that rings after some minutes.",
                  "remind me in ten minutes when the pasta is done"),
    "send_sms": ("Send a text message to a phone number.",
                 "text my mom that I'll be late"),
    "check_spelling": ("Check a text for spelling and grammar mistakes.",
                       "proofread my cover letter"),
    "water_plants": ("Turn on the garden irrigation to water the plants.",
                     "the flowers outside look dry"),
    "measure_blood_pressure": ("Record a blood pressure reading in the health diary.",
                               "log my systolic and diastolic numbers"),
    "calculate_mortgage": ("Compute the monthly payment of a home loan.",
                           "what would I pay per month for a 300k house loan"),
    "find_recipe": ("Find cooking recipes that use given ingredients.",
                    "what can I cook with eggs, spinach and feta"),
    "track_package": ("Track the delivery status of a parcel by its tracking number.",
                      "where is my Amazon order right now"),
    "define_word": ("Give the dictionary definition of an English word.",
                    "what does 'ephemeral' mean"),
}
VERBS = ["Create", "Update", "Delete", "List", "Archive", "Export", "Import", "Approve",
         "Reject", "Assign", "Close", "Reopen", "Duplicate", "Merge", "Tag", "Search",
         "Count", "Validate", "Sync", "Share"]
OBJECTS = ["an invoice", "a customer record", "a support ticket", "a sales lead",
           "a purchase order", "a contract", "an employee profile", "a vendor",
           "a product SKU", "a warehouse bin", "a shipment manifest", "a pull request",
           "a build pipeline", "a feature flag", "a user group", "an expense report",
           "a timesheet", "a marketing campaign", "a survey response", "a wiki page",
           "a code review comment", "a database backup", "a DNS record", "an SSL certificate",
           "a Kubernetes deployment"]
SYSTEMS = ["Salesforce", "Jira", "Zendesk", "SAP", "HubSpot", "Workday", "GitLab", "Jenkins",
           "Confluence", "NetSuite", "ServiceNow", "Shopify", "QuickBooks", "Okta", "Asana",
           "Airtable", "Notion", "Freshdesk", "Oracle ERP", "Monday"]
QUALIFIERS = ["Requires an API token.", "Returns the new id.", "Fails if it is locked.",
              "Works in batches of 100.", "Only for administrators.", ""]


def generated(n: int) -> list[tuple[str, str]]:
    rng = random.Random(7)
    combos = list(itertools.product(VERBS, OBJECTS, SYSTEMS))
    rng.shuffle(combos)
    out = []
    for i, (verb, obj, system) in enumerate(combos[:n]):
        name = f"{system}_{verb}_{obj.split(' ', 1)[1]}".lower().replace(" ", "_")
        description = f"{verb} {obj} in {system}. {rng.choice(QUALIFIERS)}".strip()
        out.append((f"{name}_{i}", description))
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import text
    from tests.support.identity import make_user

    from roost.config import Settings
    from roost.db.embedded import start_embedded
    from roost.db.engine import create_database, ensure_database_exists, to_async_url
    from roost.db.migrate import upgrade
    from roost.identity.tenancy import apply_principal
    from roost.knowledge.config import EmbedderSpec, KnowledgeConfig, get_embedder
    from roost.knowledge.embeddings import LOCAL_MODEL_DIMENSIONS, LOCAL_MODEL_NAME
    from roost.principal import Principal
    from roost.tools.search import embed_descriptions, search_tools

    spec = EmbedderSpec("local", LOCAL_MODEL_NAME, LOCAL_MODEL_DIMENSIONS)
    knowledge = KnowledgeConfig(embedder=spec)  # replaced per ef_search below
    embedder = get_embedder(spec)
    with tempfile.TemporaryDirectory(prefix="roost-bench-tools-") as tmp_dir:
        server = start_embedded(Path(tmp_dir) / "pg", delete_on_exit=True)
        ensure_database_exists(server, "bench_tools")
        db = create_database(Settings(), url=to_async_url(server.libpq_url("bench_tools")))
        try:
            await upgrade(db.engine)
            users = [(await make_user(db, username=f"user{i}"))[0] for i in range(2)]
            owners: list[uuid.UUID | None] = [None, *users]
            servers = {owner: uuid.uuid4() for owner in owners}
            rows = [(name, desc, owners[i % 3]) for i, (name, desc) in
                    enumerate(generated(args.tools - len(TARGETS)))]
            rows += [(name, desc, owners[i % 2]) for i, (name, (desc, _)) in enumerate(TARGETS.items())]
            async with db.transaction() as session:
                for owner, sid in servers.items():
                    await session.execute(text(
                        "INSERT INTO mcp_servers (id, user_id, name, transport, url) VALUES "
                        "(:id, :uid, :name, 'streamable_http', 'https://mcp.example.com/mcp')"
                    ), {"id": sid, "uid": owner, "name": f"s{owner}"})
                await session.execute(text(
                    "INSERT INTO tools (id, user_id, mcp_server_id, kind, name, description) "
                    "VALUES (:id, :uid, :sid, 'mcp', :name, :d)"
                ), [{"id": uuid.uuid4(), "uid": o, "sid": servers[o], "name": n, "d": d}
                    for n, d, o in rows])
            await embedder.embed(["warm up"])
            t0 = time.perf_counter()
            report = await embed_descriptions(db, spec, embedder=embedder)
            embed_s = time.perf_counter() - t0
            print(f"embedded {report.embedded} tools in {embed_s:.1f} s", flush=True)

            actor = Principal(user_id=users[0], is_admin=False, kind="api_key")
            queries = {q: name for name, (_, q) in TARGETS.items()}
            vectors = dict(zip(queries, await embedder.embed(list(queries)), strict=True))

            class Fixed:  # the query vector precomputed: the SQL alone
                model_name, dimensions = spec.model, spec.dimensions
                current: list[float] = []

                async def embed(self, texts: list[str]) -> list[list[float]]:
                    return [self.current]

            fixed = Fixed()

            async def run(q: str, exact: bool = False, sql_only: bool = False) -> list[str]:
                async with db.transaction() as session:
                    await apply_principal(session, actor)
                    if exact:
                        await session.execute(text("SET LOCAL enable_indexscan = off"))
                    fixed.current = vectors[q]
                    hits = await search_tools(session, actor, knowledge, q, 5,
                                              embedder=fixed if sql_only or exact else embedder)
                    return [h.tool.name for h in hits]

            exact_top: dict[str, list[str]] = {q: await run(q, exact=True) for q in queries}
            by_ef: dict[str, Any] = {}
            for ef in args.ef:
                knowledge = KnowledgeConfig(embedder=spec, ef_search=ef)
                top1 = top5 = agree = 0
                for q, target in queries.items():
                    found = await run(q)
                    top1 += found[:1] == [target]
                    top5 += target in found
                    agree += len(set(found) & set(exact_top[q]))
                full: list[float] = []
                sql: list[float] = []
                for _ in range(args.repeat):
                    for q in queries:
                        t = time.perf_counter()
                        await run(q)
                        full.append((time.perf_counter() - t) * 1000)
                        t = time.perf_counter()
                        await run(q, sql_only=True)
                        sql.append((time.perf_counter() - t) * 1000)
                by_ef[str(ef)] = {
                    "recall_top1": round(top1 / len(queries), 3),
                    "recall_top5": round(top5 / len(queries), 3),
                    "hnsw_vs_exact_top5_overlap": round(agree / (5 * len(queries)), 3),
                    "search_ms": {"p50": round(statistics.median(full), 2),
                                  "p99": round(pct(full, 0.99), 2)},
                    "sql_ms": {"p50": round(statistics.median(sql), 2),
                               "p99": round(pct(sql, 0.99), 2)},
                    "samples": len(full),
                }
                print(f"ef_search {ef}: {by_ef[str(ef)]}", flush=True)
            exact_ms: list[float] = []
            for _ in range(args.repeat):
                for q in queries:
                    t = time.perf_counter()
                    await run(q, exact=True)
                    exact_ms.append((time.perf_counter() - t) * 1000)
            exact1 = sum(exact_top[q][:1] == [t] for q, t in queries.items())
            exact5 = sum(t in exact_top[q] for q, t in queries.items())
            for q, t in queries.items():
                if t not in exact_top[q]:
                    print(f"  exact miss: {q!r} -> {exact_top[q]}", flush=True)
        finally:
            await db.dispose()
            server.stop()
    n = len(queries)
    return {
        "tools": args.tools, "queries": n, "model": spec.model,
        "embed_s": round(embed_s, 1), "embed_tools_per_s": round(report.embedded / embed_s, 1),
        "exact": {"recall_top1": round(exact1 / n, 3), "recall_top5": round(exact5 / n, 3),
                  "sql_ms": {"p50": round(statistics.median(exact_ms), 2),
                             "p99": round(pct(exact_ms, 0.99), 2)}},
        "hnsw_by_ef_search": by_ef,
        "python": sys.version.split()[0], "machine": platform.machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--ef", type=lambda v: [int(x) for x in v.split(",")], default=[64, 200],
                        help="hnsw.ef_search values (64: ROOST_KNOWLEDGE_EF_SEARCH's default)")
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
