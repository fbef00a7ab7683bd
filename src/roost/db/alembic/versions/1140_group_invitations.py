"""group_invitations: joining a group takes the invitee's consent; users are looked up by
id without a lookalike username taking their place.

A group carries authority over its members (its ``chat.system`` prompt overrides theirs,
what is shared with it enters their searches), yet any group admin could add anyone.
Now a group admin who is not a site administrator invites (``group_invitations``), and
the membership exists once the invitee accepts.  The second wall agrees: a membership
row is inserted by a site administrator, by the group's creator for themself (the first
membership of a new group), or by the invitee while a matching invitation is pending;
group admins no longer insert other people's memberships.

* ``group_invitations``: visible to the invitee, the group's admins and site
  administrators; written by the group's admins (and site administrators); deleted by
  them and by the invitee (declining, accepting).
* ``roost_group_invitation_names(ids)`` (SECURITY DEFINER): the group's name, the
  invitee's and the inviter's usernames of the invitations among ``ids`` the caller may
  see (the invitee may not read the group or the inviter yet, a group admin not the
  invitee's account).
* ``roost_lock_group(group)`` (SECURITY DEFINER): ``SELECT ... FOR UPDATE`` of the group
  row for its members and site administrators, so every change that can leave a group
  without an admin (demoting, leaving, removing, deleting an account) is serialised per
  group, a plain member's leaving included (the groups UPDATE policy, which a row lock
  needs, admits only the group's admins).
* ``roost_lookup_user_id(text)``: a text that is a UUID matches only the account with
  that id.  It matched ``username = x OR email = x OR id::text = x`` and returned the
  first row found, so an account whose username was spelled like another's id could be
  added in its place.  (Usernames shaped like a UUID are refused from now on:
  ``roost.identity.common.normalize_username``.)

Revision ID: 1140
Revises: 1130
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1140"
down_revision: str | Sequence[str] | None = "1130"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The regular expression is what PostgreSQL reads as a uuid: 32 hex digits, a hyphen
# allowed after any group of four, the whole optionally in braces (pg_input_is_valid
# would say it too, from PostgreSQL 16 on).
LOOKUP_AFTER = r"""
CREATE OR REPLACE FUNCTION roost_lookup_user_id(p_login text) RETURNS uuid
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
DECLARE
  v text := lower(btrim(p_login));
BEGIN
  IF v ~ '^(\{[0-9a-f]{4}(-?[0-9a-f]{4}){7}\}|[0-9a-f]{4}(-?[0-9a-f]{4}){7})$' THEN
    RETURN (SELECT id FROM users WHERE id = v::uuid AND status = 'active' AND is_active);
  END IF;
  RETURN (SELECT id FROM users
           WHERE (username = v OR email = v) AND status = 'active' AND is_active
           ORDER BY username = v DESC LIMIT 1);
END $$;
"""

# As 0200 wrote it.
LOOKUP_BEFORE = r"""
CREATE OR REPLACE FUNCTION roost_lookup_user_id(p_login text) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT id FROM users
   WHERE (username = lower(p_login) OR email = lower(p_login) OR id::text = lower(p_login))
     AND status = 'active' AND is_active
$$;
"""

INVITATION_NAMES = r"""
CREATE FUNCTION roost_group_invitation_names(p_ids uuid[])
RETURNS TABLE (id uuid, group_name text, username text, invited_by_username text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT i.id, g.name::text, u.username::text, b.username::text
    FROM group_invitations i
    JOIN groups g ON g.id = i.group_id
    JOIN users u ON u.id = i.user_id
    LEFT JOIN users b ON b.id = i.invited_by
   WHERE i.id = ANY (p_ids)
     AND (roost_is_admin() OR i.user_id = roost_current_user_id()
          OR roost_group_role(i.group_id) = 'admin')
$$;
"""

LOCK_GROUP = r"""
CREATE FUNCTION roost_lock_group(p_group uuid) RETURNS boolean
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT true FROM groups
   WHERE id = p_group AND (roost_is_admin() OR roost_group_role(p_group) IS NOT NULL)
     FOR UPDATE
$$;
"""

_INVITED = """EXISTS (SELECT 1 FROM group_invitations i
                        WHERE i.group_id = user_group_memberships.group_id
                          AND i.user_id = user_group_memberships.user_id
                          AND i.role = user_group_memberships.role)"""

MEMBERSHIP_INSERT_AFTER = f"""
CREATE POLICY user_group_memberships_insert ON user_group_memberships FOR INSERT
  WITH CHECK (roost_is_admin()
              OR (user_id = roost_current_user_id()
                  AND (roost_group_creator(group_id) = roost_current_user_id()
                       OR {_INVITED})))"""

MEMBERSHIP_INSERT_BEFORE = """
CREATE POLICY user_group_memberships_insert ON user_group_memberships FOR INSERT
  WITH CHECK (roost_is_admin() OR roost_group_role(group_id) = 'admin'
              OR roost_group_creator(group_id) = roost_current_user_id())"""

_GROUP_ADMIN = "roost_is_admin() OR roost_group_role(group_id) = 'admin'"
INVITATION_POLICIES = (
    f"""CREATE POLICY group_invitations_select ON group_invitations FOR SELECT
          USING ({_GROUP_ADMIN} OR user_id = roost_current_user_id())""",
    f"""CREATE POLICY group_invitations_insert ON group_invitations FOR INSERT
          WITH CHECK ({_GROUP_ADMIN})""",
    f"""CREATE POLICY group_invitations_update ON group_invitations FOR UPDATE
          USING ({_GROUP_ADMIN}) WITH CHECK ({_GROUP_ADMIN})""",
    f"""CREATE POLICY group_invitations_delete ON group_invitations FOR DELETE
          USING ({_GROUP_ADMIN} OR user_id = roost_current_user_id())""",
)


def upgrade() -> None:
    op.create_table(
        "group_invitations",
        sa.Column("group_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("role", sa.String(length=16), server_default=sa.text("'member'"), nullable=False),
        sa.Column("invited_by", sa.UUID(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("role IN ('member', 'admin')", name=op.f("ck_group_invitations_role")),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"],
                                name=op.f("fk_group_invitations_group_id_groups"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["invited_by"], ["users.id"],
                                name=op.f("fk_group_invitations_invited_by_users"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_group_invitations_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_group_invitations")),
        sa.UniqueConstraint("group_id", "user_id", name="uq_group_invitations_group_user"),
    )
    op.create_index("ix_group_invitations_user_id", "group_invitations", ["user_id"])
    op.create_index("ix_group_invitations_invited_by", "group_invitations", ["invited_by"])
    op.execute("ALTER TABLE group_invitations ENABLE ROW LEVEL SECURITY")
    for statement in INVITATION_POLICIES:
        op.execute(statement)
    # The application role's grants on new tables come from 0200's default privileges.
    op.execute("DROP POLICY user_group_memberships_insert ON user_group_memberships")
    op.execute(MEMBERSHIP_INSERT_AFTER)
    op.execute(INVITATION_NAMES)
    op.execute(LOCK_GROUP)
    op.execute(LOOKUP_AFTER)


def downgrade() -> None:
    op.execute(LOOKUP_BEFORE)
    op.execute("DROP FUNCTION roost_lock_group(uuid)")
    op.execute("DROP FUNCTION roost_group_invitation_names(uuid[])")
    op.execute("DROP POLICY user_group_memberships_insert ON user_group_memberships")
    op.execute(MEMBERSHIP_INSERT_BEFORE)
    op.execute("DROP TABLE group_invitations")  # its policies go with it
