"""``roost billing plans [add|deactivate]``, ``subscribe``, ``subscriptions``, ``cancel``
and ``prices [set]`` (added by roost.billing.cli).

They act as the operator (an administrator) through the same services as the API, so
the same checks and audit records apply.  Users are named by username or e-mail, plans
by key (or id)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.billing import plans, prices, subscriptions
from roost.billing.models import SUBSCRIPTION_STATUSES, ModelPrice, Plan
from roost.billing.schemas import (
    LIMIT_KEYS,
    MAX_CREDITS,
    MAX_TRIAL_DAYS,
    PlanCreate,
    PriceUpdate,
    StatusChange,
    SubscriptionCreate,
)
from roost.clitools import (
    MAX_LIST,
    fail,
    id_table,
    parse_input,
    print_table,
    run_in_transaction,
    when,
)
from roost.identity.models import Group, User
from roost.principal import OPERATOR

console = Console()
plans_app = typer.Typer(help="Plans: price, included credits, limits, trial days. Without a "
                             "command: the plans as a table.", invoke_without_command=True)
prices_app = typer.Typer(help="Model prices per million tokens. Without a command: the "
                              "price table.", invoke_without_command=True)

def _limits(pairs: list[str]) -> dict[str, Any] | None:
    """``runs_per_day=10``, ``models_allowed=gpt-4o*,claude-*``, ``max_agents=none``."""
    if not pairs:
        return None
    limits: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or name not in LIMIT_KEYS:
            raise fail("Invalid --limit", f"{pair!r}: give NAME=VALUE with NAME one of "
                       f"{', '.join(LIMIT_KEYS)}")
        if raw.lower() in ("", "none", "null"):
            limits[name] = None
        elif name == "models_allowed":
            patterns = [p.strip() for p in raw.split(",") if p.strip()]
            if not patterns:  # an empty list would allow every model: say none for that
                raise fail("Invalid --limit", "models_allowed takes model names or globs "
                           "separated by commas (gpt-4o*,claude-*), or none for every model")
            limits[name] = patterns
        else:
            try:
                limits[name] = int(raw)
            except ValueError:
                raise fail("Invalid --limit", f"{name} takes a whole number or none") from None
    return limits


def _limits_text(limits: dict[str, Any]) -> str:
    shown = []
    for name in LIMIT_KEYS:
        value = limits.get(name)
        if value is not None:
            shown.append(f"{name}={','.join(value) if isinstance(value, list) else value}")
    return " ".join(shown) or "-"


# --- plans -------------------------------------------------------------------------------


@plans_app.callback()
def plans_ls(ctx: typer.Context, all_: Annotated[bool, typer.Option(
        "--all", help="Include inactive plans.")] = False) -> None:
    """The plans as a table (with a command: that command)."""
    if ctx.invoked_subcommand is not None:
        return

    async def go(session: AsyncSession) -> list[Plan]:
        rows, _ = await plans.list_plans(session, OPERATOR, include_inactive=all_, limit=500)
        return rows

    table = id_table("key", "name", "price", "period", "credits", "trial days", "limits",
                     "active", wrap=("name", "limits"))
    for p in run_in_transaction(go):
        table.add_row(p.key, Text(p.name), f"{p.price} {p.currency}", p.billing_period,
                      f"{p.included_credits:,}", str(p.trial_days),
                      Text(_limits_text(p.limits)), "yes" if p.active else "no")
    print_table(console, table)


@plans_app.command("add")
def plans_add(
    key: Annotated[str, typer.Argument(help="The plan's key (lower-case slug: pro, team).")],
    name: Annotated[str | None, typer.Option(help="Display name (default: the key).")] = None,
    price: Annotated[str, typer.Option(help="Price per period, e.g. 19.99.")] = "0",
    currency: Annotated[str, typer.Option(help="ISO 4217 code.")] = "USD",
    period: Annotated[str, typer.Option(help="month or year.")] = "month",
    credits: Annotated[int, typer.Option(min=0, max=MAX_CREDITS,
                                         help="Credits included per period.")] = 0,
    trial_days: Annotated[int, typer.Option(min=0, max=MAX_TRIAL_DAYS, help="Days of trial.")
                          ] = 0,
    description: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[list[str] | None, typer.Option(
        "--limit", help="NAME=VALUE, repeatable: runs_per_day=10, max_agents=3, "
                        "max_documents=100, models_allowed=gpt-4o*,claude-*")] = None,
) -> None:
    """Create a plan."""
    body = parse_input(PlanCreate, {"key": key, "name": name or key, "price": price,
                              "currency": currency, "billing_period": period,
                              "included_credits": credits, "trial_days": trial_days,
                              "description": description, "limits": _limits(limit or [])})

    async def go(session: AsyncSession) -> Plan:
        return await plans.create_plan(session, OPERATOR, body)

    plan = run_in_transaction(go)
    console.print(Text(f"Created plan {plan.key} ({plan.id}): {plan.price} {plan.currency} "
                       f"per {plan.billing_period}, {plan.included_credits:,} credits"))


@plans_app.command("deactivate")
def plans_deactivate(key: Annotated[str, typer.Argument(help="The plan's key or id.")]) -> None:
    """Deactivate a plan: nobody new subscribes, existing subscriptions keep it."""

    async def go(session: AsyncSession) -> Plan:
        return await plans.deactivate_plan(session, OPERATOR, key)

    console.print(Text(f"Plan {run_in_transaction(go).key} is inactive"))


# --- subscriptions -----------------------------------------------------------------------


def subscribe(
    user: Annotated[str, typer.Argument(help="Username or e-mail.")],
    plan: Annotated[str, typer.Argument(help="The plan's key or id.")],
    trial_days: Annotated[int | None, typer.Option(
        min=0, max=MAX_TRIAL_DAYS, help="Override the plan's trial days (0: none).")] = None,
) -> None:
    """Subscribe a user to a plan."""

    async def go(session: AsyncSession) -> subscriptions.SubscriptionView:
        user_id = await subscriptions.user_id_of(session, user)
        body = parse_input(SubscriptionCreate, {"user_id": user_id, "plan": plan,
                                          "trial_days": trial_days})
        return await subscriptions.create_subscription(session, OPERATOR, body)

    view = run_in_transaction(go)
    sub = view.subscription
    console.print(Text(f"Subscribed {user} to {view.plan.key}: subscription {sub.id}, "
                       f"{sub.status}, {sub.credits_limit:,} credits until "
                       f"{when(sub.current_period_end)}"))


def subscriptions_ls(
    status: Annotated[str | None, typer.Option(
        help="Only this status: " + ", ".join(SUBSCRIPTION_STATUSES) + ".")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's.")] = None,
    plan: Annotated[str | None, typer.Option(help="Only this plan's (key or id).")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIST)] = 100,
) -> None:
    """Subscriptions, newest first."""
    if status is not None and status not in SUBSCRIPTION_STATUSES:
        raise fail("Invalid --status", f"one of {', '.join(SUBSCRIPTION_STATUSES)}")

    async def go(session: AsyncSession) -> list[tuple[subscriptions.SubscriptionView, str]]:
        user_id = await subscriptions.user_id_of(session, user) if user else None
        rows, _ = await subscriptions.list_subscriptions(
            session, OPERATOR, status=status, user_id=user_id, plan=plan, limit=limit)
        names = await _subscriber_names(session, rows)
        return [(v, names.get(v.subscription.id, "-")) for v in rows]

    table = id_table("id", "subscriber", "plan", "status", "used", "limit", "balance",
                     "period end")
    for view, who in run_in_transaction(go):
        sub = view.subscription
        table.add_row(str(sub.id), Text(who), view.plan.key, sub.status,
                      f"{sub.credits_used:,}", f"{sub.credits_limit:,}",
                      f"{subscriptions.balance(sub):,}", when(sub.current_period_end))
    print_table(console, table)


async def _subscriber_names(session: AsyncSession,
                            rows: list[subscriptions.SubscriptionView]) -> dict[Any, str]:
    user_ids = {v.subscription.user_id for v in rows if v.subscription.user_id}
    group_ids = {v.subscription.group_id for v in rows if v.subscription.group_id}
    users = dict((await session.execute(select(User.id, User.username).where(
        User.id.in_(list(user_ids))))).tuples().all()) if user_ids else {}
    groups = dict((await session.execute(select(Group.id, Group.name).where(
        Group.id.in_(list(group_ids))))).tuples().all()) if group_ids else {}
    names: dict[Any, str] = {}
    for v in rows:
        sub = v.subscription
        if sub.user_id is not None:
            names[sub.id] = users.get(sub.user_id, str(sub.user_id))
        elif sub.group_id is not None:
            names[sub.id] = f"group {groups.get(sub.group_id, str(sub.group_id))}"
    return names


def cancel(
    user: Annotated[str, typer.Argument(help="Username or e-mail.")],
    reason: Annotated[str | None, typer.Option(help="Kept in the audit log.")] = None,
) -> None:
    """Cancel a user's live subscription."""
    # The API's checks on the reason (length, no control characters) before it is audited.
    body = parse_input(StatusChange, {"reason": reason})

    async def go(session: AsyncSession) -> subscriptions.SubscriptionView:
        sub = await subscriptions.find_user_subscription(session, OPERATOR, user)
        return await subscriptions.cancel(session, OPERATOR, sub.id, body.reason)

    sub = run_in_transaction(go).subscription
    console.print(Text(f"Canceled subscription {sub.id} of {user}"))


# --- prices ------------------------------------------------------------------------------


@prices_app.callback()
def prices_ls(ctx: typer.Context) -> None:
    """The model prices as a table (with a command: that command)."""
    if ctx.invoked_subcommand is not None:
        return

    async def go(session: AsyncSession) -> list[ModelPrice]:
        rows, _ = await prices.list_prices(session, limit=500)
        return rows

    table = id_table("pattern", "input / 1M", "output / 1M", "currency", "note",
                     wrap=("note",))
    for p in run_in_transaction(go):
        table.add_row(Text(p.model_pattern), str(p.input_per_million),
                      str(p.output_per_million), p.currency, Text(p.note or ""))
    print_table(console, table)


@prices_app.command("set")
def prices_set(
    pattern: Annotated[str, typer.Argument(help="A model name or a glob (gpt-4o*).")],
    input_: Annotated[str, typer.Option("--input", help="Price per million input tokens.")],
    output: Annotated[str, typer.Option("--output",
                                        help="Price per million output tokens.")],
    currency: Annotated[str | None, typer.Option(help="ISO 4217 code (default USD).")] = None,
    note: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create or change the price of a model name or glob."""
    checked = parse_input(PriceUpdate, {"input_per_million": input_, "output_per_million": output,
                                  "currency": currency, "note": note})
    assert checked.input_per_million is not None and checked.output_per_million is not None
    in_price: Decimal = checked.input_per_million
    out_price: Decimal = checked.output_per_million

    async def go(session: AsyncSession) -> ModelPrice:
        return await prices.set_price(session, OPERATOR, pattern, in_price, out_price,
                                      currency, note)

    price = run_in_transaction(go)
    console.print(Text(f"{price.model_pattern}: {price.input_per_million} in, "
                       f"{price.output_per_million} out per million tokens ({price.currency})"))


def add_commands(billing_app: typer.Typer) -> None:
    """Add this module's commands to ``roost billing``."""
    billing_app.add_typer(plans_app, name="plans")
    billing_app.command("subscribe")(subscribe)
    billing_app.command("subscriptions")(subscriptions_ls)
    billing_app.command("cancel")(cancel)
    billing_app.add_typer(prices_app, name="prices")
