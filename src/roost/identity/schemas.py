"""Pydantic request/response models of the identity API.

Inputs forbid unknown fields (a typo or a privilege field sent to the wrong endpoint is
a 422 naming it, not silently ignored) and bound every string and JSON value.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
)
from pydantic_core import PydanticCustomError

from roost.identity.common import nfc, refuse_hidden_characters
from roost.identity.models import MODEL_PREFERENCE_KEYS
from roost.inputs import FILLERS, StrictInput, WebUrl, is_blank, json_size, no_nul, strip_invisible

MAX_PREFERENCE_JSON_BYTES = 16 * 1024
MAX_PROFILE_JSON_BYTES = 4 * 1024
MAX_CREDENTIAL_JSON_BYTES = 16 * 1024
LANGUAGE_TAG = r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$"  # BCP 47, e.g. "en", "pt-BR"


def _json_limit(limit: int) -> Any:
    def check(value: Any) -> Any:
        if value is not None and json_size(value) > limit:
            raise ValueError(f"must be at most {limit} bytes of JSON")
        return value

    return AfterValidator(check)


@lru_cache(maxsize=1)
def _zones() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def _timezone(value: str) -> str:
    if value not in _zones():
        raise ValueError("must be an IANA time zone name such as 'Europe/Paris' or 'UTC'")
    return value


def _model_prefs(value: dict[str, str]) -> dict[str, str]:
    unknown = set(value) - set(MODEL_PREFERENCE_KEYS)
    if unknown:
        raise ValueError(f"unknown model keys {sorted(unknown)}; known: "
                         f"{', '.join(MODEL_PREFERENCE_KEYS)}")
    return value


def _sent_at_most(limit: int) -> BeforeValidator:
    """A stripped string's ``maxLength`` holds for what was sent: pydantic checks the
    length after stripping, so 129 characters with a leading space passed a limit of 128
    that the OpenAPI document states for the value as sent."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and len(value) > limit:
            raise PydanticCustomError("string_too_long",
                                      "String should have at most {max_length} characters",
                                      {"max_length": limit})
        return value

    return BeforeValidator(check)


Str = Annotated[str, StringConstraints(strip_whitespace=True)]
Name = Annotated[str, StringConstraints(strip_whitespace=True, max_length=255), _sent_at_most(255)]
Password = Annotated[str, Field(min_length=1, max_length=4096)]
Timezone = Annotated[str, Field(max_length=64), AfterValidator(_timezone)]
PrefJson = Annotated[dict[str, Any] | list[Any] | None, _json_limit(MAX_PREFERENCE_JSON_BYTES)]
ProfileJson = Annotated[dict[str, Any] | None, _json_limit(MAX_PROFILE_JSON_BYTES)]
ModelName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200),
                      _sent_at_most(200)]
Url = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500,
                                       pattern=r"^https?://\S+$"), _sent_at_most(500), WebUrl]
Phone = Annotated[str, StringConstraints(strip_whitespace=True, max_length=32,
                                         pattern=r"^[0-9+()\-. x]{3,32}$"), _sent_at_most(32)]


class Input(StrictInput):
    """Request bodies: unknown fields refused, JSON booleans/timestamps strictly typed."""


# --- auth ---------------------------------------------------------------------------


class RegisterIn(Input):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    email: Annotated[str, Field(min_length=3, max_length=255)]
    password: Password
    full_name: Name | None = None


class LoginIn(Input):
    # NUL checked per field (a 422 naming it, before the password is): not in the
    # password, which is hashed, never stored, and may hold any character.
    login: Annotated[str, BeforeValidator(no_nul), Field(min_length=1, max_length=255,
                                                         description="username or email")]
    password: Password
    device_name: Annotated[str, BeforeValidator(no_nul), Field(max_length=255)] | None = None
    device_type: Literal["desktop", "mobile", "tablet", "cli", "server", "unknown"] | None = None


class MfaIn(Input):
    mfa_token: Annotated[str, Field(min_length=1, max_length=128)]
    code: Annotated[str, Field(min_length=1, max_length=32,
                               description="6-digit TOTP code or a backup code")]


class RefreshIn(Input):
    refresh_token: Annotated[str, Field(min_length=1, max_length=256)]


class UserOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    username: str
    email: str
    full_name: str | None
    avatar_url: str | None
    role: str
    status: str
    is_root: bool
    is_superuser: bool
    is_verified: bool
    is_active: bool
    tier: str
    created_at: datetime
    updated_at: datetime
    last_login_at: datetime | None


class TokensOut(BaseModel):
    mfa_required: Literal[False] = False
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - the OAuth scheme name
    access_token: str
    expires_in: int = Field(description="seconds the access token is valid")
    refresh_token: str
    refresh_expires_at: datetime
    session_id: uuid.UUID
    user: UserOut


class MfaRequiredOut(BaseModel):
    mfa_required: Literal[True] = True
    mfa_token: str
    expires_in: int
    methods: list[str]


class LoginSessionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    auth_method: str
    device_id: uuid.UUID | None
    ip_address: str | None
    user_agent: str | None
    current: bool = False


class PasswordChangeIn(Input):
    current_password: Password
    new_password: Password


class CountOut(BaseModel):
    count: int


# --- two-factor and passkeys ----------------------------------------------------------


class CodeIn(Input):
    code: Annotated[str, Field(min_length=1, max_length=32)]


class TwoFactorStatusOut(BaseModel):
    enabled: bool
    pending: bool
    backup_codes_remaining: int


class TwoFactorSetupOut(BaseModel):
    secret: str = Field(description="base32 secret, for typing into an authenticator app")
    otpauth_uri: str = Field(description="otpauth:// URI to show as a QR code")


class BackupCodesOut(BaseModel):
    backup_codes: list[str] = Field(description="shown once; each works once")


Credential = Annotated[dict[str, Any], _json_limit(MAX_CREDENTIAL_JSON_BYTES)]


class PasskeyBeginIn(Input):
    name: Annotated[str | None, Field(max_length=100)] = None


class PasskeyCeremonyOut(BaseModel):
    challenge_id: uuid.UUID
    options: dict[str, Any] = Field(description="pass to navigator.credentials.create/get")


class PasskeyRegisterFinishIn(Input):
    challenge_id: uuid.UUID
    credential: Credential
    name: Annotated[str | None, Field(max_length=100)] = None


class PasskeyLoginFinishIn(Input):
    challenge_id: uuid.UUID
    credential: Credential
    device_name: Annotated[str, BeforeValidator(no_nul), Field(max_length=255)] | None = None


class PasskeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    credential_name: str | None
    device_type: str | None
    backed_up: bool
    created_at: datetime
    last_used_at: datetime | None


class PasskeyRenameIn(Input):
    name: Annotated[str, Field(min_length=1, max_length=100)]


# --- devices -------------------------------------------------------------------------


class DeviceOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    device_name: str
    device_type: str
    user_agent: str | None
    ip_address: str | None
    last_used_at: datetime | None
    is_trusted: bool
    created_at: datetime


class DevicePatchIn(Input):
    is_trusted: bool


# --- API keys ------------------------------------------------------------------------


class ApiKeyIn(Input):
    refuse_nul = True  # the name is stored as text, which holds no NUL: a 422 naming it

    name: Annotated[str, Field(min_length=1, max_length=100)]
    expires_at: datetime | None = None


class ApiKeyOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    prefix: str = Field(description="the visible part: keys look like rst_<prefix>_...")
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None
    revoked_at: datetime | None
    parent_key_id: uuid.UUID | None = Field(
        description="the key whose request made this one (revoking that key revokes this "
                    "one); null for a key made at sign-in, by the CLI or an administrator")


class ApiKeyCreatedOut(ApiKeyOut):
    key: str = Field(description="the full key: shown only in this answer, store it now")


# --- users, settings, profiles -------------------------------------------------------


class UserCreateIn(Input):
    username: Annotated[str, Field(min_length=1, max_length=64)]
    email: Annotated[str, Field(min_length=3, max_length=255)]
    password: Password | None = None
    full_name: Name | None = None
    role: Literal["admin", "user"] = "user"
    tier: Literal["free", "pro", "enterprise"] = "free"


class UserPatchIn(Input):
    username: Annotated[str | None, Field(max_length=64)] = None
    email: Annotated[str | None, Field(max_length=255)] = None
    full_name: Name | None = None
    avatar_url: Url | None = None
    # administrators only
    role: Literal["admin", "user"] | None = None
    status: Literal["pending_approval", "active", "suspended"] | None = None
    tier: Literal["free", "pro", "enterprise"] | None = None
    is_verified: bool | None = None
    is_active: bool | None = None
    is_superuser: bool | None = None


class SettingsBase(BaseModel):
    theme: Annotated[str, StringConstraints(max_length=32, pattern=r"^[a-z0-9_-]+$")] = "dark"
    timezone: Timezone = "UTC"
    notifications_enabled: bool = True
    model_preferences: Annotated[dict[str, ModelName], AfterValidator(_model_prefs)] = Field(
        default_factory=dict,
        description="per-node model names; 'selected' is the default for unlisted nodes",
    )
    calendar_event_weights: PrefJson = None
    agent_settings: PrefJson = None
    personal_goals: PrefJson = None
    work_style_preferences: PrefJson = None
    productivity_patterns: PrefJson = None
    interview_insights: PrefJson = None
    project_preferences: PrefJson = None
    default_code_style: PrefJson = None
    git_integrations: PrefJson = None
    web_search_provider: Literal["disabled", "tavily", "serpapi"] = "disabled"


class SettingsOut(SettingsBase):
    model_config = ConfigDict(from_attributes=True)

    web_search_api_key_set: bool = False


class SettingsPatchIn(SettingsBase, Input):
    """Only the fields sent change; ``web_search_api_key`` is write-only ("" clears it)."""

    refuse_nul = True  # stored as text and jsonb, which hold no NUL: a 422 naming the field

    # The themes the console has; a name stored before this rule still reads (SettingsOut).
    theme: Literal["dark", "light"] = "dark"
    web_search_api_key: Annotated[str | None, Field(max_length=512)] = None


class ProfileBase(BaseModel):
    first_name: Annotated[str | None, StringConstraints(max_length=100)] = None
    last_name: Annotated[str | None, StringConstraints(max_length=100)] = None
    display_name: Name | None = None
    date_of_birth: date | None = None
    phone_number: Phone | None = None
    alternate_phone: Phone | None = None
    personal_address: ProfileJson = None
    job_title: Name | None = None
    company: Name | None = None
    department: Name | None = None
    work_phone: Phone | None = None
    work_email: Annotated[str | None, Field(max_length=255)] = None
    work_address: ProfileJson = None
    preferred_contact_method: Literal["email", "phone", "sms", "work_email", "work_phone",
                                      "other"] | None = None
    emergency_contact: ProfileJson = None
    bio: Annotated[str | None, Field(max_length=5000)] = None
    website: Url | None = None
    linkedin: Annotated[str | None, Field(max_length=255)] = None
    twitter: Annotated[str | None, Field(max_length=100)] = None
    github: Annotated[str | None, Field(max_length=100)] = None
    language: Annotated[str | None, StringConstraints(max_length=16, pattern=LANGUAGE_TAG)] = None


class ProfileOut(ProfileBase):
    model_config = ConfigDict(from_attributes=True)

    user_id: uuid.UUID
    timezone: str = Field(description="the account's time zone (users.timezone)")
    updated_at: datetime | None = None


class ProfilePatchIn(ProfileBase, Input):
    refuse_nul = True  # stored as text and jsonb, which hold no NUL: a 422 naming the field
    timezone: Timezone | None = None


# --- OAuth tokens --------------------------------------------------------------------


class OAuthStoreIn(Input):
    access_token: Annotated[str, Field(min_length=1, max_length=8192)]
    refresh_token: Annotated[str | None, Field(min_length=1, max_length=8192)] = None
    token_expiry: datetime | None = None
    # Stored as text, which holds no NUL: a 422 naming the field (the tokens are
    # encrypted and may hold any character).
    scope: Annotated[str, BeforeValidator(no_nul), Field(max_length=4096)] | None = None
    service_user_id: Annotated[str, BeforeValidator(no_nul), Field(max_length=255)] | None = None
    service_email: Annotated[str, BeforeValidator(no_nul), Field(max_length=255)] | None = None


class OAuthRefreshIn(Input):
    access_token: Annotated[str | None, Field(min_length=1, max_length=8192)] = None
    refresh_token: Annotated[str | None, Field(min_length=1, max_length=8192)] = None
    token_expiry: datetime | None = None
    scope: Annotated[str, BeforeValidator(no_nul), Field(max_length=4096)] | None = None


class OAuthTokenOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    service: str
    scope: str | None
    token_expiry: datetime | None
    expired: bool
    has_refresh_token: bool
    access_token_hint: str = Field(description="last four characters only")
    service_user_id: str | None
    service_email: str | None
    created_at: datetime
    updated_at: datetime


# --- groups --------------------------------------------------------------------------


def _composed(value: Any) -> Any:
    return nfc(value) if isinstance(value, str) else value


# A group's name: unique across the server and shown to the people it invites, so composed
# (NFC) before it is stripped and compared (an "É" typed decomposed is the same name), and
# refused with a control, line-breaking or invisible character (which would make a name
# that reads as another, or as nothing).  Validators before the core run right to left:
# the limit holds for the name as sent, then it is composed.
def _visible_name(value: str) -> str:
    """``value`` without invisible characters at its ends (a trailing Hangul filler made a
    second group reading exactly as another's), refused when nothing is left or when one
    of :data:`roost.inputs.FILLERS` is inside it."""
    value = strip_invisible(value)
    if is_blank(value):
        raise ValueError("must not be blank (it holds only characters that show nothing)")
    if any(c in FILLERS for c in value):
        raise ValueError("must not contain characters that show nothing (a Hangul filler, "
                         "a grapheme joiner)")
    return value


GroupName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=128),
                      BeforeValidator(_composed), _sent_at_most(128),
                      AfterValidator(_visible_name), AfterValidator(refuse_hidden_characters)]


_GROUP_NAME: TypeAdapter[str] = TypeAdapter(GroupName)


def stored_group_name(value: str) -> str | None:
    """``value`` as a group's name is stored (composed, stripped of white space and of
    invisible characters at its ends), for commands that name a group by name; None for a
    text no group can be named (blank, too long, a hidden character inside)."""
    try:
        return _GROUP_NAME.validate_python(value)
    except ValidationError:
        return None


class GroupIn(Input):
    refuse_nul = True  # stored as text, which holds no NUL: a 422 naming the field

    name: GroupName
    description: Annotated[str | None, Field(max_length=5000)] = None


class GroupPatchIn(Input):
    refuse_nul = True

    name: GroupName | None = None
    description: Annotated[str | None, Field(max_length=5000)] = None


class GroupOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str | None
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    my_role: str | None = None


class MemberIn(Input):
    refuse_nul = True  # looked up as text, which holds no NUL: a 422 naming the field

    user: Annotated[str, Field(min_length=1, max_length=255,
                               description="username, email or user id")]
    role: Literal["member", "admin"] = "member"


class MemberPatchIn(Input):
    role: Literal["member", "admin"]


class GroupMemberOut(BaseModel):
    user_id: uuid.UUID
    username: str
    full_name: str | None
    role: str
    joined_at: datetime


class GroupInvitationOut(BaseModel):
    """A pending invitation to join a group: the membership exists once the invitee
    accepts it (``POST /api/v1/groups/invitations/{id}/accept``)."""

    id: uuid.UUID
    group_id: uuid.UUID
    group_name: str | None = Field(description="null if the group is gone meanwhile")
    user_id: uuid.UUID = Field(description="the invitee")
    username: str | None = Field(description="the invitee's username")
    role: Literal["member", "admin"] = Field(description="the role the membership will have")
    invited_by: uuid.UUID | None = Field(description="null once the inviter's account is gone")
    invited_by_username: str | None
    created_at: datetime


# --- rate limits (administrators; roost.identity.ratelimits) ------------------------------


class RateLimitsIn(Input):
    """A user's or API key's overrides; ``null`` (or absent) = the settings' default,
    ``0`` = unlimited."""

    requests_per_minute: Annotated[int | None, Field(ge=0, le=1_000_000)] = None
    streams: Annotated[int | None, Field(ge=0, le=10_000,
                                         description="concurrent streams")] = None


class RateLimitsOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    kind: Literal["user", "api_key"]
    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    requests_per_minute: int | None = Field(description="the override; null: the default")
    streams: int | None
    effective_requests_per_minute: int = Field(description="what applies; 0: unlimited")
    effective_streams: int


class RateLimitDefaultsOut(BaseModel):
    requests_per_minute: int
    streams: int
    lease_s: int


class RateLimitsOverviewOut(BaseModel):
    defaults: RateLimitDefaultsOut
    overrides: list[RateLimitsOut]
