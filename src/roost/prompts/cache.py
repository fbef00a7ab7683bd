"""The per-process cache of prompt resolutions that chat replies and runs use
(:func:`roost.prompts.service.use`): (user, key, label) -> the resolved version, or "none".

What a resolution depends on changes rarely (labels, a version's ``is_active``, group
memberships), so every such change sends ``NOTIFY roost_prompts`` from a statement
trigger (migration 0900; usage counters do not fire it) and every process drops its whole
cache when it arrives, over the one LISTEN connection runtime settings keep
(:func:`roost.system_settings.runtime.watch`).  Like the settings cache, this one is used
only while that connection listens: before it is up, after it is lost, behind PgBouncer
and in processes without it (workers, the CLI) every resolution asks the database.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from roost.system_settings import runtime

CHANNEL: Final = "roost_prompts"
MAX_ENTRIES: Final = 20_000  # least recently used beyond this are dropped


@dataclass(frozen=True)
class Resolved:
    """What a use needs of the version, detached from any session."""

    id: uuid.UUID
    version: int
    prompt_text: str
    variables: Sequence[Mapping[str, Any]]


Key = tuple[uuid.UUID | None, str, str]

# None: "no version resolves" (cached too: a key nobody published costs nothing either).
# Written here by publishes, label moves, activations (and group changes, in identity):
# this process drops its cache when such a transaction ends, so the writer's next chat
# turn uses the version it just published.
CACHE: Final = runtime.NotifiedCache[Key, Resolved | None](
    CHANNEL, MAX_ENTRIES, tables=("system_prompt_labels", "system_prompts",
                                  "user_group_memberships"))
