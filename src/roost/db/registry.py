"""Imports every domain's models so ``Base.metadata`` is complete for Alembic and tests.

A new domain adds one import line here.
"""

from __future__ import annotations

from roost.audit import models as _audit  # noqa: F401
from roost.chat import models as _chat  # noqa: F401
from roost.db.base import Base
from roost.identity import models as _identity  # noqa: F401
from roost.knowledge import models as _knowledge  # noqa: F401
from roost.llm import models as _llm  # noqa: F401
from roost.tasks import models as _tasks  # noqa: F401

target_metadata = Base.metadata
