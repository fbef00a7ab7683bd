"""Who is acting: the principal every service checks on every read and write.

Plain data, below the web layer: services, jobs and CLI commands take a
:class:`Principal` without importing FastAPI.  ``roost.http.auth`` builds one from a
request's bearer credential; ``roost.identity.tenancy.apply_principal`` scopes a
transaction to one (row-level security).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Literal

PrincipalKind = Literal["operator", "session", "api_key", "system", "job"]
"""How the principal came to act:

``operator``
    the bootstrap operator token (``admin_token`` in the key files): an administrator
    without a user account (``user_id`` is ``None``).
``session``
    a user's JWT access token, issued by a sign-in (``session_id`` names the login).
``api_key``
    a user's API key (``api_key_id`` names it).
``system``
    Roost acting on its own: CLI commands, test helpers and system steps
    (:data:`SYSTEM`), or a system step acting for a user's rows (then ``user_id`` is
    theirs and ``is_admin`` false).
``job``
    a background job acting for the user who owns its work (e.g. knowledge curation).
"""


@dataclass(frozen=True)
class Principal:
    """The acting identity that services check on every read and write."""

    user_id: uuid.UUID | None
    is_admin: bool
    kind: PrincipalKind
    session_id: uuid.UUID | None = None
    api_key_id: uuid.UUID | None = None
    group_ids: frozenset[uuid.UUID] = field(default_factory=frozenset)


# The bootstrap operator token.
OPERATOR = Principal(user_id=None, is_admin=True, kind="operator")

# Acting for nobody in particular: CLI commands, test helpers, background jobs.
SYSTEM = Principal(user_id=None, is_admin=True, kind="system")
