"""Identity tables: users, sessions, API keys, 2FA, passkeys, devices, OAuth tokens,
profiles, groups, memberships and invitations, plus the login throttle and ceremony challenges.

One ``users`` table holds every account (``docs/seed-map.toml`` says where each seed
column lives).  Its design choices:

* the per-node model choices are one ``model_preferences`` JSONB object (same meaning,
  one validated place instead of a migration per new node);
* the second factor's state lives only in ``user_two_factor_auth`` (one source of truth);
* API keys are rows of ``api_keys`` (many named, revocable keys per user, not a column).

Every user-owned table carries ``user_id`` with ``ON DELETE CASCADE`` and an RLS
policy (migration 0200) admitting the owner and administrators.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, CreatedAt, Timestamps, UUIDPrimaryKey, utcnow

ROLES = ("admin", "user")
STATUSES = ("pending_approval", "active", "suspended")
TIERS = ("free", "pro", "enterprise")
GROUP_ROLES = ("member", "admin")
WEB_SEARCH_PROVIDERS = ("disabled", "tavily", "serpapi")
# The keys of users.model_preferences, a model per agent node; "selected" is the default
# for every node not listed.
MODEL_PREFERENCE_KEYS = (
    "selected", "chat", "initial_assessment", "tool_selection", "embeddings", "coding",
    "executive_assessment", "confidence_assessment", "tool_routing", "simple_planning",
    "wave_function_specialist", "wave_function_refinement", "plan_validation",
    "plan_comparison", "reflection", "final_response", "fast_conversational",
)
# Free-form JSON preferences: one column each, since each means something different.
PREFERENCE_COLUMNS = (
    "calendar_event_weights", "agent_settings", "personal_goals", "work_style_preferences",
    "productivity_patterns", "interview_insights", "project_preferences",
    "default_code_style", "git_integrations",
)


_RATE_LIMITS_CHECK = ("(rate_limit_rpm IS NULL OR rate_limit_rpm >= 0) "
                      "AND (rate_limit_streams IS NULL OR rate_limit_streams >= 0)")


def _owner_fk() -> Any:
    return mapped_column(ForeignKey("users.id", ondelete="CASCADE"), nullable=False)


class User(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "users"

    username: Mapped[str] = mapped_column(String(128))
    # Stored lower-cased (the service normalises), so uniqueness is case-insensitive.
    email: Mapped[str] = mapped_column(String(255))
    # NULL for accounts that never had a password (API-key or passkey only).
    hashed_password: Mapped[str | None] = mapped_column(String(255))
    full_name: Mapped[str | None] = mapped_column(String(255))
    avatar_url: Mapped[str | None] = mapped_column(String(500))
    role: Mapped[str] = mapped_column(String(16), server_default=text("'user'"), default="user")
    status: Mapped[str] = mapped_column(
        String(32), server_default=text("'pending_approval'"), default="pending_approval"
    )
    is_root: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    is_superuser: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    is_verified: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    tier: Mapped[str] = mapped_column(String(16), server_default=text("'free'"), default="free")
    last_login_at: Mapped[datetime | None]

    # --- settings ----------------------------------------------------------------------
    theme: Mapped[str] = mapped_column(String(32), server_default=text("'dark'"), default="dark")
    notifications_enabled: Mapped[bool] = mapped_column(
        Boolean, server_default=text("true"), default=True
    )
    timezone: Mapped[str] = mapped_column(String(64), server_default=text("'UTC'"), default="UTC")
    model_preferences: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"), default=dict
    )
    calendar_event_weights: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    agent_settings: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    personal_goals: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    work_style_preferences: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    productivity_patterns: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    interview_insights: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    project_preferences: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    default_code_style: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    git_integrations: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    web_search_provider: Mapped[str] = mapped_column(
        String(32), server_default=text("'disabled'"), default="disabled"
    )
    # SecretBox (AES-256-GCM) ciphertext, associated data binds it to this user.
    web_search_api_key_encrypted: Mapped[str | None] = mapped_column(Text)
    # Rate limits set by an administrator (roost.identity.ratelimits): NULL = the
    # settings' default, 0 = unlimited.
    rate_limit_rpm: Mapped[int | None] = mapped_column(Integer)
    rate_limit_streams: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = (
        CheckConstraint(_RATE_LIMITS_CHECK, name="rate_limits"),
        CheckConstraint("role IN ('admin', 'user')", name="role"),
        CheckConstraint("status IN ('pending_approval', 'active', 'suspended')", name="status"),
        CheckConstraint("tier IN ('free', 'pro', 'enterprise')", name="tier"),
        CheckConstraint(
            "web_search_provider IN ('disabled', 'tavily', 'serpapi')", name="web_search_provider"
        ),
        UniqueConstraint("username", name="uq_users_username"),
        UniqueConstraint("email", name="uq_users_email"),
        # At most one root account: the first one registered.
        Index("uq_users_is_root", "is_root", unique=True, postgresql_where=text("is_root")),
        Index("ix_users_role", "role"),
        Index("ix_users_status", "status"),
    )


class UserProfile(UUIDPrimaryKey, Timestamps, Base):
    """A user's personal and work details; the time zone is ``users.timezone``."""

    __tablename__ = "user_profiles"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    first_name: Mapped[str | None] = mapped_column(String(100))
    last_name: Mapped[str | None] = mapped_column(String(100))
    display_name: Mapped[str | None] = mapped_column(String(255))
    date_of_birth: Mapped[date | None] = mapped_column(Date)
    phone_number: Mapped[str | None] = mapped_column(String(32))
    alternate_phone: Mapped[str | None] = mapped_column(String(32))
    personal_address: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    job_title: Mapped[str | None] = mapped_column(String(255))
    company: Mapped[str | None] = mapped_column(String(255))
    department: Mapped[str | None] = mapped_column(String(255))
    work_phone: Mapped[str | None] = mapped_column(String(32))
    work_email: Mapped[str | None] = mapped_column(String(255))
    work_address: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    preferred_contact_method: Mapped[str | None] = mapped_column(String(32))
    emergency_contact: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    bio: Mapped[str | None] = mapped_column(Text)
    website: Mapped[str | None] = mapped_column(String(500))
    linkedin: Mapped[str | None] = mapped_column(String(255))
    twitter: Mapped[str | None] = mapped_column(String(100))
    github: Mapped[str | None] = mapped_column(String(100))
    language: Mapped[str | None] = mapped_column(String(16))


class Session(UUIDPrimaryKey, CreatedAt, Base):
    """One row per login; ``token_hash`` is the SHA-256 of the current refresh token.
    Access tokens carry the row id (``sid``) and are refused as soon as the row is
    revoked, expired or gone."""

    __tablename__ = "sessions"

    user_id: Mapped[uuid.UUID] = _owner_fk()
    token_hash: Mapped[str] = mapped_column(String(64))
    # The hash the last refresh replaced: presenting it again means the refresh token
    # was copied, and the whole session is revoked (refresh token reuse detection).
    previous_token_hash: Mapped[str | None] = mapped_column(String(64))
    expires_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    auth_method: Mapped[str] = mapped_column(String(16), server_default=text("'password'"))
    device_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("registered_devices.id", ondelete="SET NULL")
    )
    ip_address: Mapped[str | None] = mapped_column(String(45))
    user_agent: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("token_hash", name="uq_sessions_token_hash"),
        Index("ix_sessions_previous_token_hash", "previous_token_hash"),
        Index("ix_sessions_user_id", "user_id"),
        Index("ix_sessions_expires_at", "expires_at"),
        Index("ix_sessions_device_id", "device_id"),
    )


class ApiKey(UUIDPrimaryKey, CreatedAt, Base):
    """One row per named key; only the key's SHA-256 is stored."""

    __tablename__ = "api_keys"

    user_id: Mapped[uuid.UUID] = _owner_fk()
    name: Mapped[str] = mapped_column(String(100))
    prefix: Mapped[str] = mapped_column(String(8))
    key_hash: Mapped[str] = mapped_column(String(64))
    last_used_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    # An override of the key's own (NULL: none, its user's limits apply; 0 = unlimited).
    rate_limit_rpm: Mapped[int | None] = mapped_column(Integer)
    rate_limit_streams: Mapped[int | None] = mapped_column(Integer)
    # The key whose request made this one (NULL: made at sign-in, by the CLI, or before
    # migration 1420): revoking a key revokes what it made, transitively.
    parent_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"))
    # The first key of its family (NULL: this one): the family's requests and streams
    # count against the root's rate-limit counters, so minting spends no fresh minute.
    root_key_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"))

    __table_args__ = (
        CheckConstraint(_RATE_LIMITS_CHECK, name="rate_limits"),
        UniqueConstraint("key_hash", name="uq_api_keys_key_hash"),
        Index("ix_api_keys_user_id", "user_id"),
        Index("ix_api_keys_parent_key_id", "parent_key_id",
              postgresql_where=text("parent_key_id IS NOT NULL")),
    )


class UserTwoFactorAuth(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "user_two_factor_auth"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False, unique=True
    )
    is_enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    # SecretBox ciphertext of the base32 TOTP secret.
    secret_key_encrypted: Mapped[str | None] = mapped_column(Text)
    # SHA-256 digests of the ten backup codes; a used code's slot becomes null.
    backup_codes: Mapped[list[Any] | None] = mapped_column(JSONB)
    last_used_at: Mapped[datetime | None]
    # RFC 6238 replay guard: the last accepted time step.
    last_used_step: Mapped[int | None]


class PasskeyCredential(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "passkey_credentials"

    user_id: Mapped[uuid.UUID] = _owner_fk()
    # base64url of the raw credential id, as browsers send it.
    credential_id: Mapped[str] = mapped_column(String(1400))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)  # COSE_Key
    sign_count: Mapped[int] = mapped_column(server_default=text("0"), default=0)
    aaguid: Mapped[str | None] = mapped_column(String(36))
    device_type: Mapped[str | None] = mapped_column(String(32))
    backed_up: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    credential_name: Mapped[str | None] = mapped_column(String(100))
    last_used_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("credential_id", name="uq_passkey_credentials_credential_id"),
        Index("ix_passkey_credentials_user_id", "user_id"),
    )


class RegisteredDevice(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "registered_devices"

    user_id: Mapped[uuid.UUID] = _owner_fk()
    device_name: Mapped[str] = mapped_column(String(255))
    device_type: Mapped[str] = mapped_column(String(32))
    user_agent: Mapped[str | None] = mapped_column(Text)
    ip_address: Mapped[str | None] = mapped_column(String(45))
    last_used_at: Mapped[datetime | None]
    is_trusted: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    # SHA-256 of (device name, user agent): a repeat login updates the row, not a new one.
    fingerprint: Mapped[str] = mapped_column(String(64))

    __table_args__ = (
        UniqueConstraint("user_id", "fingerprint", name="uq_registered_devices_user_fingerprint"),
    )


class UserOAuthToken(UUIDPrimaryKey, Timestamps, Base):
    """A third-party service's tokens; both are SecretBox ciphertexts bound (associated
    data) to the user, the service and the field, so a row cannot be swapped."""

    __tablename__ = "user_oauth_tokens"

    user_id: Mapped[uuid.UUID] = _owner_fk()
    service: Mapped[str] = mapped_column(String(64))
    access_token_encrypted: Mapped[str] = mapped_column(Text)
    refresh_token_encrypted: Mapped[str | None] = mapped_column(Text)
    token_expiry: Mapped[datetime | None]
    scope: Mapped[str | None] = mapped_column(Text)
    service_user_id: Mapped[str | None] = mapped_column(String(255))
    service_email: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (
        UniqueConstraint("user_id", "service", name="uq_user_oauth_tokens_user_service"),
    )


class Group(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "groups"

    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str | None] = mapped_column(Text)
    # Who created it; the creator may always manage it (RLS bootstraps the first
    # membership from this).
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )

    __table_args__ = (
        UniqueConstraint("name", name="uq_groups_name"),
        Index("ix_groups_created_at", "created_at"),
    )


class UserGroupMembership(UUIDPrimaryKey, Base):
    __tablename__ = "user_group_memberships"

    user_id: Mapped[uuid.UUID] = _owner_fk()
    group_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), nullable=False
    )
    role: Mapped[str] = mapped_column(String(16), server_default=text("'member'"), default="member")
    joined_at: Mapped[datetime] = mapped_column(
        server_default=text("now()"), default=utcnow, nullable=False
    )

    __table_args__ = (
        CheckConstraint("role IN ('member', 'admin')", name="role"),
        UniqueConstraint("user_id", "group_id", name="uq_user_group_memberships_user_group"),
        Index("ix_user_group_memberships_group_id", "group_id"),
    )


class GroupInvitation(UUIDPrimaryKey, CreatedAt, Base):
    """A group admin's offer of a membership, pending until the invitee accepts (a
    membership with ``role``) or declines; the group's admins may revoke it.  Site
    administrators add members directly and make none (``roost.identity.groups``)."""

    __tablename__ = "group_invitations"

    group_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), nullable=False
    )
    user_id: Mapped[uuid.UUID] = _owner_fk()
    role: Mapped[str] = mapped_column(String(16), server_default=text("'member'"), default="member")
    invited_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )

    __table_args__ = (
        CheckConstraint("role IN ('member', 'admin')", name="role"),
        UniqueConstraint("group_id", "user_id", name="uq_group_invitations_group_user"),
        Index("ix_group_invitations_user_id", "user_id"),
        Index("ix_group_invitations_invited_by", "invited_by"),
    )


class AuthThrottle(Base):
    """Failed-login counters per account and per client address (no RLS: read before
    anyone is authenticated).  ``key`` is ``user:<id>``, ``login:<sha256>`` for names
    that match no account (so unknown names lock out exactly like real ones),
    ``mfa:<id>`` for wrong second-factor codes, or ``ip:<address>``."""

    __tablename__ = "auth_throttle"

    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    window_started_at: Mapped[datetime]
    locked_until: Mapped[datetime | None]

    __table_args__ = (Index("ix_auth_throttle_window_started_at", "window_started_at"),)


class RateLimitState(Base):
    """GCRA's theoretical arrival time per limited subject (``u:<user id>``,
    ``k:<api key id>``); written only by ``roost_rate_take`` (migrations 0940, 1230).
    UNLOGGED: after a crash every subject starts with a full minute."""

    __tablename__ = "rate_limit_state"

    subject: Mapped[str] = mapped_column(String(80), primary_key=True)
    tat: Mapped[datetime]
    # The limit ``tat`` was charged under: a changed limit rescales it (migration 1230).
    per_period: Mapped[int | None] = mapped_column(Integer)

    __table_args__ = ({"prefixes": ["UNLOGGED"]},)


class StreamLease(Base):
    """One open stream in one subject, until ``expires_at`` (renewed while the stream
    is open; a crashed process's leases expire).  Written by ``roost_stream_acquire``."""

    __tablename__ = "stream_leases"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    subject: Mapped[str] = mapped_column(String(80), primary_key=True)
    expires_at: Mapped[datetime]

    __table_args__ = (
        Index("ix_stream_leases_subject", "subject", "expires_at"),
        {"prefixes": ["UNLOGGED"]},
    )


class AuthChallenge(UUIDPrimaryKey, CreatedAt, Base):
    """Short-lived, single-use server-side state for multi-step logins: the second
    factor step after a password, and WebAuthn registration/authentication challenges."""

    __tablename__ = "auth_challenges"

    user_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    purpose: Mapped[str] = mapped_column(String(32))
    token_hash: Mapped[str | None] = mapped_column(String(64))
    challenge: Mapped[bytes | None] = mapped_column(LargeBinary)
    payload: Mapped[dict[str, Any]] = mapped_column(
        JSONB, server_default=text("'{}'::jsonb"), default=dict
    )
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    expires_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint(
            "purpose IN ('mfa_login', 'passkey_register', 'passkey_login')", name="purpose"
        ),
        UniqueConstraint("token_hash", name="uq_auth_challenges_token_hash"),
        Index("ix_auth_challenges_expires_at", "expires_at"),
        Index("ix_auth_challenges_user_id", "user_id"),
    )
