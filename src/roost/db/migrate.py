"""Alembic, driven from Python on an async connection (CLI, ``roost serve``, tests)."""

from __future__ import annotations

import functools
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import MetaData, text
from sqlalchemy.engine import URL, Connection
from sqlalchemy.ext.asyncio import AsyncEngine

SCRIPT_LOCATION = Path(__file__).parent / "alembic"
_PARTITION = re.compile(r"^(?P<parent>.+)_p\d+$")


def skip_partitions(metadata: MetaData) -> Callable[[object, str | None, str, bool, object], bool]:
    """Autogenerate's ``include_object``: compare everything but the partitions of a
    partitioned table (named ``<table>_p<N>`` by their migration; the models declare only
    the parent, whose ``postgresql_partition_by`` says it has them)."""

    def include_object(obj: object, name: str | None, type_: str, reflected: bool,
                       compare_to: object) -> bool:
        if type_ == "table" and reflected and compare_to is None and name:
            match = _PARTITION.match(name)
            parent = metadata.tables.get(match["parent"]) if match else None
            if parent is not None and parent.dialect_options["postgresql"].get("partition_by"):
                return False
        return True

    return include_object


def alembic_config(url: URL | None = None, output: io.StringIO | None = None) -> Config:
    cfg = Config(stdout=output) if output is not None else Config()
    cfg.set_main_option("script_location", str(SCRIPT_LOCATION))
    if url is not None:
        cfg.set_main_option(
            "sqlalchemy.url", url.render_as_string(hide_password=False).replace("%", "%%")
        )
    return cfg


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


@functools.cache
def head_revisions() -> tuple[str, ...]:
    """Parsed once per process: the scripts on disk do not change while it runs."""
    return tuple(script_directory().get_heads())


@functools.cache
def known_revisions() -> frozenset[str]:
    """Every revision this Roost's scripts hold (parsed once per process)."""
    return frozenset(script.revision for script in script_directory().walk_revisions())


MIGRATION_LOCK: Final = 0x526F6F7374  # pg_advisory_xact_lock key ("Roost")


async def upgrade(engine: AsyncEngine, revision: str = "heads") -> None:
    await _run(engine, lambda cfg: command.upgrade(cfg, revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    await _run(engine, lambda cfg: command.downgrade(cfg, revision))


async def _run(engine: AsyncEngine, action: object) -> None:
    def run(sync_conn: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = sync_conn
        action(cfg)  # type: ignore[operator]

    async with engine.begin() as conn:
        # One migrator at a time (`roost serve`, a command's first use of the embedded
        # database, `roost db upgrade`, N processes starting together): the others wait
        # here, then find the revision they wanted already applied.
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        await conn.run_sync(run)


async def current_revisions(engine: AsyncEngine) -> tuple[str, ...]:
    def read(sync_conn: Connection) -> tuple[str, ...]:
        return tuple(MigrationContext.configure(sync_conn).get_current_heads())

    async with engine.connect() as conn:
        return await conn.run_sync(read)


@dataclass(frozen=True)
class MigrationState:
    current: tuple[str, ...]
    heads: tuple[str, ...]

    @property
    def at_head(self) -> bool:
        return set(self.current) == set(self.heads)

    @property
    def pending(self) -> bool:
        return not self.at_head

    @property
    def unknown(self) -> tuple[str, ...]:
        """Current revisions this Roost's scripts do not hold: a newer Roost migrated the
        database (then the software was rolled back). Not "behind": no upgrade this Roost
        can run reaches them (Alembic: "Can't locate revision")."""
        known = known_revisions()
        return tuple(rev for rev in self.current if rev not in known)

    def unknown_reason(self) -> str:
        """One line for an operator about :attr:`unknown` (doctor, ``roost db current``,
        ``roost serve``, ``roost db upgrade``)."""
        revs = ", ".join(self.unknown)
        noun = "revision" if len(self.unknown) == 1 else "revisions"
        return (f"migrated by a newer Roost ({noun} {revs} unknown to this one, whose head "
                f"is {', '.join(self.heads)}): upgrade Roost")


async def migration_state(engine: AsyncEngine) -> MigrationState:
    return MigrationState(current=await current_revisions(engine), heads=head_revisions())


def history_lines() -> list[str]:
    """Newest first: ``rev (head) <- down_rev: message``."""
    lines = []
    for script in script_directory().walk_revisions():
        head = " (head)" if script.is_head else ""
        title = (script.doc or "").strip().splitlines()[0] if script.doc else ""
        lines.append(f"{script.revision}{head} <- {script.down_revision}: {title}")
    return lines
