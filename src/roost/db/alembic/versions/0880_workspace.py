"""workspace: projects and prioritised tasks; project_id foreign keys.

* ``projects`` (seed 001 with group sharing and dates): members of its group read it, the
  owner, administrators and the group's admins change it, only the owner (or an
  administrator) deletes it.
* ``tasks`` (seed 001 with parent/child and completed_at): owner-only; ``calculated_score``
  is set by a BEFORE INSERT OR UPDATE trigger (``roost_task_score``, the one formula,
  docs/workspace.md), ``completed_at`` by the same trigger.
* ``agents.project_id``, ``workflows.project_id``, ``documents.project_id`` and
  ``ingestion_runs.project_id`` get their foreign keys (ON DELETE SET NULL);
  ``chat_sessions`` gets a ``project_id``.
* The agents' built-in ``tasks_list``, ``task_add`` and ``task_update`` tools.

Revision ID: 0880
Revises: 0870
Create Date: 2026-12-02
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0880"
down_revision: str | Sequence[str] | None = "0870"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONB = postgresql.JSONB(astext_type=sa.Text())
OWNED = "roost_row_visible(user_id)"
# The owner, administrators, or an admin of the project's group.
EDITOR = ("(roost_row_visible(user_id) OR (group_id IS NOT NULL "
          "AND roost_group_role(group_id) = 'admin'))")

TASKS_LIST_ID = uuid.UUID("019ad9a0-0000-7000-8000-000000000901")
TASK_ADD_ID = uuid.UUID("019ad9a0-0000-7000-8000-000000000902")
TASK_UPDATE_ID = uuid.UUID("019ad9a0-0000-7000-8000-000000000903")

# The score (docs/workspace.md, "The score").  p_now is a parameter so the function is
# immutable and testable; the trigger passes now().
SCORE_FUNCTION = r"""
CREATE FUNCTION roost_task_score(
  p_status text, p_priority text, p_due timestamptz, p_completion integer,
  p_importance double precision, p_urgency double precision, p_complexity double precision,
  p_user double precision, p_now timestamptz) RETURNS double precision
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
  SELECT CASE WHEN p_status IN ('done', 'cancelled') THEN 0 ELSE round((
    p_user
    * (p_importance * CASE p_priority WHEN 'low' THEN 1 WHEN 'medium' THEN 2
                                      WHEN 'high' THEN 3 WHEN 'critical' THEN 4 ELSE 2 END
       + p_urgency * (1 + CASE
           WHEN p_due IS NULL THEN 0
           WHEN p_due <= p_now THEN 4
           WHEN p_due <= p_now + interval '1 day' THEN 3
           WHEN p_due <= p_now + interval '3 days' THEN 2
           WHEN p_due <= p_now + interval '7 days' THEN 1
           WHEN p_due <= p_now + interval '30 days' THEN 0.5
           ELSE 0 END))
    * (1 - least(greatest(p_completion, 0), 100) / 200.0)
    * CASE WHEN p_status = 'blocked' THEN 0.5 ELSE 1 END
    / ((1 + p_complexity) / 2)
  )::numeric, 4)::double precision END
$$;
"""

TRIGGER_FUNCTION = r"""
CREATE FUNCTION roost_tasks_derive() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.calculated_score := roost_task_score(
    NEW.status, NEW.priority, NEW.due_date, NEW.completion_percentage,
    NEW.importance_weight, NEW.urgency_weight, NEW.complexity_weight,
    NEW.user_priority_weight, now());
  IF NEW.status = 'done' THEN
    IF TG_OP = 'INSERT' OR OLD.status IS DISTINCT FROM 'done' OR NEW.completed_at IS NULL THEN
      NEW.completed_at := coalesce(
        CASE WHEN TG_OP = 'UPDATE' AND OLD.status = 'done' THEN OLD.completed_at END, now());
    END IF;
  ELSE
    NEW.completed_at := NULL;
  END IF;
  RETURN NEW;
END
$$;
"""

TRIGGER = """CREATE TRIGGER tasks_derive BEFORE INSERT OR UPDATE ON tasks
  FOR EACH ROW EXECUTE FUNCTION roost_tasks_derive()"""

POLICIES = (
    "CREATE POLICY projects_select ON projects FOR SELECT "
    "USING (roost_row_visible(user_id, group_id))",
    f"CREATE POLICY projects_insert ON projects FOR INSERT WITH CHECK ({OWNED})",
    f"CREATE POLICY projects_update ON projects FOR UPDATE USING {EDITOR} WITH CHECK {EDITOR}",
    f"CREATE POLICY projects_delete ON projects FOR DELETE USING ({OWNED})",
    f"CREATE POLICY tasks_owner ON tasks FOR ALL USING ({OWNED}) WITH CHECK ({OWNED})",
)

_TASK_PROPS = {
    "title": {"type": "string", "minLength": 1, "maxLength": 500},
    "description": {"type": "string", "maxLength": 20000},
    "status": {"type": "string", "enum": ["todo", "in_progress", "blocked", "done", "cancelled"]},
    "priority": {"type": "string", "enum": ["low", "medium", "high", "critical"]},
    "due_date": {"type": "string", "format": "date-time",
                 "description": "ISO 8601 with a UTC offset"},
    "project_id": {"type": "string", "format": "uuid"},
    "category": {"type": "string", "maxLength": 100},
    "completion_percentage": {"type": "integer", "minimum": 0, "maximum": 100},
    "importance_weight": {"type": "number", "minimum": 0, "maximum": 10},
    "urgency_weight": {"type": "number", "minimum": 0, "maximum": 10},
    "complexity_weight": {"type": "number", "minimum": 0, "maximum": 10},
}

TOOLS = [
    {
        "id": TASKS_LIST_ID, "kind": "builtin", "name": "tasks_list",
        "title": "List the user's tasks",
        "description": "The user's tasks, highest calculated score first (what to do next). "
                       "Filters: status, project_id, limit (default 20).",
        "category": "workspace", "code_type": "builtin", "is_builtin": True,
        "input_schema": {
            "type": "object", "additionalProperties": False,
            "properties": {
                "status": _TASK_PROPS["status"], "project_id": _TASK_PROPS["project_id"],
                "limit": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
            },
        },
        "annotations": {"readOnlyHint": True, "destructiveHint": False, "idempotentHint": True,
                        "openWorldHint": False},
    },
    {
        "id": TASK_ADD_ID, "kind": "builtin", "name": "task_add",
        "title": "Add a task",
        "description": "Add a task to the user's task board; its score is computed from its "
                       "priority, due date and weights.",
        "category": "workspace", "code_type": "builtin", "is_builtin": True,
        "input_schema": {"type": "object", "additionalProperties": False,
                         "required": ["title"], "properties": _TASK_PROPS},
        # Not idempotent: a resumed run would add the task twice.
        "annotations": {"readOnlyHint": False, "destructiveHint": False,
                        "idempotentHint": False, "openWorldHint": False},
    },
    {
        "id": TASK_UPDATE_ID, "kind": "builtin", "name": "task_update",
        "title": "Change a task",
        "description": "Change one of the user's tasks by id (from tasks_list): status, "
                       "priority, due date, progress, weights...",
        "category": "workspace", "code_type": "builtin", "is_builtin": True,
        "input_schema": {"type": "object", "additionalProperties": False,
                         "required": ["id"],
                         "properties": {"id": {"type": "string", "format": "uuid"},
                                        **_TASK_PROPS}},
        "annotations": {"readOnlyHint": False, "destructiveHint": False,
                        "idempotentHint": True, "openWorldHint": False},
    },
]

# Existing project_id columns that get their foreign key now that projects exist.
ATTACHED = ("agents", "workflows", "documents", "ingestion_runs")


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("group_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("project_type", sa.String(length=64), nullable=True),
        sa.Column("programming_language", sa.String(length=64), nullable=True),
        sa.Column("framework", sa.String(length=128), nullable=True),
        sa.Column("repository_url", sa.String(length=2048), nullable=True),
        sa.Column("local_path", sa.String(length=4096), nullable=True),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'active'"),
                  nullable=False),
        sa.Column("start_date", sa.Date(), nullable=True),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("project_metadata", JSONB, nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("status IN ('active', 'paused', 'completed', 'archived')",
                           name=op.f("ck_projects_status")),
        sa.CheckConstraint("length(btrim(name)) > 0", name=op.f("ck_projects_name_not_blank")),
        sa.CheckConstraint("end_date IS NULL OR start_date IS NULL OR end_date >= start_date",
                           name=op.f("ck_projects_dates_ordered")),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"],
                                name=op.f("fk_projects_group_id_groups"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_projects_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projects")),
    )
    op.create_index("ix_projects_user_id_status", "projects", ["user_id", "status"])
    op.create_index("ix_projects_group_id", "projects", ["group_id"])
    op.create_table(
        "tasks",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("project_id", sa.UUID(), nullable=True),
        sa.Column("parent_id", sa.UUID(), nullable=True),
        sa.Column("title", sa.String(length=500), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'todo'"),
                  nullable=False),
        sa.Column("priority", sa.String(length=16), server_default=sa.text("'medium'"),
                  nullable=False),
        sa.Column("category", sa.String(length=100), nullable=True),
        sa.Column("due_date", sa.DateTime(timezone=True), nullable=True),
        sa.Column("estimated_hours", sa.Float(), nullable=True),
        sa.Column("actual_hours", sa.Float(), nullable=True),
        sa.Column("completion_percentage", sa.Integer(), server_default=sa.text("0"),
                  nullable=False),
        sa.Column("semantic_keywords", JSONB, nullable=True),
        sa.Column("semantic_embedding_id", sa.String(length=255), nullable=True),
        sa.Column("semantic_category", sa.String(length=100), nullable=True),
        sa.Column("semantic_tags", JSONB, nullable=True),
        sa.Column("semantic_summary", sa.Text(), nullable=True),
        sa.Column("importance_weight", sa.Float(), server_default=sa.text("1.0"), nullable=False),
        sa.Column("urgency_weight", sa.Float(), server_default=sa.text("1.0"), nullable=False),
        sa.Column("complexity_weight", sa.Float(), server_default=sa.text("1.0"), nullable=False),
        sa.Column("user_priority_weight", sa.Float(), server_default=sa.text("1.0"),
                  nullable=False),
        sa.Column("calculated_score", sa.Float(), server_default=sa.text("0"), nullable=False),
        sa.Column("task_type", sa.String(length=50), server_default=sa.text("'general'"),
                  nullable=False),
        sa.Column("programming_language", sa.String(length=64), nullable=True),
        sa.Column("difficulty_level", sa.String(length=32), nullable=True),
        sa.Column("code_context", JSONB, nullable=True),
        sa.Column("repository_branch", sa.String(length=255), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("status IN ('todo', 'in_progress', 'blocked', 'done', 'cancelled')",
                           name=op.f("ck_tasks_status")),
        sa.CheckConstraint("priority IN ('low', 'medium', 'high', 'critical')",
                           name=op.f("ck_tasks_priority")),
        sa.CheckConstraint("length(btrim(title)) > 0", name=op.f("ck_tasks_title_not_blank")),
        sa.CheckConstraint("completion_percentage BETWEEN 0 AND 100",
                           name=op.f("ck_tasks_completion_range")),
        sa.CheckConstraint(
            "importance_weight BETWEEN 0 AND 10.0 AND urgency_weight BETWEEN 0 AND 10.0 AND "
            "complexity_weight BETWEEN 0 AND 10.0 AND user_priority_weight BETWEEN 0 AND 10.0",
            name=op.f("ck_tasks_weights_range")),
        sa.CheckConstraint("estimated_hours IS NULL OR estimated_hours >= 0",
                           name=op.f("ck_tasks_estimated_hours_positive")),
        sa.CheckConstraint("actual_hours IS NULL OR actual_hours >= 0",
                           name=op.f("ck_tasks_actual_hours_positive")),
        sa.CheckConstraint("parent_id IS NULL OR parent_id <> id",
                           name=op.f("ck_tasks_not_own_parent")),
        sa.ForeignKeyConstraint(["parent_id"], ["tasks.id"], name=op.f("fk_tasks_parent_id_tasks"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"],
                                name=op.f("fk_tasks_project_id_projects"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_tasks_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    op.create_index("ix_tasks_user_score", "tasks", ["user_id", "calculated_score", "id"])
    op.create_index("ix_tasks_project_id", "tasks", ["project_id"])
    op.create_index("ix_tasks_parent_id", "tasks", ["parent_id"])
    op.create_index("ix_tasks_open_due", "tasks", ["due_date"], postgresql_where=sa.text(
        "status NOT IN ('done', 'cancelled') AND due_date IS NOT NULL"))
    op.execute(SCORE_FUNCTION)
    op.execute(TRIGGER_FUNCTION)
    op.execute(TRIGGER)
    for table in ("projects", "tasks"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for policy in POLICIES:
        op.execute(policy)

    # Things a project groups: the column exists (or is added) and gets its foreign key.
    # No project existed before this revision, so any id already stored points nowhere.
    for table in ATTACHED:
        op.execute(f"UPDATE {table} SET project_id = NULL "  # noqa: S608 - constant names
                   "WHERE project_id IS NOT NULL")
        op.create_foreign_key(op.f(f"fk_{table}_project_id_projects"), table, "projects",
                              ["project_id"], ["id"], ondelete="SET NULL")
    op.create_index("ix_documents_project_id", "documents", ["project_id"])
    op.add_column("chat_sessions", sa.Column("project_id", sa.UUID(), nullable=True))
    op.create_foreign_key(op.f("fk_chat_sessions_project_id_projects"), "chat_sessions",
                          "projects", ["project_id"], ["id"], ondelete="SET NULL")
    op.create_index("ix_chat_sessions_project_id", "chat_sessions", ["project_id"])

    tools = sa.table(
        "tools", sa.column("id", sa.UUID()), sa.column("kind", sa.String()),
        sa.column("name", sa.String()), sa.column("title", sa.String()),
        sa.column("description", sa.Text()), sa.column("category", sa.String()),
        sa.column("input_schema", postgresql.JSONB()), sa.column("annotations", postgresql.JSONB()),
        sa.column("code_type", sa.String()), sa.column("is_builtin", sa.Boolean()),
    )
    op.bulk_insert(tools, TOOLS)


def downgrade() -> None:
    tools = sa.table("tools", sa.column("id", sa.UUID()))
    op.execute(tools.delete().where(tools.c.id.in_([TASKS_LIST_ID, TASK_ADD_ID,
                                                    TASK_UPDATE_ID])))
    op.drop_index("ix_chat_sessions_project_id", table_name="chat_sessions")
    op.drop_constraint(op.f("fk_chat_sessions_project_id_projects"), "chat_sessions",
                       type_="foreignkey")
    op.drop_column("chat_sessions", "project_id")
    op.drop_index("ix_documents_project_id", table_name="documents")
    for table in ATTACHED:
        op.drop_constraint(op.f(f"fk_{table}_project_id_projects"), table, type_="foreignkey")
    op.drop_table("tasks")
    op.drop_table("projects")
    op.execute("DROP FUNCTION roost_tasks_derive()")
    op.execute("DROP FUNCTION roost_task_score(text, text, timestamptz, integer, double precision, "
               "double precision, double precision, double precision, timestamptz)")
