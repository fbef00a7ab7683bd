"""The per-process cache of prompt resolutions that chat replies and runs use
(:func:`roost.prompts.service.use`): (user, key, label) -> the resolved version, or "none".

What a resolution depends on changes rarely (labels, a version's ``is_active``, group
memberships), so every such change sends ``NOTIFY roost_prompts`` from a statement
trigger (migration 0900; usage counters do not fire it) and every process drops its whole
cache when it arrives, over the one LISTEN connection runtime settings keep
(:func:`roost.system_settings.runtime.watch`).  Like the settings cache, this one is used
only while that connection listens: before it is up, after it is lost, behind PgBouncer
and in processes without it (workers, the CLI) every resolution asks the database.

A version's text and variables never change (migration 0870), so the entries that resolve
to one version share one :class:`Resolved` (:func:`shared`): twenty members of a group
using its version hold it once, not twenty times.  The distinct versions held are at most
``MAX_CACHED_CHARS`` characters together; a version beyond that is not cached (each use
reads it from the database) until the cache is dropped or entries holding others go.
"""

from __future__ import annotations

import json
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from roost.system_settings import runtime

CHANNEL: Final = "roost_prompts"
MAX_ENTRIES: Final = 20_000  # least recently used beyond this are dropped
MAX_CACHED_CHARS: Final = 50_000_000
"""Characters (texts and variables as JSON) of the distinct versions the cache holds."""


@dataclass(frozen=True)
class Resolved:
    """What a use needs of the version, detached from any session."""

    id: uuid.UUID
    version: int
    prompt_text: str
    variables: Sequence[Mapping[str, Any]]


Key = tuple[uuid.UUID | None, str, str]


class _Held:
    """The versions the cache's entries hold, each once, and their characters: an entry
    of a version is freed when the cache drops it (least recently used, or a NOTIFY)."""

    versions: weakref.WeakValueDictionary[uuid.UUID, Resolved] = weakref.WeakValueDictionary()
    chars = 0


def _release(size: int) -> None:
    _Held.chars -= size


def shared(id_: uuid.UUID, version: int, prompt_text: str,
           variables: Sequence[Mapping[str, Any]]) -> tuple[Resolved, bool]:
    """The one :class:`Resolved` of version ``id_`` this process holds (a new one when it
    holds none yet), and whether it may be cached: False when it would take the versions
    held past ``MAX_CACHED_CHARS``."""
    held = _Held.versions.get(id_)
    if held is not None:
        return held, True
    resolved = Resolved(id=id_, version=version, prompt_text=prompt_text,
                        variables=tuple(variables))
    size = len(prompt_text) + len(json.dumps(resolved.variables))
    if _Held.chars + size > MAX_CACHED_CHARS:
        return resolved, False
    _Held.versions[id_] = resolved
    _Held.chars += size
    weakref.finalize(resolved, _release, size)
    return resolved, True

# None: "no version resolves" (cached too: a key nobody published costs nothing either).
# Written here by publishes, label moves, activations (and group changes, in identity):
# this process drops its cache when such a transaction ends, so the writer's next chat
# turn uses the version it just published.
CACHE: Final = runtime.NotifiedCache[Key, Resolved | None](
    CHANNEL, MAX_ENTRIES, tables=("system_prompt_labels", "system_prompts",
                                  "user_group_memberships"))
