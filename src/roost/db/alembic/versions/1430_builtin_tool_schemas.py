"""Built-in tools' input schemas say what their services accept.

``task_update`` declared every optional field as a string, so an agent could not clear a
task's due date, project, category or description (``null``, which ``PATCH
/api/v1/tasks-board/{id}`` takes): the call failed its schema before the service saw it.
``memory_add`` counted its content's 4,000 characters before the white space around it
was dropped, so a fact ending with a newline at the limit failed where the API stores
it; the tool now checks the content as the API does (stripped, then counted).

Revision ID: 1430
Revises: 1420
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1430"
down_revision: str | Sequence[str] | None = "1420"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TASK_UPDATE_ID = "019ad9a0-0000-7000-8000-000000000903"
MEMORY_ADD_ID = "019ad9a0-0000-7000-8000-000000000702"
CLEARABLE = ("due_date", "project_id", "category", "description")


def _task_update_types(json_type: str) -> None:
    for field in CLEARABLE:
        op.execute(
            f"UPDATE tools SET input_schema = jsonb_set(input_schema, "  # noqa: S608 - constants
            f"'{{properties,{field},type}}', '{json_type}'::jsonb) "
            f"WHERE id = '{TASK_UPDATE_ID}' AND input_schema #> '{{properties,{field}}}' IS NOT NULL")


def upgrade() -> None:
    _task_update_types('["string", "null"]')
    op.execute(
        "UPDATE tools SET description = description || ' A null due_date, project_id, "  # noqa: S608 - constants
        "category or description clears it.' "
        f"WHERE id = '{TASK_UPDATE_ID}' AND description NOT LIKE '%clears it.'")
    op.execute(
        "UPDATE tools SET input_schema = input_schema #- '{properties,content,maxLength}' "  # noqa: S608 - constants
        f"WHERE id = '{MEMORY_ADD_ID}'")


def downgrade() -> None:
    _task_update_types('"string"')
    op.execute(
        "UPDATE tools SET description = replace(description, ' A null due_date, project_id, "  # noqa: S608 - constants
        f"category or description clears it.', '') WHERE id = '{TASK_UPDATE_ID}'")
    op.execute(
        "UPDATE tools SET input_schema = jsonb_set(input_schema, '{properties,content,maxLength}', "  # noqa: S608 - constants
        f"'4000'::jsonb) WHERE id = '{MEMORY_ADD_ID}'")
