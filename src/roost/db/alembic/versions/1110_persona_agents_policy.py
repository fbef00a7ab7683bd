"""persona_agents_policy: a persona's agent is the persona's, also for row-level security.

The ``agents`` policies (0600) let an agent's creator (``user_id``) read, change and
delete it whatever its persona: a member removed from the persona (or made a viewer)
kept reading the agent, its confidential system prompt included, as the persona's
owners went on changing it, and only the services' checks kept them from changing it.
Now an agent of a persona is read by the persona's members and changed by its owners
and editors, its creator included only while one of them; an agent of no persona stays
its creator's.  Public agents stay readable by everyone; administrators see all.

Revision ID: 1110
Revises: 1100
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1110"
down_revision: str | Sequence[str] | None = "1100"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_MEMBER = "roost_persona_role(persona_id) IS NOT NULL"
_EDITOR = "roost_persona_role(persona_id) IN ('owner', 'editor')"
_OWN = "(persona_id IS NULL AND user_id = roost_current_user_id())"

# command: (USING, WITH CHECK), after and before
_AFTER = {
    "SELECT": (f"{_OWN} OR is_public OR (persona_id IS NOT NULL AND {_MEMBER})", None),
    "UPDATE": (f"{_OWN} OR (persona_id IS NOT NULL AND {_EDITOR})",
               f"{_OWN} OR (persona_id IS NOT NULL AND {_EDITOR})"),
    "DELETE": (f"{_OWN} OR (persona_id IS NOT NULL AND {_EDITOR})", None),
}
_BEFORE = {
    "SELECT": (f"user_id = roost_current_user_id() OR is_public "
               f"OR (persona_id IS NOT NULL AND {_MEMBER})", None),
    "UPDATE": (f"user_id = roost_current_user_id() OR (persona_id IS NOT NULL AND {_EDITOR})",
               f"user_id = roost_current_user_id() OR (persona_id IS NOT NULL AND {_EDITOR})"),
    "DELETE": (f"user_id = roost_current_user_id() OR (persona_id IS NOT NULL AND {_EDITOR})",
               None),
}


def _replace(policies: dict[str, tuple[str, str | None]]) -> None:
    # The policies' names come from 0600's numbering: found by command, not spelled out.
    op.execute("""
DO $$
DECLARE p record;
BEGIN
  FOR p IN SELECT policyname FROM pg_policies
            WHERE schemaname = current_schema() AND tablename = 'agents'
              AND cmd IN ('SELECT', 'UPDATE', 'DELETE') LOOP
    EXECUTE format('DROP POLICY %I ON agents', p.policyname);
  END LOOP;
END $$""")
    for command, (using, check) in policies.items():
        sql = f"CREATE POLICY agents_{command.lower()} ON agents FOR {command}"
        sql += f" USING (roost_is_admin() OR {using})"
        if check is not None:
            sql += f" WITH CHECK (roost_is_admin() OR {check})"
        op.execute(sql)


def upgrade() -> None:
    _replace(_AFTER)


def downgrade() -> None:
    _replace(_BEFORE)
