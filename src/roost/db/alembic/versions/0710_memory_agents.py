"""Memory for agents: the ``memory_search`` and ``memory_add`` built-in tools (run by
roost.agents.memorytools inside agent runs) and the ``memory_recall`` run step (the
memories recalled into a run's context).

Revision ID: 0710
Revises: 0700
Create Date: 2026-12-01
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0710"
down_revision: str | Sequence[str] | None = "0700"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MEMORY_SEARCH_ID = uuid.UUID("019ad9a0-0000-7000-8000-000000000701")
MEMORY_ADD_ID = uuid.UUID("019ad9a0-0000-7000-8000-000000000702")
OLD_STEP_TYPES = "step_type IN ('llm_call', 'tool_call', 'rag_retrieval', 'error')"
NEW_STEP_TYPES = "step_type IN ('llm_call', 'tool_call', 'rag_retrieval', 'memory_recall', 'error')"

TOOLS = [
    {
        "id": MEMORY_SEARCH_ID, "kind": "builtin", "name": "memory_search",
        "title": "Search your memory",
        "description": "Search what you remember about the user (facts, preferences, events "
                       "from earlier conversations and runs), best matches first. query: what "
                       "to look for; k: how many (default 5).",
        "category": "memory", "code_type": "builtin", "is_builtin": True,
        "input_schema": {
            "type": "object", "additionalProperties": False, "required": ["query"],
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 2000,
                          "description": "What to look for"},
                "k": {"type": "integer", "minimum": 1, "maximum": 20, "default": 5,
                      "description": "How many memories"},
            },
        },
        "annotations": {"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True,
                        "openWorldHint": False},
    },
    {
        "id": MEMORY_ADD_ID, "kind": "builtin", "name": "memory_add",
        "title": "Remember a fact",
        "description": "Remember one fact about the user for later conversations. content: "
                       "the fact in one sentence; memory_type: fact, preference, event, "
                       "relationship, skill, goal or other.",
        "category": "memory", "code_type": "builtin", "is_builtin": True,
        "input_schema": {
            "type": "object", "additionalProperties": False, "required": ["content"],
            "properties": {
                "content": {"type": "string", "minLength": 1, "maxLength": 4000,
                            "description": "The fact, in one sentence"},
                "memory_type": {"type": "string", "default": "fact",
                                "enum": ["fact", "preference", "event", "relationship",
                                         "skill", "goal", "other"]},
                "confidence": {"type": "number", "minimum": 0, "maximum": 1, "default": 0.8},
            },
        },
        # Not idempotent: a run resumed after a crash would remember the fact twice (the
        # reconciliation of learned facts is what merges duplicates).
        "annotations": {"readOnlyHint": False, "destructiveHint": False,
                        "idempotentHint": False, "openWorldHint": False},
    },
]


def upgrade() -> None:
    tools = sa.table(
        "tools", sa.column("id", sa.UUID()), sa.column("kind", sa.String()),
        sa.column("name", sa.String()), sa.column("title", sa.String()),
        sa.column("description", sa.Text()), sa.column("category", sa.String()),
        sa.column("input_schema", postgresql.JSONB()), sa.column("annotations", postgresql.JSONB()),
        sa.column("code_type", sa.String()), sa.column("is_builtin", sa.Boolean()),
    )
    op.bulk_insert(tools, TOOLS)
    op.drop_constraint(op.f("ck_run_steps_step_type"), "run_steps", type_="check")
    op.create_check_constraint(op.f("ck_run_steps_step_type"), "run_steps", NEW_STEP_TYPES)


def downgrade() -> None:
    op.execute("DELETE FROM run_steps WHERE step_type = 'memory_recall'")
    op.drop_constraint(op.f("ck_run_steps_step_type"), "run_steps", type_="check")
    op.create_check_constraint(op.f("ck_run_steps_step_type"), "run_steps", OLD_STEP_TYPES)
    tools = sa.table("tools", sa.column("id", sa.UUID()))
    op.execute(tools.delete().where(tools.c.id.in_([MEMORY_SEARCH_ID, MEMORY_ADD_ID])))
