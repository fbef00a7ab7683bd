"""The seed map: where each column of the five seed designs lives in Roost.

``docs/seeds/columns.json`` lists the seeds' tables and columns (facts extracted from
the design documents); ``docs/seed-map.toml`` says, for each seed ``table.column``,
either the Roost ``table.column`` that holds it or ``{ omitted = "reason" }``.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCS_DIR = Path(os.environ.get("ROOST_DOCS_DIR", Path(__file__).resolve().parents[2] / "docs"))


@dataclass(frozen=True)
class SeedMap:
    columns: dict[str, dict[str, list[str]]]  # seed -> table -> columns
    mapping: dict[str, dict[str, dict[str, Any]]]  # seed -> table -> column -> target
    platforms: dict[str, str] = field(default_factory=dict)  # seed -> platform name

    def label(self, seed: str) -> str:
        """``000 YouWorker``: the seed's number and the platform it describes."""
        number = seed.split("_", 1)[0]
        return f"{number} {self.platforms[seed]}" if seed in self.platforms else seed


def load_seed_map(docs_dir: Path = DOCS_DIR) -> SeedMap:
    columns = json.loads((docs_dir / "seeds" / "columns.json").read_text(encoding="utf-8"))
    mapping = tomllib.loads((docs_dir / "seed-map.toml").read_text(encoding="utf-8"))
    return SeedMap(columns=columns, mapping=mapping.get("seed", {}),
                   platforms=mapping.get("platforms", {}))


def mapped_targets(seed_map: SeedMap) -> list[tuple[str, str, str, str]]:
    """(seed, "table.column" in the seed, roost table, roost column) for each mapped entry."""
    out = []
    for seed, tables in seed_map.mapping.items():
        for table, cols in tables.items():
            for col, target in cols.items():
                if isinstance(target, str):
                    roost_table, _, roost_col = target.partition(".")
                    out.append((seed, f"{table}.{col}", roost_table, roost_col))
    return out


def unknown_entries(seed_map: SeedMap) -> list[str]:
    """Map entries that name a seed, table or column the seeds do not have."""
    bad = []
    for seed, tables in seed_map.mapping.items():
        for table, cols in tables.items():
            known = set(seed_map.columns.get(seed, {}).get(table, []))
            for col, target in cols.items():
                if col not in known:
                    bad.append(f"{seed}: {table}.{col} is not a seed column")
                elif not (isinstance(target, str) and "." in target) and not (
                    isinstance(target, dict) and str(target.get("omitted", "")).strip()
                ):
                    bad.append(f"{seed}: {table}.{col} needs 'table.column' or omitted = reason")
    return bad


@dataclass(frozen=True)
class SeedCoverage:
    seed: str
    tables: int
    total: int
    mapped: int
    omitted: int

    @property
    def missing(self) -> int:
        return self.total - self.mapped - self.omitted

    @property
    def covered_pct(self) -> float:
        return 100.0 * (self.mapped + self.omitted) / self.total if self.total else 100.0


def coverage(seed_map: SeedMap) -> list[SeedCoverage]:
    rows = []
    for seed, tables in seed_map.columns.items():
        mapped = omitted = 0
        for table, cols in tables.items():
            entries = seed_map.mapping.get(seed, {}).get(table, {})
            for col in cols:
                target = entries.get(col)
                if isinstance(target, str):
                    mapped += 1
                elif isinstance(target, dict):
                    omitted += 1
        rows.append(SeedCoverage(seed, len(tables), sum(map(len, tables.values())), mapped, omitted))
    total = SeedCoverage(
        "total", sum(r.tables for r in rows), sum(r.total for r in rows),
        sum(r.mapped for r in rows), sum(r.omitted for r in rows),
    )
    return [*rows, total]
