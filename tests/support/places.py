"""A database and a data dir, as ``roost`` commands are pointed at them (the backup and
restore tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Place:
    """A database and a data dir, as ``roost`` is pointed at them."""

    url: str
    data_dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {"ROOST_DATABASE_URL": self.url, "ROOST_DATA_DIR": str(self.data_dir)}
