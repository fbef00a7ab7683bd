"""Every domain and what it plugs into the app: the one list ``create_app``, the worker,
the CLI, Alembic and the tests read.

A new domain adds one :class:`Domain` entry here (see docs/architecture.md, "Adding a
domain").  Entries name ``module`` or ``module:attribute`` as strings and are imported
only by whoever needs them: the CLI never imports the HTTP routes, the worker never
imports FastAPI.  The order is the layer order (a domain imports only those above it in
the list, never those below); routers are mounted in this order.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from roost.db.base import Base

if TYPE_CHECKING:
    import typer
    from sqlalchemy import MetaData


@dataclass(frozen=True)
class Domain:
    name: str
    models: str | None = None
    """Module with the ORM models (Alembic and the test schema need every table)."""
    routers: tuple[str, ...] = ()
    """``module:attribute`` of each ``APIRouter``, mounted by ``create_app``."""
    resolvers: tuple[str, ...] = ()
    """``module:attribute`` of each bearer-credential resolver (``roost.http.auth``)."""
    jobs: str | None = None
    """Module with the task handlers and schedules (``roost.tasks.handlers.task``)."""
    startup: str | tuple[str, ...] | None = None
    """``module:attribute`` of a lifespan (async context manager taking the app) the API
    server enters at start-up, after the database is open, and exits at shutdown; a
    tuple for several, entered in order."""
    worker_startup: str | None = None
    """``module:attribute`` of an async context manager factory ``(database, settings)`` a
    standalone ``roost worker`` enters before it takes jobs and exits after (``roost
    serve``'s own worker shares the server's ``startup`` instead)."""
    cli: str | None = None
    """``module:attribute`` of ``register(app: typer.Typer)``, adding the commands."""
    commands: tuple[str, ...] = ()
    """The top-level command names ``cli`` adds (``roost users``...): ``roost`` imports a
    domain's command module only when one of these is run (tests/test_cli_startup.py
    checks the list against what ``register`` adds)."""
    settings: str | None = None
    """Module declaring the domain's runtime settings (``roost.system_settings.declare``),
    imported wherever they are listed (the admin API, ``roost settings``)."""


DOMAINS: tuple[Domain, ...] = (
    # The floor every other domain stands on: audit (imports no domain), tasks (records
    # audit entries), identity (schedules its clean-up with tasks).
    Domain(
        "audit",
        models="roost.audit.models",
        routers=("roost.audit.routes:router",),
        startup="roost.audit.startup:lifespan",  # the chainer: links audit rows after commit
        cli="roost.audit.cli:register",
        commands=("audit",),
    ),
    Domain(
        "tasks",
        models="roost.tasks.models",
        routers=("roost.tasks.routes:router",),
        jobs="roost.tasks.jobs",
        cli="roost.tasks.cli:register",
        commands=("tasks", "worker"),
    ),
    Domain(
        "analytics",  # the ClickHouse outbox and streaming metrics (docs/analytics.md)
        models="roost.analytics.models",
        routers=("roost.analytics.routes:router",),
        jobs="roost.analytics.jobs",  # analytics.export (outbox to ClickHouse/chDB)
    ),
    Domain(
        "system_settings",  # typed runtime settings, NOTIFY-invalidated (docs/settings.md)
        models="roost.system_settings.models",
        routers=("roost.system_settings.routes:router",),
        startup="roost.system_settings.startup:lifespan",  # LISTEN: drops changed keys
        worker_startup="roost.system_settings.runtime:worker_listener",  # the same in `roost worker`
        cli="roost.system_settings.cli:register",  # roost settings ls|get|set|reset
        commands=("settings",),
    ),
    Domain(
        "identity",
        models="roost.identity.models",
        routers=("roost.identity.routes:router",),
        resolvers=("roost.identity.resolver:resolve_bearer",),
        startup="roost.identity.startup:lifespan",  # closes the rate limiter's pool
        jobs="roost.identity.jobs",
        settings="roost.identity.config",  # open_registration
        cli="roost.identity.cli:register",
        commands=("users", "keys", "limits"),
    ),
    Domain(
        "billing",  # plans, subscriptions, credits, the usage ledger, invoices (docs/billing.md)
        models="roost.billing.models",
        routers=("roost.billing.routes:router",  # plans, subscriptions, prices
                 "roost.billing.usage_routes:router",  # balance, usage events, reports
                 "roost.billing.invoice_routes:router",
                 "roost.billing.stripe_routes:router"),  # the webhook
        jobs="roost.billing.jobs",  # reservation sweeper, invoices at period end, renewals
        settings="roost.billing.runtime_settings",
        cli="roost.billing.cli:register",  # roost billing plans|subscribe|invoice, roost usage
        commands=("billing", "usage"),
    ),
    Domain(
        "llm",
        models="roost.llm.models",
        routers=("roost.llm.routes:router", "roost.llm.openai_routes:router"),
        jobs="roost.llm.jobs",
        startup="roost.llm.startup:lifespan",  # the gateway; the local model on a fresh install
    ),
    Domain(
        "prompts",  # versioned system prompts by key (docs/prompts.md)
        models="roost.prompts.models",
        routers=("roost.prompts.routes:router",),
        startup="roost.prompts.startup:lifespan",  # factory defaults (agent.system, chat.system)
        cli="roost.prompts.cli:register",  # roost prompts ls|show|publish
        commands=("prompts",),
    ),
    Domain(
        "workspace",  # projects and prioritised tasks (docs/workspace.md)
        models="roost.workspace.models",
        routers=("roost.workspace.routes:projects", "roost.workspace.routes:tasks"),
        jobs="roost.workspace.jobs",  # workspace.rescore (the due-date term of scores)
        cli="roost.workspace.cli:register",  # roost projects|tasks-board
        commands=("projects", "tasks-board"),
    ),
    Domain(
        "calendar",  # calendars and events: RFC 5545 recurrence, iCalendar (docs/calendar.md)
        models="roost.calendar.models",
        routers=("roost.calendar.routes:router",),
        cli="roost.calendar.cli:register",  # roost calendar import|export|agenda
        commands=("calendar",),
    ),
    Domain(
        "chat",
        models="roost.chat.models",
        routers=("roost.chat.routes:router",),
        jobs="roost.chat.jobs",
        startup="roost.chat.startup:lifespan",  # refuses to start on wrong message keys
        settings="roost.chat.runtime_settings",  # chat_context_messages, chat_max_message_chars
        cli="roost.chat.cli:register",  # after identity's: adds to the `keys` group
        commands=("keys",),
    ),
    Domain(
        "knowledge",
        models="roost.knowledge.models",
        routers=("roost.knowledge.routes:router",),
        jobs="roost.knowledge.jobs",
        cli="roost.knowledge.cli:register",
        commands=("ingest",),
    ),
    Domain(
        "tools",  # above knowledge: the built-in knowledge search tool
        models="roost.tools.models",
        routers=("roost.tools.routes:router", "roost.tools.lsp_routes:router"),
        jobs="roost.tools.jobs",
        startup="roost.tools.startup:lifespan",  # the caller's tools at /mcp (a provider)
        cli="roost.tools.cli:register",
        commands=("tools", "mcp", "lsp"),
    ),
    Domain(
        "memory",  # facts, the temporal entity graph, recall (docs/memory.md)
        models="roost.memory.models",
        routers=("roost.memory.routes:router",),
        jobs="roost.memory.jobs",  # memory.learn (extraction and reconciliation)
        cli="roost.memory.cli:register",  # roost memory add|search|ls|forget|graph
        commands=("memory",),
    ),
    Domain(
        "agents",  # above tools: agents call tools through the registry
        models="roost.agents.models",
        routers=("roost.agents.routes:router", "roost.agents.run_routes:router",
                 "roost.agents.mail_routes:router"),
        jobs="roost.agents.jobs",
        startup=("roost.agents.startup:lifespan",  # the LISTEN connection for run events
                 "roost.agents.mail_startup:lifespan"),  # the SMTP listener (ROOST_SMTP_LISTEN)
        cli="roost.agents.cli:register",  # roost personas|agents|runs|secrets
        commands=("personas", "agents", "runs", "secrets"),
    ),
    Domain(
        "debates",  # multi-agent debates with voting (docs/debates.md)
        models="roost.debates.models",
        routers=("roost.debates.routes:router",),
        jobs="roost.debates.jobs",  # debates.run (turns, ballots, the vote; resumable)
        cli="roost.debates.cli:register",  # roost debates start|show|ls
        commands=("debates",),
    ),
    Domain(
        "workflows",  # XYFlow graphs, validated and versioned (docs/workflows.md)
        models="roost.workflows.models",
        routers=("roost.workflows.routes:router", "roost.workflows.run_routes:router"),
        jobs="roost.workflows.jobs",  # workflows.node (a run's calling nodes), approval timeouts
        cli="roost.workflows.cli:register",  # roost workflows ls|validate|publish|run|resume
        commands=("workflows",),
    ),
    Domain(
        "codeversions",  # git-backed code versions of sessions and runs (docs/codeversions.md)
        models="roost.codeversions.models",
        routers=("roost.codeversions.routes:router",),
        jobs="roost.codeversions.jobs",  # codeversions.validate (the configured checks)
    ),
    Domain(
        "mcpserver",  # on top: offers other domains' capabilities at /mcp (docs/mcp.md)
        routers=("roost.mcpserver.routes:router",),
        startup="roost.mcpserver.startup:lifespan",  # the MCP SDK's session manager
    ),
    Domain(
        "console",  # the web console at /console: pages over every domain's services
        routers=("roost.console.routes:router", "roost.console.routes:root_router"),
    ),
)


def load(target: str) -> Any:
    """``module:attribute`` (or ``module``) -> the object."""
    module_name, _, attribute = target.partition(":")
    module = importlib.import_module(module_name)
    return getattr(module, attribute) if attribute else module


def _each(field: str, domains: Iterable[Domain] | None = None) -> list[Any]:
    found: list[Any] = []
    for domain in DOMAINS if domains is None else domains:
        value = getattr(domain, field)
        if value is None:
            continue
        found.extend([load(v) for v in value] if isinstance(value, tuple) else [load(value)])
    return found


def import_models() -> MetaData:
    """Import every domain's models; ``Base.metadata`` then holds every table (Alembic's
    ``target_metadata``, the migration-drift test)."""
    _each("models")
    return Base.metadata


def routers() -> list[Any]:
    """Every domain's ``APIRouter``s, in mounting order."""
    return _each("routers")


def resolvers() -> list[Any]:
    """Every bearer-credential resolver, in the order they are tried."""
    return _each("resolvers")


def startup_hooks() -> list[Any]:
    """The lifespans the API server enters at start-up, in order."""
    return _each("startup")


def job_modules() -> list[str]:
    return [d.jobs for d in DOMAINS if d.jobs is not None]


def use_task_handlers() -> None:
    """Tell the task registry which modules hold the handlers; it imports them when a
    process first needs a task type (the worker at start-up).  Cheap: imports nothing."""
    from roost.tasks.handlers import use_job_modules, use_worker_services

    use_job_modules(job_modules())
    use_worker_services([d.worker_startup for d in DOMAINS if d.worker_startup is not None])


def declare_runtime_settings() -> None:
    """Import every domain's runtime-settings module: the registry then knows them all."""
    _each("settings")


def cli_commands() -> dict[str, tuple[Domain, ...]]:
    """Each top-level command name -> the domains adding to it, in layer order (``keys``
    has two: identity makes the group, chat adds ``rotate-messages``).  Imports nothing."""
    providers: dict[str, tuple[Domain, ...]] = {}
    for domain in DOMAINS:
        for name in domain.commands:
            providers[name] = (*providers.get(name, ()), domain)
    return providers


def register_cli(app: typer.Typer, domains: Iterable[Domain] | None = None) -> None:
    """Add the domains' commands (every domain's by default) to ``app``; every runtime
    setting is declared first (``roost settings`` lists them all)."""
    declare_runtime_settings()
    for register in _each("cli", domains):
        register(app)
