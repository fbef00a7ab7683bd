"""Identity: users, sessions, API keys, 2FA, passkeys, devices, OAuth tokens, profiles,
groups; the application role and the row-level security helpers every domain uses.

Revision ID: 0200
Revises: 0100
Create Date: 2026-11-25

Row-level security (see docs/architecture.md, "Tenancy and row-level security"):

* ``roost_app`` is a NOLOGIN role without BYPASSRLS that owns nothing.  Transactions
  acting for a principal ``SET LOCAL ROLE roost_app`` (``roost.identity.tenancy``), so
  policies apply; the schema owner (migrations, workers, login) is not restricted.
* ``roost_current_user_id()``, ``roost_is_admin()``, ``roost_user_group_ids()`` read the
  per-transaction settings; ``roost_row_visible(owner, group)`` combines them and is
  what other domains' policies call.
* ``roost_group_role()``, ``roost_group_creator()`` and ``roost_lookup_user_id()`` are
  SECURITY DEFINER: they read memberships/groups/users without RLS, which breaks the
  recursion between the groups and memberships policies and lets a group admin add a
  member by name.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0200"
down_revision: str | Sequence[str] | None = "0100"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APP_ROLE = "roost_app"

# Created when the migrating role may; a warning otherwise (then set ROOST_DB_APP_ROLE to
# a role the operator created, or "" to run without the second wall).
CREATE_APP_ROLE = r"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'roost_app') THEN
    BEGIN
      CREATE ROLE roost_app NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    EXCEPTION
      WHEN duplicate_object THEN NULL;  -- another database of this cluster migrated first
      WHEN insufficient_privilege THEN
        RAISE WARNING 'cannot create role roost_app: row-level security needs it; '
                      'create it (NOLOGIN NOBYPASSRLS) and grant it to %', current_user;
        RETURN;
    END;
  END IF;
  -- SET ROLE needs membership unless we are a superuser.
  IF NOT pg_has_role(current_user, 'roost_app', 'MEMBER') THEN
    BEGIN
      EXECUTE format('GRANT roost_app TO %I', current_user);
    EXCEPTION WHEN insufficient_privilege THEN
      RAISE WARNING 'cannot grant roost_app to %: grant it so the app can SET ROLE', current_user;
    END;
  END IF;
END $$;
"""

GRANTS = r"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'roost_app') THEN
    RETURN;
  END IF;
  GRANT USAGE ON SCHEMA public TO roost_app;
  GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO roost_app;
  GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO roost_app;
  REVOKE ALL ON alembic_version FROM roost_app;
  -- Tables and sequences later migrations create (as this same owner) get the grants too.
  ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO roost_app;
  ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO roost_app;
END $$;
"""

REVOKES = r"""
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'roost_app') THEN
    RETURN;
  END IF;
  ALTER DEFAULT PRIVILEGES IN SCHEMA public
    REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM roost_app;
  ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT, UPDATE ON SEQUENCES FROM roost_app;
  REVOKE SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public FROM roost_app;
  REVOKE USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public FROM roost_app;
  REVOKE USAGE ON SCHEMA public FROM roost_app;
END $$;
"""

# Plain SQL functions of settings: inlined into policies, evaluated cheaply per row.
HELPER_FUNCTIONS = (
    r"""
CREATE FUNCTION roost_current_user_id() RETURNS uuid
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT nullif(current_setting('roost.user_id', true), '')::uuid
$$;
""",
    r"""
CREATE FUNCTION roost_is_admin() RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(current_setting('roost.is_admin', true), '') = 'true'
$$;
""",
    r"""
CREATE FUNCTION roost_user_group_ids() RETURNS uuid[]
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT coalesce(
    string_to_array(nullif(current_setting('roost.group_ids', true), ''), ',')::uuid[],
    '{}'::uuid[])
$$;
""",
    r"""
CREATE FUNCTION roost_row_visible(p_owner uuid, p_group uuid DEFAULT NULL) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE AS $$
  SELECT roost_is_admin()
      OR (p_owner IS NOT NULL AND p_owner = roost_current_user_id())
      OR (p_group IS NOT NULL AND p_group = ANY (roost_user_group_ids()))
$$;
""",
    r"""
CREATE FUNCTION roost_group_role(p_group uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT role FROM user_group_memberships
   WHERE group_id = p_group AND user_id = roost_current_user_id()
$$;
""",
    r"""
CREATE FUNCTION roost_group_creator(p_group uuid) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT created_by FROM groups WHERE id = p_group
$$;
""",
    r"""
CREATE FUNCTION roost_lookup_user_id(p_login text) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT id FROM users
   WHERE (username = lower(p_login) OR email = lower(p_login) OR id::text = lower(p_login))
     AND status = 'active' AND is_active
$$;
""",
    r"""
CREATE FUNCTION roost_users_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  -- A principal who is not an administrator may edit their own settings, never their
  -- privileges or standing (the service refuses it too; this is the second wall).
  IF roost_current_user_id() IS NOT NULL AND NOT roost_is_admin() AND (
       NEW.role IS DISTINCT FROM OLD.role OR NEW.status IS DISTINCT FROM OLD.status
    OR NEW.is_root IS DISTINCT FROM OLD.is_root
    OR NEW.is_superuser IS DISTINCT FROM OLD.is_superuser
    OR NEW.is_active IS DISTINCT FROM OLD.is_active
    OR NEW.is_verified IS DISTINCT FROM OLD.is_verified
    OR NEW.tier IS DISTINCT FROM OLD.tier) THEN
    RAISE EXCEPTION 'only an administrator may change role, status, flags or tier'
      USING ERRCODE = 'insufficient_privilege';
  END IF;
  RETURN NEW;
END $$;
""",
    r"""
CREATE TRIGGER users_guard BEFORE UPDATE ON users
  FOR EACH ROW EXECUTE FUNCTION roost_users_guard();
""",
)

DROP_FUNCTIONS = (
    "roost_users_guard()",
    "roost_lookup_user_id(text)",
    "roost_group_creator(uuid)",
    "roost_group_role(uuid)",
    "roost_row_visible(uuid, uuid)",
    "roost_user_group_ids()",
    "roost_is_admin()",
    "roost_current_user_id()",
)

# Tables with a user_id owner column: the owner and administrators, nobody else.
OWNER_TABLES = (
    "user_profiles",
    "user_two_factor_auth",
    "passkey_credentials",
    "registered_devices",
    "user_oauth_tokens",
    "sessions",
    "api_keys",
    "auth_challenges",
)

POLICIES = (
    *(
        f"CREATE POLICY {t}_owner ON {t} USING (roost_row_visible(user_id)) "
        f"WITH CHECK (roost_row_visible(user_id))"
        for t in OWNER_TABLES
    ),
    # users: yourself, people who share a group with you, and administrators.
    """CREATE POLICY users_select ON users FOR SELECT USING (
         roost_is_admin() OR id = roost_current_user_id()
         OR EXISTS (SELECT 1 FROM user_group_memberships m
                     WHERE m.user_id = users.id AND m.group_id = ANY (roost_user_group_ids())))""",
    """CREATE POLICY users_update ON users FOR UPDATE
         USING (roost_is_admin() OR id = roost_current_user_id())
         WITH CHECK (roost_is_admin() OR id = roost_current_user_id())""",
    "CREATE POLICY users_insert ON users FOR INSERT WITH CHECK (roost_is_admin())",
    "CREATE POLICY users_delete ON users FOR DELETE USING (roost_is_admin())",
    # groups: members see them; the creator and group admins manage them.
    """CREATE POLICY groups_select ON groups FOR SELECT USING (
         roost_is_admin() OR id = ANY (roost_user_group_ids())
         OR created_by = roost_current_user_id())""",
    """CREATE POLICY groups_insert ON groups FOR INSERT WITH CHECK (
         roost_is_admin() OR (created_by IS NOT NULL AND created_by = roost_current_user_id()))""",
    """CREATE POLICY groups_update ON groups FOR UPDATE
         USING (roost_is_admin() OR created_by = roost_current_user_id()
                OR roost_group_role(id) = 'admin')
         WITH CHECK (roost_is_admin() OR created_by = roost_current_user_id()
                     OR roost_group_role(id) = 'admin')""",
    """CREATE POLICY groups_delete ON groups FOR DELETE USING (
         roost_is_admin() OR created_by = roost_current_user_id()
         OR roost_group_role(id) = 'admin')""",
    # memberships: your own and your groups' are visible; group admins (and the group's
    # creator, for the first membership) manage them; anyone may leave a group.
    """CREATE POLICY user_group_memberships_select ON user_group_memberships FOR SELECT USING (
         roost_is_admin() OR user_id = roost_current_user_id()
         OR group_id = ANY (roost_user_group_ids()))""",
    """CREATE POLICY user_group_memberships_insert ON user_group_memberships FOR INSERT
         WITH CHECK (roost_is_admin() OR roost_group_role(group_id) = 'admin'
                     OR roost_group_creator(group_id) = roost_current_user_id())""",
    """CREATE POLICY user_group_memberships_update ON user_group_memberships FOR UPDATE
         USING (roost_is_admin() OR roost_group_role(group_id) = 'admin'
                OR roost_group_creator(group_id) = roost_current_user_id())
         WITH CHECK (roost_is_admin() OR roost_group_role(group_id) = 'admin'
                     OR roost_group_creator(group_id) = roost_current_user_id())""",
    """CREATE POLICY user_group_memberships_delete ON user_group_memberships FOR DELETE
         USING (roost_is_admin() OR user_id = roost_current_user_id()
                OR roost_group_role(group_id) = 'admin'
                OR roost_group_creator(group_id) = roost_current_user_id())""",
)

RLS_TABLES = (*OWNER_TABLES, "users", "groups", "user_group_memberships")


def upgrade() -> None:
    op.create_table(
        "auth_throttle",
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("failures", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("window_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_auth_throttle")),
    )
    op.create_index(
        "ix_auth_throttle_window_started_at", "auth_throttle", ["window_started_at"], unique=False
    )
    op.create_table(
        "users",
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("email", sa.String(length=255), nullable=False),
        sa.Column("hashed_password", sa.String(length=255), nullable=True),
        sa.Column("full_name", sa.String(length=255), nullable=True),
        sa.Column("avatar_url", sa.String(length=500), nullable=True),
        sa.Column("role", sa.String(length=16), server_default=sa.text("'user'"), nullable=False),
        sa.Column(
            "status", sa.String(length=32), server_default=sa.text("'pending_approval'"), nullable=False
        ),
        sa.Column("is_root", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_superuser", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_verified", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("tier", sa.String(length=16), server_default=sa.text("'free'"), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("theme", sa.String(length=32), server_default=sa.text("'dark'"), nullable=False),
        sa.Column("notifications_enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("timezone", sa.String(length=64), server_default=sa.text("'UTC'"), nullable=False),
        sa.Column(
            "model_preferences",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("calendar_event_weights", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("agent_settings", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("personal_goals", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("work_style_preferences", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("productivity_patterns", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("interview_insights", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("project_preferences", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("default_code_style", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("git_integrations", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "web_search_provider", sa.String(length=32), server_default=sa.text("'disabled'"), nullable=False
        ),
        sa.Column("web_search_api_key_encrypted", sa.Text(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("role IN ('admin', 'user')", name=op.f("ck_users_role")),
        sa.CheckConstraint(
            "status IN ('pending_approval', 'active', 'suspended')", name=op.f("ck_users_status")
        ),
        sa.CheckConstraint("tier IN ('free', 'pro', 'enterprise')", name=op.f("ck_users_tier")),
        sa.CheckConstraint(
            "web_search_provider IN ('disabled', 'tavily', 'serpapi')",
            name=op.f("ck_users_web_search_provider"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name="uq_users_email"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_index("ix_users_role", "users", ["role"], unique=False)
    op.create_index("ix_users_status", "users", ["status"], unique=False)
    op.create_index(
        "uq_users_is_root", "users", ["is_root"], unique=True, postgresql_where=sa.text("is_root")
    )
    op.create_table(
        "api_keys",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("prefix", sa.String(length=8), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_api_keys_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"], unique=False)
    op.create_table(
        "auth_challenges",
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("purpose", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=True),
        sa.Column("challenge", sa.LargeBinary(), nullable=True),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "purpose IN ('mfa_login', 'passkey_register', 'passkey_login')",
            name=op.f("ck_auth_challenges_purpose"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_auth_challenges_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_challenges")),
        sa.UniqueConstraint("token_hash", name="uq_auth_challenges_token_hash"),
    )
    op.create_index("ix_auth_challenges_expires_at", "auth_challenges", ["expires_at"], unique=False)
    op.create_index("ix_auth_challenges_user_id", "auth_challenges", ["user_id"], unique=False)
    op.create_table(
        "groups",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_groups_created_by_users"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("name", name="uq_groups_name"),
    )
    op.create_index("ix_groups_created_at", "groups", ["created_at"], unique=False)
    op.create_table(
        "passkey_credentials",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("credential_id", sa.String(length=1400), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sign_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("aaguid", sa.String(length=36), nullable=True),
        sa.Column("device_type", sa.String(length=32), nullable=True),
        sa.Column("backed_up", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("credential_name", sa.String(length=100), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_passkey_credentials_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_passkey_credentials")),
        sa.UniqueConstraint("credential_id", name="uq_passkey_credentials_credential_id"),
    )
    op.create_index("ix_passkey_credentials_user_id", "passkey_credentials", ["user_id"], unique=False)
    op.create_table(
        "registered_devices",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("device_name", sa.String(length=255), nullable=False),
        sa.Column("device_type", sa.String(length=32), nullable=False),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_trusted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_registered_devices_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_registered_devices")),
        sa.UniqueConstraint("user_id", "fingerprint", name="uq_registered_devices_user_fingerprint"),
    )
    op.create_table(
        "user_oauth_tokens",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("access_token_encrypted", sa.Text(), nullable=False),
        sa.Column("refresh_token_encrypted", sa.Text(), nullable=True),
        sa.Column("token_expiry", sa.DateTime(timezone=True), nullable=True),
        sa.Column("scope", sa.Text(), nullable=True),
        sa.Column("service_user_id", sa.String(length=255), nullable=True),
        sa.Column("service_email", sa.String(length=255), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_oauth_tokens_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_oauth_tokens")),
        sa.UniqueConstraint("user_id", "service", name="uq_user_oauth_tokens_user_service"),
    )
    op.create_table(
        "user_profiles",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("first_name", sa.String(length=100), nullable=True),
        sa.Column("last_name", sa.String(length=100), nullable=True),
        sa.Column("display_name", sa.String(length=255), nullable=True),
        sa.Column("date_of_birth", sa.Date(), nullable=True),
        sa.Column("phone_number", sa.String(length=32), nullable=True),
        sa.Column("alternate_phone", sa.String(length=32), nullable=True),
        sa.Column("personal_address", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("job_title", sa.String(length=255), nullable=True),
        sa.Column("company", sa.String(length=255), nullable=True),
        sa.Column("department", sa.String(length=255), nullable=True),
        sa.Column("work_phone", sa.String(length=32), nullable=True),
        sa.Column("work_email", sa.String(length=255), nullable=True),
        sa.Column("work_address", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("preferred_contact_method", sa.String(length=32), nullable=True),
        sa.Column("emergency_contact", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("bio", sa.Text(), nullable=True),
        sa.Column("website", sa.String(length=500), nullable=True),
        sa.Column("linkedin", sa.String(length=255), nullable=True),
        sa.Column("twitter", sa.String(length=100), nullable=True),
        sa.Column("github", sa.String(length=100), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_profiles_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_profiles")),
        sa.UniqueConstraint("user_id", name=op.f("uq_user_profiles_user_id")),
    )
    op.create_table(
        "user_two_factor_auth",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("is_enabled", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("secret_key_encrypted", sa.Text(), nullable=True),
        sa.Column("backup_codes", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_used_step", sa.BigInteger(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_two_factor_auth_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_two_factor_auth")),
        sa.UniqueConstraint("user_id", name=op.f("uq_user_two_factor_auth_user_id")),
    )
    op.create_table(
        "sessions",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("previous_token_hash", sa.String(length=64), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("auth_method", sa.String(length=16), server_default=sa.text("'password'"), nullable=False),
        sa.Column("device_id", sa.UUID(), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["registered_devices.id"],
            name=op.f("fk_sessions_device_id_registered_devices"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_sessions_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint("token_hash", name="uq_sessions_token_hash"),
    )
    op.create_index("ix_sessions_device_id", "sessions", ["device_id"], unique=False)
    op.create_index("ix_sessions_expires_at", "sessions", ["expires_at"], unique=False)
    op.create_index("ix_sessions_previous_token_hash", "sessions", ["previous_token_hash"], unique=False)
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"], unique=False)
    op.create_table(
        "user_group_memberships",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("group_id", sa.UUID(), nullable=False),
        sa.Column("role", sa.String(length=16), server_default=sa.text("'member'"), nullable=False),
        sa.Column("joined_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.CheckConstraint("role IN ('member', 'admin')", name=op.f("ck_user_group_memberships_role")),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_user_group_memberships_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_user_group_memberships_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_group_memberships")),
        sa.UniqueConstraint("user_id", "group_id", name="uq_user_group_memberships_user_group"),
    )
    op.create_index(
        "ix_user_group_memberships_group_id", "user_group_memberships", ["group_id"], unique=False
    )

    for statement in HELPER_FUNCTIONS:
        op.execute(statement)
    for table in RLS_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for statement in POLICIES:
        op.execute(statement)
    op.execute(CREATE_APP_ROLE)
    op.execute(GRANTS)


def downgrade() -> None:
    op.execute(REVOKES)
    # The role stays: it is cluster-wide and other databases may use it.
    op.execute("DROP POLICY users_select ON users")  # it reads user_group_memberships
    for table in (
        "user_group_memberships",
        "sessions",
        "user_two_factor_auth",
        "user_profiles",
        "user_oauth_tokens",
        "registered_devices",
        "passkey_credentials",
        "groups",
        "auth_challenges",
        "api_keys",
        "users",
        "auth_throttle",
    ):
        op.execute(f"DROP TABLE {table}")  # policies and triggers go with their table
    for function in DROP_FUNCTIONS:
        op.execute(f"DROP FUNCTION {function}")
