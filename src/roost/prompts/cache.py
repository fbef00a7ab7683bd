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
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy.ext.asyncio import AsyncSession

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
_NONE: Final = object()  # cached "no version resolves"
_MISS: Final = object()


class ResolutionCache:
    def __init__(self) -> None:
        self._entries: OrderedDict[Key, Resolved | object] = OrderedDict()
        self.listening = False
        # Bumped by every invalidation: a lookup that started before one does not store
        # what it read (it may be what the change just replaced).
        self.generation = 0

    def get(self, key: Key) -> tuple[bool, Resolved | None]:
        """(True, the cached resolution or None for "no version"), or (False, None)."""
        if not self.listening:
            return False, None
        found = self._entries.get(key, _MISS)
        if found is _MISS:
            return False, None
        self._entries.move_to_end(key)
        return True, found if isinstance(found, Resolved) else None

    def put(self, key: Key, value: Resolved | None, generation: int) -> None:
        if not self.listening or generation != self.generation:
            return
        self._entries[key] = _NONE if value is None else value
        if len(self._entries) > MAX_ENTRIES:
            self._entries.popitem(last=False)

    def drop(self, _payload: str = "") -> None:
        self.generation += 1
        self._entries.clear()

    def set_listening(self, listening: bool) -> None:
        self.drop()
        self.listening = listening

    def __len__(self) -> int:
        return len(self._entries)


CACHE: Final = ResolutionCache()
runtime.watch(CHANNEL, CACHE.drop, CACHE.set_listening)


def changed(session: AsyncSession) -> None:
    """A write in ``session`` changes what resolves: this process drops its cache when the
    transaction ends (other processes on the trigger's notification), so the writer's next
    chat turn uses the version it just published."""
    runtime.at_transaction_end(session, CACHE.drop)
