"""persona_invitations: joining a persona takes the invitee's consent.

Any owner of a persona could add any account of the server to it, by username, e-mail
or id, at once: learning that an address has an account (and, through the members'
usernames, which one), and pushing personas into strangers' lists.  Now an owner who is
not a site administrator invites (``persona_invitations``), and the membership exists
once the invitee accepts, as for groups (migration 1140).  The second wall agrees: a
``persona_members`` row is inserted by a site administrator, or by the invitee while a
matching invitation (persona, user and role) is pending; owners no longer insert other
people's memberships, nor move one to another account or persona (a trigger keeps a
membership's ``persona_id`` and ``user_id``).  The same trigger now guards group
memberships: migration 1140 let a group's admins update a membership's ``user_id``,
which made someone a member without their invitation.

* ``persona_invitations``: visible to the invitee, the persona's owners and site
  administrators; written by the persona's owners (and site administrators); deleted by
  them and by the invitee (declining, accepting).  Deleting the persona or either
  account drops them (the inviter's: ``invited_by`` becomes NULL).
* ``roost_persona_invitation_names(ids)`` (SECURITY DEFINER): the persona's name and the
  inviter's username for the invitations among ``ids`` the caller may see (the invitee
  may not read the persona or the inviter before joining).  The invitee's username is
  not in it: an owner sees it only when the users policy already shows them that
  account (``roost.agents.personas``).

Revision ID: 1150
Revises: 1140
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1150"
down_revision: str | Sequence[str] | None = "1140"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INVITATION_NAMES = r"""
CREATE FUNCTION roost_persona_invitation_names(p_ids uuid[])
RETURNS TABLE (id uuid, persona_name text, invited_by_username text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT i.id, p.name::text, b.username::text
    FROM persona_invitations i
    JOIN personas p ON p.id = i.persona_id
    LEFT JOIN users b ON b.id = i.invited_by
   WHERE i.id = ANY (p_ids)
     AND (roost_is_admin() OR i.user_id = roost_current_user_id()
          OR roost_persona_role(i.persona_id) = 'owner')
$$;
"""

# One trigger function for both kinds of membership: TG_ARGV[0] names what the member
# belongs to ("persona", "group"), whose id is in the column "<it>_id".
KEEP_KEYS = r"""
CREATE FUNCTION roost_membership_keys() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, public AS $$
DECLARE
  container text := TG_ARGV[0];
BEGIN
  IF to_jsonb(NEW) ->> (container || '_id') IS DISTINCT FROM to_jsonb(OLD) ->> (container || '_id')
     OR NEW.user_id IS DISTINCT FROM OLD.user_id
  THEN
    RAISE EXCEPTION 'a % membership keeps its % and its user: remove it and invite',
      container, container USING ERRCODE = '42501';
  END IF;
  RETURN NEW;
END $$;
"""

_INVITED = """EXISTS (SELECT 1 FROM persona_invitations i
                        WHERE i.persona_id = persona_members.persona_id
                          AND i.user_id = persona_members.user_id
                          AND i.role = persona_members.role)"""

MEMBER_INSERT_AFTER = f"""
CREATE POLICY persona_members_insert ON persona_members FOR INSERT
  WITH CHECK (roost_is_admin()
              OR (user_id = roost_current_user_id() AND {_INVITED}))"""

# As 0600 wrote it (the sixth of its policies).
MEMBER_INSERT_BEFORE = """
CREATE POLICY persona_members_insert_5 ON persona_members FOR INSERT
  WITH CHECK (roost_is_admin() OR roost_persona_role(persona_id) = 'owner')"""

_OWNER = "roost_is_admin() OR roost_persona_role(persona_id) = 'owner'"
INVITATION_POLICIES = (
    f"""CREATE POLICY persona_invitations_select ON persona_invitations FOR SELECT
          USING ({_OWNER} OR user_id = roost_current_user_id())""",
    f"""CREATE POLICY persona_invitations_insert ON persona_invitations FOR INSERT
          WITH CHECK ({_OWNER})""",
    f"""CREATE POLICY persona_invitations_update ON persona_invitations FOR UPDATE
          USING ({_OWNER}) WITH CHECK ({_OWNER})""",
    f"""CREATE POLICY persona_invitations_delete ON persona_invitations FOR DELETE
          USING ({_OWNER} OR user_id = roost_current_user_id())""",
)


def upgrade() -> None:
    op.create_table(
        "persona_invitations",
        sa.Column("persona_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("role", sa.String(length=50), server_default=sa.text("'editor'"),
                  nullable=False),
        sa.Column("invited_by", sa.UUID(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("role IN ('owner', 'editor', 'viewer')",
                           name=op.f("ck_persona_invitations_role")),
        sa.ForeignKeyConstraint(["persona_id"], ["personas.id"],
                                name=op.f("fk_persona_invitations_persona_id_personas"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["invited_by"], ["users.id"],
                                name=op.f("fk_persona_invitations_invited_by_users"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_persona_invitations_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_persona_invitations")),
        sa.UniqueConstraint("persona_id", "user_id", name="uq_persona_invitations_persona_user"),
    )
    op.create_index("ix_persona_invitations_user_id", "persona_invitations", ["user_id"])
    op.create_index("ix_persona_invitations_invited_by", "persona_invitations", ["invited_by"])
    op.execute("ALTER TABLE persona_invitations ENABLE ROW LEVEL SECURITY")
    for statement in INVITATION_POLICIES:
        op.execute(statement)
    # The application role's grants on new tables come from 0200's default privileges.
    op.execute("DROP POLICY persona_members_insert_5 ON persona_members")
    op.execute(MEMBER_INSERT_AFTER)
    op.execute(KEEP_KEYS)
    for table, container in (("persona_members", "persona"), ("user_group_memberships", "group")):
        op.execute(f"CREATE TRIGGER {table}_keep_keys BEFORE UPDATE ON {table} "
                   f"FOR EACH ROW EXECUTE FUNCTION roost_membership_keys('{container}')")
    op.execute(INVITATION_NAMES)


def downgrade() -> None:
    op.execute("DROP FUNCTION roost_persona_invitation_names(uuid[])")
    for table in ("persona_members", "user_group_memberships"):
        op.execute(f"DROP TRIGGER {table}_keep_keys ON {table}")
    op.execute("DROP FUNCTION roost_membership_keys()")
    op.execute("DROP POLICY persona_members_insert ON persona_members")
    op.execute(MEMBER_INSERT_BEFORE)
    op.execute("DROP TABLE persona_invitations")  # its policies go with it
