"""Identity HTTP API: ``/api/v1/auth``, ``/api/v1/users``, ``/api/v1/api-keys``,
``/api/v1/groups``.  Thin: parse, call the service, shape the answer.

``{user}`` in ``/api/v1/users/{user}/...`` is ``me`` or an id; another user's id is
"not found" unless the caller is an administrator.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Depends, Query, Request, Response, status
from fastapi.responses import JSONResponse

from roost.context import current_context
from roost.errors import Unprocessable
from roost.http.auth import AdminPrincipal, CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit, SettingsDep, get_keys, get_settings_dep
from roost.http.routing import RoostRouter
from roost.identity import (
    accounts,
    apikeys,
    devices,
    groups,
    oauth,
    passkeys,
    profiles,
    ratelimits,
    sessions,
    twofactor,
)
from roost.identity.common import lookup_user_id
from roost.identity.config import OPEN_REGISTRATION, IdentityConfig
from roost.identity.schemas import (
    ApiKeyCreatedOut,
    ApiKeyIn,
    ApiKeyOut,
    BackupCodesOut,
    CodeIn,
    CountOut,
    DeviceOut,
    DevicePatchIn,
    GroupIn,
    GroupInvitationOut,
    GroupMemberOut,
    GroupOut,
    GroupPatchIn,
    LoginIn,
    LoginSessionOut,
    MemberIn,
    MemberPatchIn,
    MfaIn,
    MfaRequiredOut,
    OAuthRefreshIn,
    OAuthStoreIn,
    OAuthTokenOut,
    PasskeyBeginIn,
    PasskeyCeremonyOut,
    PasskeyLoginFinishIn,
    PasskeyOut,
    PasskeyRegisterFinishIn,
    PasskeyRenameIn,
    PasswordChangeIn,
    ProfileOut,
    ProfilePatchIn,
    RateLimitDefaultsOut,
    RateLimitsIn,
    RateLimitsOut,
    RateLimitsOverviewOut,
    RefreshIn,
    RegisterIn,
    SettingsOut,
    SettingsPatchIn,
    TokensOut,
    TwoFactorSetupOut,
    TwoFactorStatusOut,
    UserCreateIn,
    UserOut,
    UserPatchIn,
)
from roost.pagination import DEFAULT_LIMIT, Page
from roost.principal import Principal
from roost.system_settings import runtime

auth_router = RoostRouter(prefix="/api/v1/auth", tags=["auth"])
users_router = RoostRouter(prefix="/api/v1/users", tags=["users"])
keys_router = RoostRouter(prefix="/api/v1/api-keys", tags=["api keys"])
groups_router = RoostRouter(prefix="/api/v1/groups", tags=["groups"])
limits_router = RoostRouter(prefix="/api/v1/admin/limits", tags=["rate limits"])


async def identity_config(request: Request) -> IdentityConfig:
    state = request.app.state
    cfg: IdentityConfig | None = getattr(state, "identity_config", None)
    if cfg is None:
        cfg = IdentityConfig.build(get_settings_dep(request), get_keys(request))
        state.identity_config = cfg
    return cfg


Config = Annotated[IdentityConfig, Depends(identity_config)]


def _no_content() -> Response:
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _client(device_name: str | None = None, device_type: str | None = None) -> sessions.ClientInfo:
    ctx = current_context()
    return sessions.ClientInfo(ctx.ip_address, ctx.user_agent, device_name, device_type)


def _user_ref(ref: str) -> uuid.UUID | None:
    if ref == "me":
        return None
    try:
        return uuid.UUID(ref)
    except ValueError:
        raise Unprocessable("user must be 'me' or a user id", extra={"field": "user"}) from None


def _tokens(issued: sessions.IssuedTokens) -> TokensOut:
    return TokensOut(access_token=issued.access_token, expires_in=issued.expires_in,
                     refresh_token=issued.refresh_token,
                     refresh_expires_at=issued.refresh_expires_at, session_id=issued.session_id,
                     user=UserOut.model_validate(issued.user))


# --- /auth ---------------------------------------------------------------------------------


@auth_router.post("/register", status_code=201, response_model=UserOut,
                  summary="Create an account (the first becomes root; later ones await approval "
                          "unless open registration is on)")
async def register(body: RegisterIn, session: DbSession, cfg: Config) -> UserOut:
    # Each costs an argon2 hash and may store an account: limited per address.
    await sessions.count_address_work(session, cfg, "register", "registrations")
    user = await accounts.create_user(
        session, None, username=body.username, email=body.email, password=body.password,
        full_name=body.full_name,
        open_registration=await runtime.get(session, OPEN_REGISTRATION, cfg.open_registration),
    )
    return UserOut.model_validate(user)


@auth_router.post("/login", response_model=TokensOut | MfaRequiredOut,
                  summary="Sign in with username or email and password")
async def login(body: LoginIn, session: DbSession, cfg: Config) -> TokensOut | MfaRequiredOut:
    result = await sessions.login(session, cfg, login=body.login, password=body.password,
                                  client=_client(body.device_name, body.device_type))
    if isinstance(result, sessions.MfaRequired):
        return MfaRequiredOut(mfa_token=result.mfa_token, expires_in=result.expires_in,
                              methods=result.methods)
    return _tokens(result)


@auth_router.post("/login/2fa", response_model=TokensOut,
                  summary="Second step: a TOTP code or a backup code")
async def login_second_factor(body: MfaIn, session: DbSession, cfg: Config) -> TokensOut:
    return _tokens(await sessions.complete_mfa(session, cfg, mfa_token=body.mfa_token,
                                               code=body.code, client=_client()))


@auth_router.post("/refresh", response_model=TokensOut,
                  summary="New access token; the refresh token rotates")
async def refresh(body: RefreshIn, session: DbSession, cfg: Config) -> TokensOut:
    return _tokens(await sessions.refresh(session, cfg, refresh_token=body.refresh_token,
                                          client=_client()))


@auth_router.post("/logout", status_code=204, summary="End this session")
async def logout(principal: CurrentPrincipal, session: DbSession) -> Response:
    await sessions.logout(session, principal)
    return _no_content()


@auth_router.post("/logout-all", response_model=CountOut, summary="End every session of yours")
async def logout_all(principal: CurrentPrincipal, session: DbSession) -> CountOut:
    return CountOut(count=await sessions.revoke_all_sessions(session, principal))


@auth_router.get("/me", response_model=UserOut, summary="The signed-in account")
async def me(principal: CurrentPrincipal, session: DbSession) -> UserOut:
    return UserOut.model_validate(await profiles.get_settings(session, principal))


@auth_router.post("/password", response_model=CountOut,
                  summary="Change your password (ends your other sessions)")
async def change_password(body: PasswordChangeIn, principal: CurrentPrincipal,
                          session: DbSession, cfg: Config) -> CountOut:
    ended = await sessions.change_password(
        session, cfg, principal, current_password=body.current_password,
        new_password=body.new_password, client=_client())
    return CountOut(count=ended)


def _sessions_out(rows: list[Any], principal: Principal) -> list[LoginSessionOut]:
    return [LoginSessionOut.model_validate(r).model_copy(update={"current": r.id == principal.session_id})
            for r in rows]


@auth_router.get("/sessions", response_model=list[LoginSessionOut], summary="Your active sessions")
async def my_sessions(principal: CurrentPrincipal, session: DbSession) -> list[LoginSessionOut]:
    return _sessions_out(await sessions.list_sessions(session, principal), principal)


@auth_router.delete("/sessions/{session_id}", status_code=204, summary="End one session")
async def end_session(session_id: uuid.UUID, principal: CurrentPrincipal,
                      session: DbSession) -> Response:
    await sessions.revoke_session(session, principal, session_id)
    return _no_content()


@auth_router.get("/2fa", response_model=TwoFactorStatusOut, summary="Two-factor status")
async def tfa_status(principal: CurrentPrincipal, session: DbSession) -> TwoFactorStatusOut:
    st = await twofactor.status(session, principal)
    return TwoFactorStatusOut(enabled=st.enabled, pending=st.pending,
                              backup_codes_remaining=st.backup_codes_remaining)


@auth_router.post("/2fa/setup", response_model=TwoFactorSetupOut,
                  summary="Start TOTP enrolment: a secret and an otpauth:// URI")
async def tfa_setup(principal: CurrentPrincipal, session: DbSession,
                    cfg: Config) -> TwoFactorSetupOut:
    enrolment = await twofactor.setup(session, cfg, principal)
    return TwoFactorSetupOut(secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri)


@auth_router.post("/2fa/confirm", response_model=BackupCodesOut,
                  summary="Confirm with a current code: TOTP is on; ten backup codes")
async def tfa_confirm(body: CodeIn, principal: CurrentPrincipal, session: DbSession,
                      cfg: Config) -> BackupCodesOut:
    return BackupCodesOut(backup_codes=await twofactor.confirm(session, cfg, principal, body.code))


@auth_router.post("/2fa/disable", status_code=204, summary="Turn TOTP off (needs a current code)")
async def tfa_disable(body: CodeIn, principal: CurrentPrincipal, session: DbSession,
                      cfg: Config) -> Response:
    await twofactor.disable(session, cfg, principal, body.code)
    return _no_content()


@auth_router.post("/2fa/backup-codes", response_model=BackupCodesOut,
                  summary="Replace the backup codes (needs a current code)")
async def tfa_backup_codes(body: CodeIn, principal: CurrentPrincipal, session: DbSession,
                           cfg: Config) -> BackupCodesOut:
    codes = await twofactor.regenerate_backup_codes(session, cfg, principal, body.code)
    return BackupCodesOut(backup_codes=codes)


@auth_router.post("/passkeys/register/begin", response_model=PasskeyCeremonyOut,
                  summary="Start registering a passkey")
async def passkey_register_begin(body: PasskeyBeginIn, principal: CurrentPrincipal,
                                 session: DbSession, cfg: Config) -> PasskeyCeremonyOut:
    challenge_id, options = await passkeys.begin_register(session, cfg, principal, body.name)
    return PasskeyCeremonyOut(challenge_id=challenge_id, options=options)


@auth_router.post("/passkeys/register/finish", status_code=201, response_model=PasskeyOut,
                  summary="Finish registering a passkey")
async def passkey_register_finish(body: PasskeyRegisterFinishIn, principal: CurrentPrincipal,
                                  session: DbSession, cfg: Config) -> PasskeyOut:
    row = await passkeys.finish_register(session, cfg, principal, challenge_id=body.challenge_id,
                                         credential=body.credential, name=body.name)
    return PasskeyOut.model_validate(row)


@auth_router.post("/passkeys/login/begin", response_model=PasskeyCeremonyOut,
                  summary="Start a passkey sign-in (username-less)")
async def passkey_login_begin(session: DbSession, cfg: Config) -> PasskeyCeremonyOut:
    challenge_id, options = await passkeys.begin_login(session, cfg)
    return PasskeyCeremonyOut(challenge_id=challenge_id, options=options)


@auth_router.post("/passkeys/login/finish", response_model=TokensOut,
                  summary="Finish a passkey sign-in")
async def passkey_login_finish(body: PasskeyLoginFinishIn, session: DbSession,
                               cfg: Config) -> TokensOut:
    issued = await passkeys.finish_login(session, cfg, challenge_id=body.challenge_id,
                                         credential=body.credential,
                                         client=_client(body.device_name))
    return _tokens(issued)


@auth_router.get("/passkeys", response_model=list[PasskeyOut], summary="Your passkeys")
async def passkey_list(principal: CurrentPrincipal, session: DbSession) -> list[PasskeyOut]:
    return [PasskeyOut.model_validate(p) for p in await passkeys.list_passkeys(session, principal)]


@auth_router.patch("/passkeys/{passkey_id}", response_model=PasskeyOut, summary="Rename a passkey")
async def passkey_rename(passkey_id: uuid.UUID, body: PasskeyRenameIn,
                         principal: CurrentPrincipal, session: DbSession) -> PasskeyOut:
    return PasskeyOut.model_validate(
        await passkeys.rename_passkey(session, principal, passkey_id, body.name))


@auth_router.delete("/passkeys/{passkey_id}", status_code=204, summary="Delete a passkey")
async def passkey_delete(passkey_id: uuid.UUID, principal: CurrentPrincipal,
                         session: DbSession) -> Response:
    await passkeys.delete_passkey(session, principal, passkey_id)
    return _no_content()


# --- /users -----------------------------------------------------------------------------


@users_router.post("", status_code=201, response_model=UserOut,
                   summary="Create an account (administrators; starts active)")
async def create_user(body: UserCreateIn, principal: AdminPrincipal, session: DbSession) -> UserOut:
    user = await accounts.create_user(
        session, principal, username=body.username, email=body.email, password=body.password,
        full_name=body.full_name, role=body.role, tier=body.tier,
    )
    return UserOut.model_validate(user)


@users_router.get("", response_model=list[UserOut], summary="List accounts (administrators)")
async def list_users(
    principal: AdminPrincipal, session: DbSession,
    status_filter: Annotated[str | None, Query(alias="status",
                                               pattern="^(pending_approval|active|suspended)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: uuid.UUID | None = None,
) -> list[UserOut]:
    rows = await accounts.list_users(session, principal, status=status_filter, limit=limit,
                                     after=after)
    return [UserOut.model_validate(u) for u in rows]


@users_router.get("/{user}", response_model=UserOut,
                  summary="An account: me, an id, or (administrators) a username or e-mail")
async def get_user(user: str, principal: CurrentPrincipal, session: DbSession) -> UserOut:
    try:
        ref = _user_ref(user)
    except Unprocessable:
        if not principal.is_admin:
            raise
        # Found as sign-in finds it (any case, an address typed decomposed): the console's
        # forms name accounts this way, however many there are.
        ref = await lookup_user_id(session, user, what="e-mail")
    return UserOut.model_validate(await profiles.get_settings(session, principal, ref))


@users_router.patch("/{user}", response_model=UserOut,
                    summary="Edit an account (role, status, tier and flags: administrators)")
async def patch_user(user: str, body: UserPatchIn, principal: CurrentPrincipal,
                     session: DbSession) -> UserOut:
    changes = body.model_dump(exclude_unset=True)
    row = await profiles.update_account(session, principal, changes, _user_ref(user))
    return UserOut.model_validate(row)


@users_router.delete("/{user}", status_code=204, summary="Delete an account (administrators)")
async def delete_user(user: str, principal: CurrentPrincipal, session: DbSession) -> Response:
    target = _user_ref(user) or principal.user_id
    if target is None:
        raise Unprocessable("give a user id")
    await accounts.delete_user(session, principal, target)
    return _no_content()


@users_router.post("/{user}/approve", response_model=UserOut,
                   summary="Approve a pending account (administrators)")
async def approve_user(user: uuid.UUID, principal: AdminPrincipal, session: DbSession) -> UserOut:
    return UserOut.model_validate(await accounts.approve(session, principal, user))


@users_router.get("/{user}/settings", response_model=SettingsOut, summary="Settings")
async def get_settings(user: str, principal: CurrentPrincipal, session: DbSession) -> SettingsOut:
    row = await profiles.get_settings(session, principal, _user_ref(user))
    return SettingsOut.model_validate(profiles.settings_of(row))


@users_router.patch("/{user}/settings", response_model=SettingsOut, summary="Change settings")
async def patch_settings(user: str, body: SettingsPatchIn, principal: CurrentPrincipal,
                         session: DbSession, cfg: Config) -> SettingsOut:
    changes = body.model_dump(exclude_unset=True)
    row = await profiles.update_settings(session, cfg, principal, changes, _user_ref(user))
    return SettingsOut.model_validate(profiles.settings_of(row))


def _profile_out(user: Any, profile: Any) -> ProfileOut:
    fields = {f: getattr(profile, f) for f in profiles.PROFILE_FIELDS} if profile else {}
    return ProfileOut(user_id=user.id, timezone=user.timezone,
                      updated_at=profile.updated_at if profile else None, **fields)


@users_router.get("/{user}/profile", response_model=ProfileOut, summary="Profile")
async def get_profile(user: str, principal: CurrentPrincipal, session: DbSession) -> ProfileOut:
    return _profile_out(*await profiles.get_profile(session, principal, _user_ref(user)))


@users_router.patch("/{user}/profile", response_model=ProfileOut, summary="Change the profile")
async def patch_profile(user: str, body: ProfilePatchIn, principal: CurrentPrincipal,
                        session: DbSession) -> ProfileOut:
    changes = body.model_dump(exclude_unset=True)
    return _profile_out(*await profiles.update_profile(session, principal, changes,
                                                       _user_ref(user)))


@users_router.get("/{user}/sessions", response_model=list[LoginSessionOut], summary="Active sessions")
async def user_sessions(user: str, principal: CurrentPrincipal,
                        session: DbSession) -> list[LoginSessionOut]:
    rows = await sessions.list_sessions(session, principal, _user_ref(user))
    return _sessions_out(rows, principal)


@users_router.post("/{user}/sessions/revoke", response_model=CountOut,
                   summary="End every session of an account")
async def revoke_user_sessions(user: str, principal: CurrentPrincipal,
                               session: DbSession) -> CountOut:
    return CountOut(count=await sessions.revoke_all_sessions(session, principal, _user_ref(user)))


@users_router.delete("/{user}/2fa", status_code=204,
                     summary="Reset two-factor for a user who lost it (administrators)")
async def reset_2fa(user: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    await twofactor.admin_reset(session, principal, user)
    return _no_content()


@users_router.get("/{user}/devices", response_model=list[DeviceOut], summary="Registered devices")
async def list_devices(user: str, principal: CurrentPrincipal,
                       session: DbSession) -> list[DeviceOut]:
    rows = await devices.list_devices(session, principal, _user_ref(user))
    return [DeviceOut.model_validate(d) for d in rows]


@users_router.patch("/{user}/devices/{device_id}", response_model=DeviceOut,
                    summary="Trust or distrust a device")
async def patch_device(user: str, device_id: uuid.UUID, body: DevicePatchIn,
                       principal: CurrentPrincipal, session: DbSession) -> DeviceOut:
    return DeviceOut.model_validate(await devices.set_trusted(
        session, principal, device_id, body.is_trusted, _user_ref(user)))


@users_router.delete("/{user}/devices/{device_id}", status_code=204,
                     summary="Revoke a device (ends its sessions)")
async def delete_device(user: str, device_id: uuid.UUID, principal: CurrentPrincipal,
                        session: DbSession) -> Response:
    await devices.revoke_device(session, principal, device_id, _user_ref(user))
    return _no_content()


def _oauth_out(cfg: IdentityConfig, row: Any) -> OAuthTokenOut:
    view = oauth.view(cfg, row)
    return OAuthTokenOut.model_validate(view)


@users_router.get("/{user}/oauth", response_model=list[OAuthTokenOut],
                  summary="Connected services (tokens are never returned)")
async def list_oauth(user: str, principal: CurrentPrincipal, session: DbSession,
                     cfg: Config) -> list[OAuthTokenOut]:
    rows = await oauth.list_tokens(session, principal, _user_ref(user))
    return [_oauth_out(cfg, r) for r in rows]


@users_router.get("/{user}/oauth/{service}", response_model=OAuthTokenOut,
                  summary="One connected service")
async def get_oauth(user: str, service: str, principal: CurrentPrincipal, session: DbSession,
                    cfg: Config) -> OAuthTokenOut:
    return _oauth_out(cfg, await oauth.get_token(session, principal, service, _user_ref(user)))


@users_router.put("/{user}/oauth/{service}", response_model=OAuthTokenOut,
                  summary="Store (or replace) a service's tokens, encrypted at rest")
async def put_oauth(user: str, service: str, body: OAuthStoreIn, principal: CurrentPrincipal,
                    session: DbSession, cfg: Config) -> OAuthTokenOut:
    row = await oauth.store(session, cfg, principal, service, user_id=_user_ref(user),
                            **body.model_dump())
    return _oauth_out(cfg, row)


@users_router.patch("/{user}/oauth/{service}", response_model=OAuthTokenOut,
                    summary="Record a token refresh: new access token, expiry, scope")
async def patch_oauth(user: str, service: str, body: OAuthRefreshIn, principal: CurrentPrincipal,
                      session: DbSession, cfg: Config) -> OAuthTokenOut:
    row = await oauth.update_after_refresh(session, cfg, principal, service,
                                           user_id=_user_ref(user),
                                           **body.model_dump(exclude_unset=True))
    return _oauth_out(cfg, row)


@users_router.delete("/{user}/oauth/{service}", status_code=204, summary="Disconnect a service")
async def delete_oauth(user: str, service: str, principal: CurrentPrincipal,
                       session: DbSession) -> Response:
    await oauth.delete_token(session, principal, service, _user_ref(user))
    return _no_content()


# --- /api-keys ----------------------------------------------------------------------------


@keys_router.post("", status_code=201, response_model=ApiKeyCreatedOut,
                  summary="Create an API key (the key is shown only in this answer)")
async def create_key(body: ApiKeyIn, principal: CurrentPrincipal, session: DbSession,
                     user_id: uuid.UUID | None = None) -> ApiKeyCreatedOut:
    created = await apikeys.create_api_key(session, principal, name=body.name,
                                           expires_at=body.expires_at, user_id=user_id)
    out = ApiKeyOut.model_validate(created.row)
    return ApiKeyCreatedOut(**out.model_dump(), key=created.key)


@keys_router.get("", response_model=list[ApiKeyOut], summary="Your API keys")
async def list_keys(principal: CurrentPrincipal, session: DbSession,
                    user_id: uuid.UUID | None = None,
                    include_revoked: bool = False) -> list[ApiKeyOut]:
    rows = await apikeys.list_api_keys(session, principal, user_id=user_id,
                                       include_revoked=include_revoked)
    return [ApiKeyOut.model_validate(r) for r in rows]


@keys_router.delete("/{key_id}", status_code=204, summary="Revoke an API key")
async def revoke_key(key_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> Response:
    await apikeys.revoke_api_key(session, principal, key_id)
    return _no_content()


# --- /groups ------------------------------------------------------------------------------


def _group_out(view: groups.GroupView) -> GroupOut:
    return GroupOut.model_validate(view.group).model_copy(update={"my_role": view.my_role})


@groups_router.post("", status_code=201, response_model=GroupOut,
                    summary="Create a group (you become its admin)")
async def create_group(body: GroupIn, principal: CurrentPrincipal, session: DbSession) -> GroupOut:
    return _group_out(await groups.create_group(session, principal, name=body.name,
                                                description=body.description))


@groups_router.get("", response_model=Page[GroupOut], summary="Your groups, by name")
async def list_groups(
    principal: CurrentPrincipal, session: DbSession,
    all_groups: Annotated[bool, Query(alias="all", description="every group (administrators)")] = False,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[GroupOut]:
    views, next_cursor = await groups.list_groups(session, principal, all_groups=all_groups,
                                                  limit=limit, cursor=cursor)
    return Page[GroupOut](items=[_group_out(v) for v in views], next_cursor=next_cursor)


def _invitation_out(i: groups.Invitation) -> GroupInvitationOut:
    return GroupInvitationOut(
        id=i.id, group_id=i.group_id, group_name=i.group_name, user_id=i.user_id,
        username=i.username, role=i.role, invited_by=i.invited_by,
        invited_by_username=i.invited_by_username, created_at=i.created_at)


def _invitations_page(rows: list[groups.Invitation], next_cursor: str | None) -> Page[GroupInvitationOut]:
    return Page[GroupInvitationOut](items=[_invitation_out(i) for i in rows], next_cursor=next_cursor)


# "invitations" is no group id: the group routes take only a UUID ({group_id:uuid}), so
# no other method of theirs answers at /invitations (a PATCH there is a 405, not a 422).
@groups_router.get("/invitations", response_model=Page[GroupInvitationOut],
                   summary="Your pending invitations to join groups, newest first")
async def my_invitations(principal: CurrentPrincipal, session: DbSession,
                         limit: Limit = DEFAULT_LIMIT,
                         cursor: Cursor = None) -> Page[GroupInvitationOut]:
    return _invitations_page(*await groups.my_invitations(session, principal, limit=limit,
                                                          cursor=cursor))


@groups_router.post("/invitations/{invitation_id}/accept", status_code=201,
                    response_model=GroupMemberOut,
                    summary="Accept an invitation: join the group with the role it names")
async def accept_invitation(invitation_id: uuid.UUID, principal: CurrentPrincipal,
                            session: DbSession) -> GroupMemberOut:
    return _member_out(await groups.accept_invitation(session, principal, invitation_id))


@groups_router.post("/invitations/{invitation_id}/decline", status_code=204,
                    summary="Decline an invitation (it is gone)")
async def decline_invitation(invitation_id: uuid.UUID, principal: CurrentPrincipal,
                             session: DbSession) -> Response:
    await groups.decline_invitation(session, principal, invitation_id)
    return _no_content()


@groups_router.get("/{group_id:uuid}", response_model=GroupOut, summary="A group")
async def get_group(group_id: uuid.UUID, principal: CurrentPrincipal, session: DbSession) -> GroupOut:
    return _group_out(await groups.get_group(session, principal, group_id))


@groups_router.patch("/{group_id:uuid}", response_model=GroupOut, summary="Rename or describe a group")
async def patch_group(group_id: uuid.UUID, body: GroupPatchIn, principal: CurrentPrincipal,
                      session: DbSession) -> GroupOut:
    sent = body.model_fields_set
    view = await groups.update_group(session, principal, group_id, name=body.name,
                                     set_name="name" in sent, description=body.description,
                                     set_description="description" in sent)
    return _group_out(view)


@groups_router.delete("/{group_id:uuid}", status_code=204, summary="Delete a group")
async def delete_group(group_id: uuid.UUID, principal: CurrentPrincipal,
                       session: DbSession) -> Response:
    await groups.delete_group(session, principal, group_id)
    return _no_content()


def _member_out(m: groups.Member) -> GroupMemberOut:
    return GroupMemberOut(user_id=m.user_id, username=m.username, full_name=m.full_name, role=m.role,
                     joined_at=m.joined_at)


@groups_router.get("/{group_id:uuid}/members", response_model=list[GroupMemberOut], summary="Members")
async def list_members(group_id: uuid.UUID, principal: CurrentPrincipal,
                       session: DbSession) -> list[GroupMemberOut]:
    return [_member_out(m) for m in await groups.list_members(session, principal, group_id)]


@groups_router.post(
    "/{group_id:uuid}/members", status_code=201, response_model=GroupMemberOut,
    responses={201: {"description": "Added (a site administrator or the operator token)"},
               202: {"model": GroupInvitationOut,
                     "description": "Invited (a group admin): the person becomes a member when "
                                    "they accept; inviting them again answers the same pending "
                                    "invitation"}},
    summary="Add a member (site administrators) or invite someone (group admins)")
async def add_member(group_id: uuid.UUID, body: MemberIn, principal: CurrentPrincipal,
                     session: DbSession) -> GroupMemberOut | JSONResponse:
    added = await groups.add_member(session, principal, group_id, user=body.user, role=body.role)
    if isinstance(added, groups.Invitation):
        return JSONResponse(status_code=status.HTTP_202_ACCEPTED,
                            content=_invitation_out(added).model_dump(mode="json"))
    return _member_out(added)


@groups_router.patch("/{group_id:uuid}/members/{user_id}", response_model=GroupMemberOut,
                     summary="Change a member's role (group admins)")
async def patch_member(group_id: uuid.UUID, user_id: uuid.UUID, body: MemberPatchIn,
                       principal: CurrentPrincipal, session: DbSession) -> GroupMemberOut:
    await groups.set_member_role(session, principal, group_id, user_id, body.role)
    members = await groups.list_members(session, principal, group_id)
    return _member_out(next(m for m in members if m.user_id == user_id))


@groups_router.delete("/{group_id:uuid}/members/{user_id}", status_code=204,
                      summary="Remove a member (group admins) or leave (yourself)")
async def remove_member(group_id: uuid.UUID, user_id: uuid.UUID, principal: CurrentPrincipal,
                        session: DbSession) -> Response:
    await groups.remove_member(session, principal, group_id, user_id)
    return _no_content()


@groups_router.get("/{group_id:uuid}/invitations", response_model=Page[GroupInvitationOut],
                   summary="The group's pending invitations, newest first (group admins)")
async def list_group_invitations(group_id: uuid.UUID, principal: CurrentPrincipal,
                                 session: DbSession, limit: Limit = DEFAULT_LIMIT,
                                 cursor: Cursor = None) -> Page[GroupInvitationOut]:
    return _invitations_page(*await groups.group_invitations(session, principal, group_id,
                                                             limit=limit, cursor=cursor))


@groups_router.delete("/{group_id:uuid}/invitations/{invitation_id}", status_code=204,
                      summary="Revoke a pending invitation (group admins)")
async def revoke_invitation(group_id: uuid.UUID, invitation_id: uuid.UUID,
                            principal: CurrentPrincipal, session: DbSession) -> Response:
    await groups.revoke_invitation(session, principal, group_id, invitation_id)
    return _no_content()


# --- /admin/limits (docs/operations.md, "Rate limits and quotas") -----------------------


@limits_router.get("", response_model=RateLimitsOverviewOut,
                   summary="The default rate limits and every override (administrators)")
async def list_limits(principal: AdminPrincipal, session: DbSession,
                      settings: SettingsDep) -> RateLimitsOverviewOut:
    rows = await ratelimits.list_overrides(session, principal, settings)
    return RateLimitsOverviewOut(
        defaults=RateLimitDefaultsOut(requests_per_minute=settings.rate_limit_requests_per_minute,
                                      streams=settings.rate_limit_streams,
                                      lease_s=settings.rate_limit_lease_s),
        overrides=[RateLimitsOut.model_validate(r) for r in rows])


@limits_router.get("/{kind}/{row_id}", response_model=RateLimitsOut,
                   summary="A user's or API key's rate limits (administrators)")
async def get_limits(kind: ratelimits.SubjectPath, row_id: uuid.UUID, principal: AdminPrincipal,
                     session: DbSession, settings: SettingsDep) -> RateLimitsOut:
    row = await ratelimits.get_limits(session, principal, settings, _kind(kind), row_id)
    return RateLimitsOut.model_validate(row)


@limits_router.put("/{kind}/{row_id}", response_model=RateLimitsOut,
                   summary="Set a user's or API key's rate limits (administrators; null: the "
                           "default, 0: unlimited)")
async def put_limits(kind: ratelimits.SubjectPath, row_id: uuid.UUID, body: RateLimitsIn,
                     principal: AdminPrincipal, session: DbSession,
                     settings: SettingsDep) -> RateLimitsOut:
    row = await ratelimits.set_limits(
        session, principal, settings, _kind(kind), row_id,
        requests_per_minute=body.requests_per_minute, streams=body.streams)
    return RateLimitsOut.model_validate(row)


def _kind(path: str) -> str:
    return "user" if path == "users" else "api_key"


router = RoostRouter()
for _sub in (auth_router, users_router, keys_router, groups_router, limits_router):
    router.include_router(_sub)
