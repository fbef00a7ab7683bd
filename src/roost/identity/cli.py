"""``roost users create|approve|list|cleanup-sessions|revoke-sessions``,
``roost keys create|list|revoke`` and ``roost limits show|set``.  They act as the
operator (administrator rights)."""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich.console import Console

from roost.clitools import (
    MAX_DAYS,
    MAX_LIST,
    add_text_row,
    fail,
    id_table,
    parse_input,
    print_table,
    printable,
    resolve_id,
    run_in_transaction,
    stdin,
)

T = TypeVar("T")

users_app = typer.Typer(help="User accounts.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
limits_app = typer.Typer(help="Rate limits per user and API key (requests per minute, "
                              "concurrent streams).", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


_run = run_in_transaction

# identity.models.STATUSES, as a type typer offers as choices (a test keeps them equal).
UserStatus = Literal["pending_approval", "active", "suspended"]


async def _user_by_login(session: Any, login: str) -> Any:
    from roost.errors import NotFound
    from roost.identity.accounts import find_user

    user = await find_user(session, login)
    if user is None:
        raise NotFound(f"no account with username or email {login!r}")
    return user


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return stdin().readline().rstrip("\r\n")
    if sys.stdin is None or not sys.stdin.isatty():  # None: closed (`<&-`)
        raise fail("password needed", "no terminal to prompt on: pipe it with "
                   "--password-stdin, or give --no-password", code=2)
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Argument(help="3-64 characters: letters, digits, . _ -")],
    email: Annotated[str, typer.Option(help="The account's email address.")],
    admin: Annotated[bool, typer.Option("--admin", help="Give the account the admin role.")] = False,
    full_name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    password_stdin: Annotated[bool, typer.Option(
        "--password-stdin", help="Read the password from the first line of stdin.")] = False,
    no_password: Annotated[bool, typer.Option(
        "--no-password", help="No password: the account signs in with API keys or passkeys.")] = False,
) -> None:
    """Create an active account (the first account ever created becomes the root)."""
    from roost.identity.accounts import create_user
    from roost.principal import SYSTEM

    password = None if no_password else _read_password(password_stdin)

    async def go(session: Any) -> Any:
        return await create_user(session, SYSTEM, username=username, email=email,
                                 password=password, full_name=full_name,
                                 role="admin" if admin else "user")

    user = _run(go)
    extra = " (root)" if user.is_root else ""
    console.print(f"created {user.username} <{user.email}> role={user.role}{extra} id={user.id}",
                  markup=False)


@users_app.command("approve")
def users_approve(login: Annotated[str, typer.Argument(help="Username or email.")]) -> None:
    """Approve an account that is pending approval."""
    from roost.identity.accounts import approve
    from roost.principal import SYSTEM

    async def go(session: Any) -> Any:
        user = await _user_by_login(session, login)
        return await approve(session, SYSTEM, user.id)

    user = _run(go)
    console.print(f"{user.username} is {user.status}")


@users_app.command("list")
def users_list(
    status: Annotated[UserStatus | None, typer.Option(help="Only accounts in this status.")
                      ] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIST)] = 100,
) -> None:
    """List accounts."""
    from roost.identity.accounts import list_users
    from roost.principal import SYSTEM

    rows = _run(lambda session: list_users(session, SYSTEM, status=status, limit=limit))
    table = id_table("username", "email", "role", "status", "tier", "last login", "id")
    for u in rows:
        role = u.role + (" (root)" if u.is_root else "")
        last = u.last_login_at.strftime("%Y-%m-%d %H:%M") if u.last_login_at else "-"
        add_text_row(table, u.username, u.email, role, u.status, u.tier, last, str(u.id))
    print_table(console, table)


@users_app.command("revoke-sessions")
def users_revoke_sessions(login: Annotated[str, typer.Argument(help="Username or email.")]) -> None:
    """End every sign-in session of an account (takes effect on its next request)."""
    from roost.identity.sessions import revoke_all_sessions
    from roost.principal import SYSTEM

    async def go(session: Any) -> int:
        user = await _user_by_login(session, login)
        return await revoke_all_sessions(session, SYSTEM, user.id)

    console.print(f"ended {_run(go)} session(s)")


@users_app.command("cleanup-sessions")
def users_cleanup_sessions() -> None:
    """Delete expired sessions, expired sign-in challenges, old lockout counters and API
    keys revoked or expired 30 days ago.

    The task queue runs this hourly as ``identity.cleanup_sessions``."""
    from roost.config import get_settings
    from roost.identity.sessions import cleanup_expired

    window = get_settings().login_failure_window_s
    report = _run(lambda session: cleanup_expired(session, failure_window_s=window))
    console.print(f"deleted {report.sessions} session(s), {report.challenges} challenge(s), "
                  f"{report.throttle_rows} lockout counter(s), {report.api_keys} API key(s)")


@keys_app.command("create")
def keys_create(
    user: Annotated[str, typer.Option("--user", help="Username or email of the key's owner.")],
    name: Annotated[str, typer.Option(help="What the key is for.")] = "cli",
    expires_days: Annotated[int | None, typer.Option(
        min=1, max=MAX_DAYS, help="Expire after N days.")] = None,
) -> None:
    """Create an API key; it is printed once (stdout), store it now."""
    from roost.db.base import utcnow
    from roost.identity.apikeys import create_api_key
    from roost.identity.schemas import ApiKeyIn
    from roost.principal import SYSTEM

    name = parse_input(ApiKeyIn, {"name": name}).name  # refused as the API refuses it
    expires = utcnow() + timedelta(days=expires_days) if expires_days else None

    async def go(session: Any) -> Any:
        owner = await _user_by_login(session, user)
        return await create_api_key(session, SYSTEM, name=name, expires_at=expires,
                                    user_id=owner.id)

    created = _run(go)
    err.print(f"API key {created.row.prefix} for {user} (shown once):", markup=False)
    print(created.key)  # plain stdout so scripts can capture it


@keys_app.command("list")
def keys_list(user: Annotated[str, typer.Option("--user", help="Username or email.")]) -> None:
    """List a user's active keys (prefix, name, created, last used)."""
    from roost.identity.apikeys import list_api_keys
    from roost.principal import SYSTEM

    async def go(session: Any) -> Any:
        owner = await _user_by_login(session, user)
        return await list_api_keys(session, SYSTEM, user_id=owner.id)

    table = id_table("id", "prefix", "name", "created", "last used", "expires", wrap=("name",))
    for k in _run(go):
        add_text_row(table, str(k.id), k.prefix, k.name, k.created_at.strftime("%Y-%m-%d %H:%M"),
                     k.last_used_at.strftime("%Y-%m-%d %H:%M") if k.last_used_at else "-",
                     k.expires_at.strftime("%Y-%m-%d") if k.expires_at else "-")
    print_table(console, table)


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(
        help="The key's id as `roost keys list` prints it, or a unique start of it.")]) -> None:
    """Revoke an API key (refused from the next request on)."""
    from roost.identity.apikeys import revoke_api_key
    from roost.identity.models import ApiKey
    from roost.principal import SYSTEM

    async def go(session: Any) -> Any:
        return await revoke_api_key(session, SYSTEM, await resolve_id(session, ApiKey.id, key_id,
                                                                      "API key"))

    row = _run(go)
    # The name is any user's text: escapes shown as text, never acted on by the terminal.
    console.print(f"revoked {row.prefix} ({printable(row.name)})", markup=False)


# --- roost limits (docs/operations.md, "Rate limits and quotas") --------------------------


def _limit(value: str | None, what: str) -> int | str | None:
    """``None``: keep; ``"default"``: clear the override; else a number >= 0."""
    if value is None:
        return None
    if value.strip().lower() == "default":
        return "default"
    try:
        number = int(value)
    except ValueError:
        raise fail("Invalid input", f"{what} must be a number (0: unlimited) or 'default'"
                   ) from None
    if not 0 <= number <= (1_000_000 if what == "--rpm" else 10_000):
        raise fail("Invalid input", f"{what} is out of range (0: unlimited)")
    return number


def _limits_table(rows: list[Any]) -> Any:
    def show(value: int | None, eff: int) -> str:
        shown = "unlimited" if eff == 0 else str(eff)
        return shown if value is not None else f"{shown} (default)"

    table = id_table("kind", "name", "requests/min", "streams", "id")
    for r in rows:
        add_text_row(table, r.kind, r.name,
                     show(r.requests_per_minute, r.effective_requests_per_minute),
                     show(r.streams, r.effective_streams), str(r.id))
    return table


@limits_app.command("show")
def limits_show() -> None:
    """The defaults (ROOST_RATE_LIMIT_*) and every user and API key with an override."""
    from roost.config import get_settings
    from roost.identity.ratelimits import list_overrides
    from roost.principal import SYSTEM

    settings = get_settings()
    rows = _run(lambda session: list_overrides(session, SYSTEM, settings))

    def unlimited(n: int) -> str:
        return "unlimited" if n == 0 else str(n)

    console.print(f"defaults per user: {unlimited(settings.rate_limit_requests_per_minute)} "
                  f"requests/min, {unlimited(settings.rate_limit_streams)} streams "
                  "(API keys: only their own overrides, within their user's)", markup=False)
    if rows:
        print_table(console, _limits_table(rows))
    else:
        console.print("no overrides")


@limits_app.command("set")
def limits_set(
    user: Annotated[str | None, typer.Option("--user", help="Username or email.")] = None,
    key: Annotated[str | None, typer.Option(
        "--key", help="An API key's id (`roost keys list`), or a unique start of it.")] = None,
    rpm: Annotated[str | None, typer.Option(
        "--rpm", help="Requests per minute: a number (0: unlimited) or 'default'.")] = None,
    streams: Annotated[str | None, typer.Option(
        "--streams", help="Concurrent streams: a number (0: unlimited) or 'default'.")] = None,
) -> None:
    """Set a user's or an API key's limits (options not given are kept); takes effect on
    its next request, in every process."""
    from roost.config import get_settings
    from roost.identity.models import ApiKey
    from roost.identity.ratelimits import get_limits, set_limits
    from roost.principal import SYSTEM

    if (user is None) == (key is None):
        raise fail("Invalid input", "give exactly one of --user and --key")
    new_rpm, new_streams = _limit(rpm, "--rpm"), _limit(streams, "--streams")
    if new_rpm is None and new_streams is None:
        raise fail("Invalid input", "give --rpm, --streams or both")
    settings = get_settings()

    async def go(session: Any) -> Any:
        if user is not None:
            kind, row_id = "user", (await _user_by_login(session, user)).id
        else:
            assert key is not None
            kind, row_id = "api_key", await resolve_id(session, ApiKey.id, key, "API key")
        now = await get_limits(session, SYSTEM, settings, kind, row_id)

        def pick(given: int | str | None, current: int | None) -> int | None:
            if given is None:
                return current
            return None if given == "default" else int(given)

        return await set_limits(session, SYSTEM, settings, kind, row_id,
                                requests_per_minute=pick(new_rpm, now.requests_per_minute),
                                streams=pick(new_streams, now.streams))

    print_table(console, _limits_table([_run(go)]))


def register(app: typer.Typer) -> None:
    """Add ``roost users``, ``roost keys`` and ``roost limits`` (``roost.domains`` calls this)."""
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")
    app.add_typer(limits_app, name="limits")
