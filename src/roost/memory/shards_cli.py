"""``roost memory shards``: the partitions of the sharded store and their row counts.

``register_shards(memory_app)`` adds the command to the ``roost memory`` group (called
from ``roost.memory.cli.register``).
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from roost.clitools import fail, id_table, print_table, with_database
from roost.db.cliio import printable
from roost.db.engine import Database

console = Console()


def shards_command(
    key: Annotated[str | None, typer.Option(
        help="Also print which partition this shard key hashes to.")] = None,
) -> None:
    """Partitions of distributed_memory: hash bounds and row counts (docs/scale.md)."""
    from roost.config import get_settings
    from roost.memory.shards import Partition, layout, partition_for_key, this_node

    async def run(db: Database) -> tuple[list[Partition], str | None]:
        async with db.transaction() as session:  # as the owner: every row is counted
            parts = await layout(session)
            return parts, (await partition_for_key(session, key) if key is not None else None)

    try:
        parts, keyed = with_database(run)
    except ValueError as exc:
        raise fail("cannot read the sharded store", exc) from None
    table = id_table("partition", "modulus", "remainder", "rows")
    for part in parts:
        table.add_row(part.name, str(part.modulus), str(part.remainder), str(part.rows))
    print_table(console, table)
    settings = get_settings()
    rows = sum(p.rows for p in parts)
    # The node id (ROOST_MEMORY_NODE_ID) and the key are the caller's text: escaped, as
    # every command prints what it did not write itself.
    console.print(f"{_count(len(parts), 'partition')}, {_count(rows, 'row')}; "
                  f"this node: {printable(this_node())}", markup=False, highlight=False)
    if keyed is not None and key is not None:
        console.print(f"shard key {printable(key)} -> {keyed}", markup=False, highlight=False)
    moduli = {p.modulus for p in parts}
    if moduli != {len(parts)} or len(parts) != settings.memory_shards:
        console.print(
            f"warning: ROOST_MEMORY_SHARDS is {settings.memory_shards} but the table has "
            f"{len(parts)} partitions (moduli {sorted(moduli)}); the count is fixed when the "
            "table is created: docs/scale.md shows how to repartition",
            style="yellow", markup=False, highlight=False)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def register_shards(memory_app: typer.Typer) -> None:
    """Add ``shards`` to the ``roost memory`` command group."""
    memory_app.command("shards")(shards_command)
