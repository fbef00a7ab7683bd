"""Tables of the workflows domain (filled in by its migration's revision)."""

from __future__ import annotations
