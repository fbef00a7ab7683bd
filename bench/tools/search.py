"""Semantic tool search benchmark: top-1/top-5 recall on labelled queries among 10,000
tools, per ranking method, and search latency.

    .venv/bin/python bench/tools/search.py [--tools 10000] [--repeat 10]

One embedded PostgreSQL (temporary directory), migrated.  ``--tools`` tools are
generated (verb x object x system, e.g. "Archive an invoice in Salesforce."), one of
three tenants each (a third global); among them 24 hand-written *target* tools.
Everything is embedded with the local all-MiniLM-L6-v2 through
``roost.tools.search.embed_descriptions`` (the job's code); every query runs in a
transaction scoped to the first user as a request is (``apply_principal``: row-level
security on; that user sees about 6,700 tools).

Three labelled query sets (query -> the one right tool):

- ``original``: one paraphrase per target, the set the first version was measured on;
- ``held_out``: a second paraphrase per target, written before any ranking change was
  tried (all three sets were then used to compare the candidates: none is a pristine
  test set, but none was rewritten after seeing a result);
- ``generated``: 24 paraphrases of generated tools drawn at random (they must name the
  system: "shelve the supplier in Salesforce"), so a ranking that merely favours the
  tools unlike the rest is caught.

Methods (``roost.tools.search``): ``hnsw_plain_ef<N>`` (cosine through the HNSW index,
k candidates: the first search, at 64), ``exact_plain`` (cosine, exact scan: what the
model alone gives), ``exact_centred`` (the centred cosine, the search until
2026-12-04), ``exact_centred_neighbours`` (the search now: ranked by twice the centred
cosine less the tool's neighbour similarity) and ``hnsw_centred_neighbours`` (the
fallback above ``EXACT_SCAN_MAX`` tools).  Per method: recall per
set and p50/p99 of the SQL alone (query vector precomputed); for the search before and
now, p50/p99 of the whole search (query embedding included) over ``--repeat`` rounds.
The HNSW index's own scan counter is read around the HNSW runs to prove they used it.
Writes bench/results/tools_search.json.  Needs the ``local`` extra.
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
# Written before any ranking change was tried (see the docstring): a second paraphrase
# of each target.
HELD_OUT = {
    "get_weather_forecast": "do I need an umbrella this weekend in London",
    "convert_currency": "what's 200 pounds in yen",
    "translate_text": "say 'good morning' in Japanese",
    "create_calendar_event": "block two hours on Friday afternoon for the dentist",
    "order_food_delivery": "get a large pepperoni sent to my apartment",
    "lock_front_door": "make sure nobody can get into the house while we're away",
    "transcribe_audio": "write down what was said in this podcast episode",
    "resize_image": "shrink this jpeg to 800 by 600",
    "stock_price": "is Nvidia up or down on Nasdaq today",
    "geocode_address": "get the GPS position for 1600 Pennsylvania Avenue",
    "compute_route": "fastest way to drive to the airport from here",
    "generate_qr_code": "create a code people can scan with their phone to open my menu",
    "summarize_pdf": "I don't have time to read this 40-page whitepaper, what does it say",
    "book_flight": "reserve a seat on a plane from Boston to Denver in March",
    "play_music": "I want to listen to the Beatles",
    "set_timer": "let me know when 25 minutes have passed",
    "send_sms": "message John on his mobile that the meeting moved",
    "check_spelling": "are there any typos in this email",
    "water_plants": "the lawn needs water, start the sprinklers",
    "measure_blood_pressure": "my reading this morning was 130 over 85, save it",
    "calculate_mortgage": "how much would I repay monthly borrowing 400k to buy a flat over 25 years",
    "find_recipe": "dinner ideas using chicken and rice",
    "track_package": "when will the courier bring my shipment",
    "define_word": "what is the meaning of 'serendipity'",
}
# Generated tools drawn at random (random.Random(12345) among the searching user's), by
# the start of their description, each with a paraphrase that names the system.
GENERATED_QUERIES = {
    "Share a build pipeline in Freshdesk.": "give a colleague access to our Freshdesk CI pipeline",
    "List a sales lead in Monday.": "show me the prospects we have in Monday",
    "Close a code review comment in QuickBooks.": "resolve that review remark in QuickBooks",
    "Archive an SSL certificate in QuickBooks.": "put the old TLS cert in QuickBooks into storage",
    "Search a sales lead in Okta.": "look for a prospect in Okta",
    "Reopen a feature flag in Monday.": "the feature toggle in Monday was closed, open it again",
    "Delete a DNS record in Jenkins.": "remove the domain name entry from Jenkins",
    "Duplicate a warehouse bin in Notion.": "make a copy of a storage location in Notion",
    "Reopen a user group in Zendesk.": "open the closed Zendesk team again",
    "Archive a vendor in Salesforce.": "shelve the supplier in Salesforce",
    "Archive an employee profile in ServiceNow.": "retire a staff member's record in ServiceNow",
    "Reopen a feature flag in Confluence.": "bring a closed feature toggle back in Confluence",
    "Reject an SSL certificate in NetSuite.": "decline the TLS certificate request in NetSuite",
    "Delete a code review comment in SAP.": "remove a review remark in SAP",
    "Archive an SSL certificate in Salesforce.": "store away an expired HTTPS certificate in Salesforce",
    "Delete an invoice in Workday.": "get rid of a bill in Workday",
    "Merge a marketing campaign in Zendesk.": "combine two promotions in Zendesk into one",
    "Import a feature flag in NetSuite.": "load feature toggles into NetSuite from a file",
    "Validate a warehouse bin in Salesforce.": "check that a storage location in Salesforce is valid",
    "Reopen a contract in GitLab.": "the agreement in GitLab was closed by mistake, open it again",
    "Search a shipment manifest in Shopify.": "find a cargo list in Shopify",
    "Create an invoice in Jira.": "raise a new bill in Jira",
    "Close a user group in Freshdesk.": "shut down a team in Freshdesk",
    "Import a code review comment in Okta.": "bring review remarks into Okta",
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
    import numpy as np
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
    from roost.tools import search
    from roost.tools.models import EMBEDDING_DEFAULT_INDEX

    spec = EmbedderSpec("local", LOCAL_MODEL_NAME, LOCAL_MODEL_DIMENSIONS)
    knowledge = KnowledgeConfig(embedder=spec)
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
            report = await search.embed_descriptions(db, spec, embedder=embedder)
            embed_s = time.perf_counter() - t0
            print(f"embedded {report.embedded} tools in {embed_s:.1f} s", flush=True)

            actor = Principal(user_id=users[0], is_admin=False, kind="api_key")
            visible = [(n, d) for n, d, o in rows if o in (None, users[0])]
            by_description = {d.split(". ")[0].rstrip(".") + ".": n for n, d in visible}
            sets = {
                "original": {q: name for name, (_, q) in TARGETS.items()},
                "held_out": {q: name for name, q in HELD_OUT.items()},
                "generated": {q: by_description[d] for d, q in GENERATED_QUERIES.items()
                              if d in by_description},
            }
            every = [q for queries in sets.values() for q in queries]
            vectors = {q: np.asarray(v, dtype=np.float64)
                       for q, v in zip(every, await embedder.embed(every), strict=True)}
            async with db.transaction() as session:
                await apply_principal(session, actor)
                scope = await search.catalogue(session, actor, spec)
            plain = search.Catalogue(0, None)  # plain cosine: no centre, no neighbour term

            async def ranked(method: str, q: str, k: int = 5) -> list[str]:
                """One method's top k for ``q``: tool names, in a scoped transaction."""
                async with db.transaction() as session:
                    await apply_principal(session, actor)
                    vec = vectors[q]
                    if method == "exact_plain":
                        found = await search.exact_candidates(session, spec, actor, vec, plain,
                                                              k, neighbours=False)
                    elif method == "exact_centred":
                        found = await search.exact_candidates(session, spec, actor, vec, scope,
                                                              k, neighbours=False)
                    elif method == "exact_centred_neighbours":
                        found = await search.exact_candidates(session, spec, actor, vec, scope, k)
                    elif method == "hnsw_centred_neighbours":
                        pool = max(k * search.CANDIDATES_PER_HIT, search.MIN_CANDIDATES)
                        found = await search.index_candidates(
                            session, spec, actor, vec, scope, k, pool=pool,
                            ef_search=max(search.HNSW_MIN_EF_SEARCH, pool))
                    else:  # hnsw_plain_ef<N>: the search before centring and exact scans
                        found = await search.index_candidates(
                            session, spec, actor, vec, plain, k, pool=k,
                            ef_search=int(method.rsplit("ef", 1)[1]))
                    ids = [tool_id for tool_id, _ in found]
                    names = {row.id: row.name for row in await session.execute(
                        text("SELECT id, name FROM tools WHERE id = ANY(:ids)"), {"ids": ids})}
                    # This backend's index counters reach pg_stat_user_indexes at commit.
                    await session.execute(text("SELECT pg_stat_force_next_flush()"))
                    return [names[i] for i in ids]

            async def index_scans() -> int:
                await asyncio.sleep(0.5)  # the last transaction's counters (flushed at commit)
                async with db.transaction() as session:
                    return int(await session.scalar(text(
                        "SELECT idx_scan FROM pg_stat_user_indexes WHERE indexrelname = :i"
                    ), {"i": EMBEDDING_DEFAULT_INDEX}) or 0)

            methods = ["hnsw_plain_ef64", "hnsw_plain_ef200", "hnsw_plain_ef400",
                       "exact_plain", "exact_centred", "exact_centred_neighbours",
                       "hnsw_centred_neighbours"]
            results: dict[str, Any] = {}
            exact_top: dict[str, list[str]] = {q: await ranked("exact_plain", q) for q in every}
            for method in methods:
                scans_before = await index_scans()
                recall: dict[str, Any] = {}
                overlap = 0
                for set_name, queries in sets.items():
                    top1 = top5 = 0
                    misses = []
                    for q, target in queries.items():
                        found = await ranked(method, q)
                        top1 += found[:1] == [target]
                        top5 += target in found
                        overlap += len(set(found) & set(exact_top[q]))
                        if target not in found:
                            misses.append(q)
                    recall[set_name] = {"top1": round(top1 / len(queries), 3),
                                        "top5": round(top5 / len(queries), 3), "misses": misses}
                hits5 = sum(r["top5"] * len(sets[s]) for s, r in recall.items())
                scans = await index_scans() - scans_before
                sql_ms: list[float] = []
                for _ in range(args.repeat):
                    for q in sets["original"]:
                        t = time.perf_counter()
                        await ranked(method, q)
                        sql_ms.append((time.perf_counter() - t) * 1000)
                results[method] = {
                    "recall": recall,
                    "recall_top5_all": round(hits5 / len(every), 3),
                    "top5_overlap_with_exact_plain": round(overlap / (5 * len(every)), 3),
                    "hnsw_index_scans": scans,
                    "sql_ms": {"p50": round(statistics.median(sql_ms), 2),
                               "p99": round(pct(sql_ms, 0.99), 2)},
                }
                print(method, json.dumps({s: (r["top1"], r["top5"]) for s, r in recall.items()}),
                      results[method]["sql_ms"], f"index scans {scans}", flush=True)

            # The whole search (query embedding included): before (HNSW, ef_search 64,
            # plain cosine) and now (search_tools: catalogue cached, exact, centred).
            async def before(q: str) -> None:
                async with db.transaction() as session:
                    await apply_principal(session, actor)
                    vec = np.asarray((await embedder.embed([q]))[0], dtype=np.float64)
                    await search.index_candidates(session, spec, actor, vec, plain, 5,
                                                  pool=5, ef_search=64)

            async def now(q: str) -> None:
                async with db.transaction() as session:
                    await apply_principal(session, actor)
                    await search.search_tools(session, actor, knowledge, q, 5, embedder=embedder)

            whole: dict[str, Any] = {}
            for label, fn in (("before", before), ("now", now)):
                timings: list[float] = []
                for _ in range(args.repeat):
                    for q in sets["original"]:
                        t = time.perf_counter()
                        await fn(q)
                        timings.append((time.perf_counter() - t) * 1000)
                whole[label] = {"p50": round(statistics.median(timings), 2),
                                "p99": round(pct(timings, 0.99), 2), "samples": len(timings)}
            # The catalogue (count and mean), when not cached: once per scope per TTL.
            uncached: list[float] = []
            for _ in range(args.repeat):
                search._catalogues.clear()
                async with db.transaction() as session:
                    await apply_principal(session, actor)
                    t = time.perf_counter()
                    await search.catalogue(session, actor, spec)
                    uncached.append((time.perf_counter() - t) * 1000)
            print("whole search", whole, "catalogue uncached p50",
                  round(statistics.median(uncached), 2), flush=True)
        finally:
            await db.dispose()
            server.stop()
    return {
        "tools": args.tools, "visible_to_searcher": scope.count, "model": spec.model,
        "queries": {name: len(queries) for name, queries in sets.items()},
        "embed_s": round(embed_s, 1), "embed_tools_per_s": round(report.embedded / embed_s, 1),
        "methods": results,
        "search_ms": whole,
        "catalogue_uncached_ms_p50": round(statistics.median(uncached), 2),
        "python": sys.version.split()[0], "machine": platform.machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tools", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=10)
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
