"""The built-ins current_time and knowledge_search refuse a NUL in their string arguments.

PostgreSQL text and jsonb cannot hold U+0000, so a NUL in an argument could not be
recorded once the tool ran (current_time: a 400 and no ``tool_runs`` row;
knowledge_search: a 500).  Migration 0520 gave web_fetch's and lsp_diagnostics's strings
the pattern ``^[^\\x00]*$``; 0500's schemas for these two get it now, so the input schema
a model reads says so, and validation refuses such arguments (422 naming the path).

Revision ID: 1170
Revises: 1160
Create Date: 2026-12-06
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1170"
down_revision: str | Sequence[str] | None = "1160"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NO_NUL = "^[^\\x00]*$"  # as in 0520

# (tool id, string properties of its input schema): roost.tools.builtins's ids.
STRINGS = (
    ("019ad9a0-0000-7000-8000-000000000001", ("timezone",)),  # current_time
    ("019ad9a0-0000-7000-8000-000000000002", ("query", "collection")),  # knowledge_search
)

SET = sa.text(
    "UPDATE tools SET input_schema = jsonb_set(input_schema, "
    "CAST(:path AS text[]), to_jsonb(CAST(:pattern AS text))) "
    "WHERE id = :id AND kind = 'builtin' AND input_schema #> CAST(:property AS text[]) "
    "IS NOT NULL"
)
DROP = sa.text(
    "UPDATE tools SET input_schema = input_schema #- CAST(:path AS text[]) "
    "WHERE id = :id AND kind = 'builtin'"
)


def upgrade() -> None:
    for id_, names in STRINGS:
        for name in names:
            op.execute(SET.bindparams(
                id=uuid.UUID(id_), path=f"{{properties,{name},pattern}}",
                property=f"{{properties,{name}}}", pattern=NO_NUL))


def downgrade() -> None:
    for id_, names in STRINGS:
        for name in names:
            op.execute(DROP.bindparams(id=uuid.UUID(id_), path=f"{{properties,{name},pattern}}"))
