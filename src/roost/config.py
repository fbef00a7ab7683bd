"""Settings: environment variables with the ``ROOST_`` prefix, or an optional ``.env`` file.

Secrets (signing key, encryption keys) are never printed: they are ``SecretStr`` and,
when not given by the environment, generated once into ``ROOST_DATA_DIR`` (0600).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Final, Literal
from urllib.parse import unquote, urlsplit

import platformdirs
from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from roost.textchars import is_invisible


def default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("roost", appauthor=False))


# Provider error kinds (``ProviderError.kind``) an operator may list in LLM_FALLBACK_ON.
FALLBACK_KINDS = ("unavailable", "timeout", "auth", "model_missing", "bad_response", "unsupported")


def parse_fallback_kinds(raw: str) -> frozenset[str]:
    """The kinds ROOST_LLM_FALLBACK_ON lists (checked when the settings load)."""
    kinds = frozenset(k.strip() for k in raw.split(",") if k.strip())
    unknown = kinds - set(FALLBACK_KINDS)
    if unknown:
        raise ValueError(f"unknown kinds {sorted(unknown)}; use any of {', '.join(FALLBACK_KINDS)}")
    return kinds


# A prompt's ``{{name}}`` placeholder (roost.prompts.render): here so that the settings can
# check ROOST_CHAT_SYSTEM_PROMPT with the very pattern prompts are rendered with.
PROMPT_PLACEHOLDER: Final = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]{0,63})\s*\}\}")
CHAT_PROMPT_VALUES: Final = ("date",)
"""The placeholders chat fills in ROOST_CHAT_SYSTEM_PROMPT (today's date, UTC)."""
# Any text between double braces (linear: no brace inside, so a scan ends at the next one).
_BRACED: Final = re.compile(r"\{\{([^{}]*)\}\}")


def invisible_placeholder(text: str) -> str | None:
    """The name of a ``{{name}}`` in ``text`` that holds an invisible character (a
    zero-width space, a joiner, a filler: a paste from a web page or a chat), which is no
    placeholder and would render as literal braces whatever the values; else None.  Any
    amount of white space around the name, as a placeholder may have."""
    for near in _BRACED.finditer(text):
        shown = "".join(c for c in near.group(1) if c.isspace() or not is_invisible(c))
        found = PROMPT_PLACEHOLDER.fullmatch(f"{{{{{shown}}}}}")
        if found is not None and PROMPT_PLACEHOLDER.fullmatch(near.group(0)) is None:
            return found.group(1)
    return None


def default_node_id() -> str:
    """This machine's host name (at most 255 characters), or "roost" when it has none."""
    return (socket.gethostname() or "roost")[:255]


# The personas' mail settings (docs/agents-mail.md): parsed here, where the settings are
# checked, so that a value `roost serve` cannot use is refused before it starts anything.
@dataclass(frozen=True)
class Relay:
    """Where outbound mail goes: ``smtps`` is TLS from the start; ``smtp`` upgrades with
    STARTTLS when the relay offers it (and must, to carry credentials off loopback)."""

    scheme: str
    host: str
    port: int
    username: str | None
    password: str | None = field(repr=False)  # never in a log line or traceback

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_relay_url(url: str) -> Relay:
    """``smtp://[user:pass@]host[:port]`` (port 587) or ``smtps://...`` (465)."""
    shape = "the SMTP relay URL must be smtp://[user:pass@]host[:port] or smtps://…"
    try:
        parts = urlsplit(url)
        port = parts.port  # out of range or not a number: ValueError
    except ValueError as exc:  # an unclosed [ of an IPv6 host too
        raise ValueError(f"{shape} ({exc})") from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError(shape)
    default = 465 if parts.scheme == "smtps" else 587
    return Relay(scheme=parts.scheme, host=parts.hostname, port=port or default,
                 username=unquote(parts.username) if parts.username else None,
                 password=unquote(parts.password) if parts.password else None)


def parse_listen(value: str) -> tuple[str, int]:
    """``host:port`` (``[::1]:2525`` for IPv6) of the SMTP listener."""
    host, _, port = value.rpartition(":")
    number = int(port)
    if not 0 <= number <= 65535:  # (0, a port the system picks, is how tests listen)
        raise ValueError(f"ROOST_SMTP_LISTEN: port {number} is not 0-65535")
    return host.strip("[]"), number


_HOST_NAME: Final = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*\.?")


def bind_host_problem(host: str) -> str | None:
    """Why ``host`` cannot be an address to listen on, or None: an IP address or a plain
    ASCII host name.  The name lookup would quietly bind "127.0.0.1" typed in fullwidth
    digits, or with a zero-width space in it, as 127.0.0.1, and the server would announce
    a URL no client can use."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if len(host) <= 253 and _HOST_NAME.fullmatch(host):
        return None
    shown = host.encode("ascii", "backslashreplace").decode("ascii")[:80]
    return f"{shown!r} is not an IP address or a host name (ASCII letters, digits, '-', '.')"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ROOST_", env_file=".env", env_file_encoding="utf-8", extra="ignore",
        hide_input_in_errors=True,  # a refused value may be a secret (a relay URL's password)
    )

    # --- database -------------------------------------------------------------------
    database_url: SecretStr | None = Field(
        default=None,
        description="PostgreSQL URL. Unset: an embedded PostgreSQL in DATA_DIR/pg is used.",
    )
    data_dir: Path = Field(default_factory=default_data_dir)
    # PgBouncer in transaction pooling mode cannot keep server-side prepared statements
    # across transactions: this turns off asyncpg's statement cache.
    pgbouncer: bool = False
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=10, ge=0, le=200)
    db_side_pool_size: int = Field(
        default=4, ge=1, le=50, description="Connections (opened as needed, then kept) for "
        "single statements that commit on their own while the caller's transaction is open "
        "(a model call's credit hold): never taken from the main pool, whose connections "
        "those callers may all hold",
    )
    db_connect_timeout_s: float = Field(default=5.0, gt=0, le=300)
    db_statement_timeout_ms: int = Field(default=30_000, ge=0, le=86_400_000)
    # Read replicas (docs/scale.md, "Read replicas").
    database_replica_urls: SecretStr | None = Field(
        default=None, description="Comma-separated PostgreSQL URLs of streaming replicas "
        "(hot standbys of ROOST_DATABASE_URL): the read routes listed in docs/scale.md run "
        "there; unset: everything runs on the primary",
    )
    replica_max_lag_s: float = Field(
        default=5.0, gt=0, le=86_400, description="A replica further behind the primary than this "
        "(seconds) is skipped until it catches up",
    )
    replica_check_interval_s: float = Field(
        default=1.0, gt=0, le=60, description="How long a replica's health (reachable, "
        "replay position, lag) is trusted before it is checked again",
    )

    # --- http -----------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    forwarded_allow_ips: str | None = Field(
        default=None, description="Comma-separated addresses (or `*`) of reverse proxies whose "
        "X-Forwarded-For and X-Forwarded-Proto are trusted: behind a TLS-terminating proxy the "
        "client's own address then counts for sign-in throttling and audit, and the console's "
        "cookies are Secure. Unset: the headers are ignored (anyone could send them)"
    )
    max_request_bytes: int = Field(default=10 * 1024 * 1024, ge=1024, le=1 << 30)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = Field(
        default="info", description="debug, info, warning, error or critical (any case)")
    log_json: bool = True
    # Traces (docs/operations.md, "Traces"): the `otel` extra; where they go is set by the
    # standard OTEL_* variables (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_TRACES_SAMPLER...).
    otel_enabled: bool = Field(
        default=False, description="Export OpenTelemetry traces by OTLP (http/protobuf) to "
        "OTEL_EXPORTER_OTLP_ENDPOINT (default http://localhost:4318); needs the `otel` extra"
    )
    otel_sql: Literal["transaction", "statement", "off"] = Field(
        default="transaction", description="SQL spans: one per transaction (with its "
        "statement count), one per statement, or none"
    )

    # --- keys (generated into data_dir when unset) ----------------------------------
    secret_key: SecretStr | None = Field(default=None, description="JWT signing key")
    message_keys: SecretStr | None = Field(
        default=None, description="Comma-separated Fernet keys; first encrypts, all decrypt"
    )
    secrets_key: SecretStr | None = Field(
        default=None, description="Base64 32-byte AES-256-GCM key for secrets at rest"
    )
    admin_token: SecretStr | None = Field(
        default=None, description="Bootstrap operator token with admin rights"
    )
    backup_passphrase: SecretStr | None = Field(
        default=None, description="`roost backup` encrypts with it, `roost restore` decrypts "
        "with it (docs/operations.md, \"Backup and restore\")"
    )

    # --- identity -------------------------------------------------------------------
    access_token_ttl_s: int = Field(default=900, ge=30, le=86_400,
                                    description="Lifetime of JWT access tokens")
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=300, le=3650 * 86_400,
                                     description="Lifetime of a login session (refresh token)")
    serve_worker: bool = Field(
        default=True, description="`roost serve` also runs a queue worker in its process "
        "(off when separate `roost worker` processes run); with --workers N, one in each "
        "API process"
    )
    serve_shutdown_grace_s: int = Field(
        default=15, gt=0, le=3600, description="On SIGTERM/SIGINT, how long `roost serve` lets "
        "in-flight requests finish; then it ends what is still open (event streams a client "
        "keeps reading, answers still streaming), giving their stream slots back, and stops"
    )
    serve_body_timeout_s: int = Field(
        default=60, ge=1, le=3600, description="How long a request's body may go without "
        "a byte arriving, from the end of its head on (docs/operations.md, \"Request "
        "limits\"): then the answer is a 408 and the connection is closed"
    )
    serve_head_timeout_s: int = Field(
        default=30, ge=1, le=3600, description="How long a request's line and headers may "
        "take to arrive, from the connection's opening or the head's first byte on "
        "(docs/operations.md, \"Request limits\"): then the answer is a 408 (or, when not "
        "a byte came, nothing) and the connection is closed"
    )
    serve_max_connections: int = Field(
        default=1000, ge=1, le=1_000_000, description="Open connections (and requests in "
        "progress) one API process serves; above it a new request is answered 503 at once "
        "(docs/operations.md, \"Request limits\"), before the process runs out of file "
        "descriptors"
    )
    serve_workers: int = Field(
        default=1, ge=1, le=64, description="API processes `roost serve` runs on its one port "
        "(`--workers`); above 1 a supervisor process starts and replaces them (docs/scale.md)"
    )
    open_registration: bool = Field(
        default=False, description="New self-registered accounts start active, not pending"
    )
    login_max_failures_per_account: int = Field(default=5, ge=1, le=1_000_000)
    login_max_failures_per_ip: int = Field(default=20, ge=1, le=1_000_000)
    login_failure_window_s: int = Field(default=900, ge=1, le=365 * 86_400)
    login_lockout_s: int = Field(default=900, ge=1, le=365 * 86_400)
    # Rate limits (docs/operations.md, "Rate limits and quotas"); an administrator's
    # override per user or API key replaces these defaults.
    rate_limit_requests_per_minute: int = Field(
        default=0, ge=0, le=1_000_000, description="Authenticated requests per minute each "
        "user and each API key may make (0 = unlimited)",
    )
    rate_limit_streams: int = Field(
        default=0, ge=0, le=10_000, description="Streams (chat, /v1 stream=true, run events) "
        "each user and each API key may hold open at once (0 = unlimited)",
    )
    rate_limit_lease_s: int = Field(
        default=60, ge=5, le=3600, description="A stream's slot expires this long after its "
        "last renewal (renewed every third of it while open): how long a crashed process's "
        "streams keep counting",
    )
    webauthn_rp_id: str = Field(default="localhost", description="Passkey relying party id")
    webauthn_rp_name: str = "Roost"
    webauthn_origins: str = Field(
        default="http://localhost:8000", description="Comma-separated allowed page origins"
    )
    # Per-principal transactions run as this role (SET LOCAL ROLE) so row-level security
    # applies; "" when the connecting role itself is the non-owner application role.
    db_app_role: str = Field(default="roost_app", pattern=r"^([a-z_][a-z0-9_]{0,62})?$")

    # --- audit ----------------------------------------------------------------------
    audit_retention_days: int | None = Field(
        default=None, ge=1, le=36_500,  # a hundred years, as `roost audit prune` takes
        description="Audit records older than this are deleted (hourly job audit.retention); "
        "unset: kept forever")
    audit_chain_interval_ms: int = Field(
        default=200, ge=10, le=60_000,
        description="How often each process's chainer links new audit rows into the chain")

    # --- chat and the LLM gateway ---------------------------------------------------
    chat_max_message_chars: int = Field(
        default=32_000, ge=1, le=10_000_000, description="Longest message content accepted (characters)"
    )
    chat_context_messages: int = Field(
        default=20, ge=1, le=1000, description="Earlier messages sent to the model with a new one"
    )
    chat_system_prompt: str | None = Field(
        default=None, description="System message put before every chat session's history"
    )
    llm_timeout_s: float = Field(
        default=120.0, gt=0, le=3600, description="Per-provider time limit for one LLM call"
    )
    llm_fallback_on: str = Field(
        default="unavailable,timeout,auth,model_missing",
        description="Provider error kinds that move on to the next provider: comma-separated "
        "from unavailable (connection errors, 5xx, 429), timeout, auth (401/403: the "
        "provider refused Roost's key), model_missing (404: it does not serve the model), "
        "bad_response, unsupported",
    )
    llm_max_ensemble: int = Field(default=5, ge=1, le=20)
    llm_stream_max_s: float = Field(
        default=600.0, gt=0, le=86_400, description="Longest a streamed LLM answer may take in all, "
        "first chunk included (keep-alives do not extend it); past it the call fails as a "
        "time-out",
    )
    llm_max_answer_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, le=1 << 30, description="Largest answer read from an LLM "
        "provider: a whole answer's body, or a streamed answer's text and tool-call "
        "arguments (UTF-8 bytes); past it the call fails as a malformed answer",
    )
    llm_credits_per_1k_tokens: float = Field(
        default=1.0, ge=0, le=1e6, description="usage_records.credits_used per 1000 tokens (rounded up)"
    )
    # --- billing (docs/billing.md) and analytics (docs/analytics.md) ------------------
    billing_require_subscription: bool = Field(
        default=False,
        description="Refuse (402) model calls, runs and tool calls of users with no live "
        "subscription; off: users without one are not metered against a limit",
    )
    billing_tax_rate: Decimal = Field(
        default=Decimal("0"), ge=0, le=1, description="Tax rate applied to invoices (0.2 = 20 %)"
    )
    billing_invoice_prefix: str = Field(
        default="INV", pattern=r"^[A-Z0-9]{1,10}$", description="Invoice numbers: PREFIX-YYYY-NNNNNN"
    )
    billing_reservation_ttl_s: int = Field(
        default=900, ge=30, le=7 * 86_400, description="A held credit reservation whose holder died is "
        "released after this many seconds (the sweeper job)",
    )
    billing_estimate_output_tokens: int = Field(
        default=1024, ge=1, le=10_000_000, description="Output tokens reserved for a model call that names "
        "no max_tokens",
    )
    billing_tool_call_credits: int = Field(
        default=1, ge=0, le=1_000_000_000, description="Credits one tool call costs"
    )
    stripe_secret_key: SecretStr | None = Field(
        default=None, description="Stripe API key: subscriptions and invoices sync to Stripe"
    )
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, description="Signing secret of /api/v1/billing/stripe/webhook"
    )
    stripe_api_base: str | None = Field(
        default=None, pattern=r"^https?://[^\s]+$", description="Stripe API base URL "
        "(default https://api.stripe.com; tests point it at a loopback stub)",
    )
    analytics_clickhouse_url: str | None = Field(
        default=None, description="ClickHouse server for the analytics export (http[s]://"
        "user:password@host:port/database); unset: embedded chDB in DATA_DIR/analytics",
    )
    analytics_export: bool = Field(
        default=False, description="Ship the analytics outbox to ClickHouse (chDB when no "
        "URL is set; needs the 'clickhouse' extra)",
    )
    analytics_export_interval_s: int = Field(default=60, ge=1, le=86_400)
    analytics_export_batch: int = Field(default=5000, ge=1, le=100_000)
    analytics_stream_sample_every: int = Field(
        default=10, ge=1, le=1_000_000, description="Streamed answers: every chunk of the first 20 is "
        "recorded, then one in N"
    )
    analytics_retention_days: int = Field(
        default=30, ge=1, le=3650, description="Outbox events and streaming metrics older "
        "than this are deleted (job analytics.prune, every 6 hours); the outbox's unexported ones too, "
        "so an install without ClickHouse does not grow without end"
    )
    llm_local_model: bool = Field(
        default=True,
        description="On a start with no LLM provider, register the local SmolLM2 model "
        "(needs the 'local' extra)",
    )
    llm_local_threads: int | None = Field(default=None, ge=1, le=256)
    llm_health_interval_s: int = Field(
        default=300, ge=10, le=7 * 86_400, description="Period of the provider health checks (task queue)"
    )
    llm_orphan_after_s: float | None = Field(
        default=None, gt=0, le=7 * 86_400,
        description="An llm_requests row still pending/running this long after it started "
        "was orphaned by a crashed process and is marked failed (task queue). Unset: "
        "ROOST_LLM_TIMEOUT_S x the enabled providers (a fallback chain's longest call) + 300 s",
    )

    # --- knowledge (documents, ingestion, embeddings, search) -----------------------
    knowledge_ingest_roots: str = Field(
        default="", description="Comma-separated directories users may ingest server files "
        "from (admins configure; empty disables file and directory ingestion over the API)"
    )
    knowledge_allow_private_fetch: bool = Field(
        default=False, description="Let web ingestion reach private, loopback and link-local "
        "addresses (cloud metadata addresses stay refused)"
    )
    knowledge_fetch_timeout_s: float = Field(default=30.0, gt=0, le=600)
    knowledge_fetch_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1024, le=1 << 30)
    knowledge_max_upload_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, le=1 << 30,
        description="Largest upload or file ingested (the request limit max_request_bytes "
        "applies to uploads too)",
    )
    knowledge_parse_time_limit_s: float = Field(
        default=120.0, gt=0, le=86_400,
        description="Seconds a document's text extraction may take (checked between PDF "
        "pages); past it the document is refused as too complex",
    )
    knowledge_chunk_tokens: int = Field(default=256, ge=16, le=8192)
    knowledge_chunk_overlap_tokens: int = Field(default=32, ge=0, le=4096)
    knowledge_ef_search: int = Field(default=64, ge=1, le=1000,
                                     description="HNSW ef_search for vector queries")
    knowledge_embedding_provider: str = Field(
        default="local", pattern=r"^(local|openai|hash)$",
        description="local (all-MiniLM-L6-v2, roost[local]), openai (OpenAI-compatible "
        "server) or hash (deterministic, NOT semantic: tests and offline development)",
    )
    knowledge_embedding_model: str | None = Field(
        default=None, description="Model name; default all-MiniLM-L6-v2 for local"
    )
    knowledge_embedding_dimensions: int | None = Field(default=None, ge=8, le=16000)
    knowledge_embedding_base_url: str | None = None
    knowledge_embedding_api_key: SecretStr | None = None
    knowledge_embedding_batch_size: int = Field(default=32, ge=1, le=2048)
    knowledge_curation: bool = Field(
        default=False, description="Write curated summaries of ingested documents through "
        "the LLM gateway (a registered provider; calls are recorded and counted as usage)"
    )
    knowledge_curation_model: str | None = Field(
        default=None, description="Model the gateway routes curation to; unset: the "
        "providers' default model"
    )
    knowledge_curation_group_size: int = Field(default=4, ge=2, le=32)

    # --- tools (MCP servers, tool registry, tool calls) ---------------------------------
    tools_allowed_hosts: str = Field(
        default="", description="Comma-separated host names or IP addresses of MCP servers "
        "(streamable HTTP) that may be on loopback or a private network (admins configure; "
        "every other host must be a public internet address)"
    )
    tools_call_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="Deadline of one MCP request: a tool call "
        "(a long-lived stdio server's start is bounded by ROOST_TOOLS_STDIO_START_TIMEOUT_S "
        "instead), a discovery (tools/list, every page) or a health check, start-up included"
    )
    tools_max_output_bytes: int = Field(
        default=256 * 1024, ge=1024, le=64 * 1024 * 1024,
        description="Largest tool result kept (JSON); a bigger one fails the call"
    )
    tools_health_interval_s: int = Field(
        default=300, ge=10, le=7 * 86_400, description="Period of the MCP server health check job"
    )
    tools_stdio_idle_s: float = Field(
        default=300.0, gt=0, le=7 * 86_400, description="A long-lived stdio MCP server process unused this "
        "long is stopped (started again by the next call)"
    )
    tools_stdio_start_timeout_s: float = Field(
        default=60.0, gt=0, le=3600, description="How long a long-lived stdio MCP server "
        "process may take to start and answer initialize; the call that starts it then has "
        "its own ROOST_TOOLS_CALL_TIMEOUT_S (a slow start does not eat the call's deadline)"
    )
    tools_stdio_max_processes: int = Field(
        default=32, ge=1, le=1000, description="Stdio MCP server processes one Roost process "
        "(the API server, each worker) keeps at most; the least recently used idle one "
        "makes room"
    )
    tools_workspace_dir: Path | None = Field(
        default=None, description="Directory the lsp_diagnostics tool reads files from "
        "(paths are relative to it; nothing outside it is read). Unset: DATA_DIR/workspace"
    )

    # --- agents calling agents through Roost's own /mcp (docs/mcp.md) -----------------
    agents_max_nesting: int = Field(
        default=3, ge=0, le=5, description="How deep agent runs may start agent runs "
        "through Roost's /mcp (an agent__<slug> tool called by a run's tool call): a call "
        "that would start a run deeper than this is refused (0: runs start none)"
    )

    # --- agents: the personas' mail (docs/agents-mail.md) and health metrics ---------
    smtp_listen: str = Field(
        default="", pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):[0-9]{1,5}$|^$",
        description="host:port of Roost's SMTP listener for the personas' inbound mail "
        "(run by `roost serve`); empty: no listener"
    )
    smtp_max_message_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, le=1024 * 1024 * 1024,
        description="Largest inbound message accepted (SMTP SIZE; bigger mail is refused, 552)"
    )
    smtp_max_attachment_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1, le=1024 * 1024 * 1024,
        description="Largest single attachment of an inbound message (the message is "
        "refused, 552)"
    )
    smtp_relay_url: SecretStr | None = Field(
        default=None, description="Outbound mail relay: smtp://[user:pass@]host[:port] "
        "(STARTTLS when offered, required with credentials unless on loopback) or "
        "smtps://... (TLS); unset: sending is disabled"
    )
    smtp_from_domain: str = Field(
        default="", pattern=r"^([A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*)?$",
        description="Domain of the Message-IDs Roost writes and the name its SMTP listener "
        "and client announce; empty: the persona's address domain (listener: 'localhost')"
    )
    smtp_timeout_s: float = Field(default=30.0, gt=0, le=600,
                                  description="Deadline of one delivery to the relay")
    smtp_max_connections: int = Field(
        default=100, ge=1, le=100_000,
        description="SMTP connections the listener holds at once (each may buffer a "
        "message of up to ROOST_SMTP_MAX_MESSAGE_BYTES); more are answered 421 and closed"
    )
    smtp_max_connections_per_address: int = Field(
        default=10, ge=1, le=100_000,
        description="SMTP connections one client address holds at once; more are "
        "answered 421 and closed"
    )
    smtp_max_mail_runs_per_hour: int = Field(
        default=60, ge=1, le=1_000_000,
        description="Runs inbound mail starts per persona in any hour; mail past it is "
        "stored and starts none (the audit record says why)"
    )
    persona_health_interval_s: int = Field(
        default=60, ge=10, le=86_400, description="Period of the persona health sampling job"
    )
    persona_health_retention_days: int = Field(
        default=30, ge=1, le=36_500, description="Persona health samples older than this are deleted"
    )

    # --- memory: recall weighting and decay (docs/memory.md, "Recall", "Decay") ---------
    memory_recency_half_life_days: float = Field(
        default=30.0, gt=0, le=36500, description="Recall: a memory's recency weight halves "
        "(towards memory_recency_floor) every this many days since it was created, changed "
        "or last recalled"
    )
    memory_recency_floor: float = Field(
        default=0.5, ge=0, le=1, description="Recall: the smallest recency weight (0: old "
        "memories can fade to nothing; 1: recency does not matter)"
    )
    memory_archive_after_days: int = Field(
        default=180, ge=0, le=36_500, description="Decay: current memories neither recalled nor changed "
        "for this many days are archived by the memory.decay job (0: never)"
    )
    memory_decay_interval_s: int = Field(
        default=3600, ge=60, le=7 * 86_400, description="Period of the memory.decay and memory.embed jobs"
    )

    # --- memory: the sharded store distributed_memory (docs/scale.md) --------------------
    memory_shards: int = Field(
        default=8, ge=1, le=256, description="Partitions of distributed_memory. Read from "
        "the environment by migration 0700 when it creates the table, fixed after that "
        "(docs/scale.md shows how to repartition); `roost memory shards` warns when the "
        "database has another count"
    )
    memory_node_id: str = Field(
        default_factory=default_node_id, min_length=1, max_length=255,
        description="This Roost node's name, written to distributed_memory.node_id "
        "(default: the host name)"
    )

    # --- code versions: per-session/run git repositories, their checks (docs/codeversions.md)
    code_checks: list[list[str]] = Field(
        default=[["ruff", "check", "."], ["python", "-m", "pytest", "-q"]],
        description="Checks a code version's validation runs in a checkout of its commit: a "
        "JSON list of argv lists, run without a shell (\"python\" is the Python running Roost)"
    )
    code_check_timeout_s: float = Field(default=300.0, gt=0, le=3600,
                                        description="Wall-clock limit of one check")
    code_check_max_output_bytes: int = Field(
        default=256 * 1024, ge=1024, le=64 * 1024 * 1024,
        description="Output (stdout and stderr) read from one check; more kills it")
    code_check_cpu_s: int = Field(default=300, ge=1, le=86_400, description="RLIMIT_CPU of a check")
    code_check_memory_mb: int = Field(default=2048, ge=64, le=1 << 20,
                                      description="RLIMIT_AS of a check (address space)")
    code_check_max_file_mb: int = Field(default=64, ge=1, le=1 << 20,
                                        description="RLIMIT_FSIZE of a check (largest file)")
    code_check_max_processes: int = Field(
        default=1024, ge=0, le=1_000_000, description="RLIMIT_NPROC of a check: processes and threads of "
        "the user Roost runs as, all of them (not enforced for root); 0: not set")
    code_max_files: int = Field(default=200, ge=1, le=10_000,
                                description="Files one commit may change")
    code_max_file_bytes: int = Field(default=1024 * 1024, ge=1, le=1 << 30,
                                     description="Largest file content in a commit")
    code_max_commit_bytes: int = Field(default=8 * 1024 * 1024, ge=1, le=1 << 30,
                                       description="Total file content of one commit")

    @field_validator("data_dir", "tools_workspace_dir", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object, info: ValidationInfo) -> object:
        # ROOST_DATA_DIR= (empty) would be Path("."): keys and the database written into
        # whatever directory the command was started from.  Empty means unset, as for the
        # optional string settings.
        if isinstance(value, str) and not value.strip():
            return default_data_dir() if info.field_name == "data_dir" else None
        return value

    @field_validator("data_dir", "tools_workspace_dir")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        try:
            return value.expanduser() if value is not None else None
        except RuntimeError as exc:  # ~name of a user this system does not know
            raise ValueError(f"cannot expand ~: {exc}") from None

    @field_validator("llm_fallback_on")
    @classmethod
    def _fallback_kinds(cls, value: str) -> str:
        parse_fallback_kinds(value)  # a typo refused at start, not at the first fallback
        return value

    @field_validator("chat_system_prompt")
    @classmethod
    def _chat_prompt_placeholders(cls, value: str | None) -> str | None:
        # Any other {{name}} has no value: start-up refused to publish it and chat sent the
        # raw braces to the model; refused here, so no server runs with it.
        unknown = sorted({n for n in PROMPT_PLACEHOLDER.findall(value or "")
                          if n not in CHAT_PROMPT_VALUES})
        if unknown:
            allowed = ", ".join(f"{{{{{n}}}}}" for n in CHAT_PROMPT_VALUES)
            raise ValueError(f"unknown placeholders {unknown}; the only one chat fills is {allowed}")
        hidden = invisible_placeholder(value or "")
        if hidden is not None:  # the model would get the braces (start-up only logged it)
            raise ValueError(f"{{{{{hidden}}}}} has an invisible character inside (a zero-width "
                             "space, a joiner...): it is no placeholder; type it again without")
        return value

    @field_validator("smtp_listen")
    @classmethod
    def _smtp_port(cls, value: str) -> str:
        # The pattern allows 5 digits: 99999 would listen on 99999 % 65536.
        if value and not 1 <= int(value.rpartition(":")[2]) <= 65535:
            raise ValueError("the port must be 1-65535")
        # The host as ROOST_HOST's is checked: "...", "a..b" or a label of 64 letters
        # passed the pattern and failed in the name lookup (a traceback).
        host = value.rpartition(":")[0].removeprefix("[").removesuffix("]")
        problem = bind_host_problem(host) if value else None
        if problem is not None:
            raise ValueError(problem)
        return value

    @field_validator("database_url", "database_replica_urls", mode="before")
    @classmethod
    def _trimmed_url(cls, value: object) -> object:
        # A URL pasted with a space in front passed the CLI's check (which trims) and then
        # failed to parse in the engine: a traceback.
        return value.strip() if isinstance(value, str) else value

    @field_validator("smtp_relay_url")
    @classmethod
    def _smtp_relay_url(cls, value: SecretStr | None) -> SecretStr | None:
        # Malformed, it stopped `roost serve` only inside the app's start-up (tracebacks,
        # exit 3, after the database was migrated).  The message never holds the URL.
        if value is not None and value.get_secret_value():
            parse_relay_url(value.get_secret_value())
        return value

    @field_validator("host", mode="before")
    @classmethod
    def _bind_host(cls, value: object) -> object:
        # ROOST_HOST= (empty) is unset, as ROOST_DATA_DIR= is; [::1] as ROOST_SMTP_LISTEN
        # writes an IPv6 address is the address.
        if isinstance(value, str):
            value = value.strip()
            if not value:
                return "127.0.0.1"
            if value.startswith("[") and value.endswith("]"):
                value = value[1:-1]
            problem = bind_host_problem(value)
            if problem is not None:
                raise ValueError(problem)
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _log_level(cls, value: object) -> object:
        # A typo (warnig) is refused at start, never silently run at info.
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("analytics_clickhouse_url")
    @classmethod
    def _clickhouse_url(cls, value: str | None) -> str | None:
        """A server URL that parses (http or https, a host, a port in range): one that
        does not would fail every export and report at run time instead of at start."""
        if value is None:
            return value
        try:
            parts = urlsplit(value)
            port_ok = parts.port is None or 0 < parts.port
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if parts.scheme == "chdb":  # an embedded chDB at a path of its own
            return value
        if parts.scheme not in ("http", "https") or not parts.hostname or not port_ok:
            raise ValueError("expected http[s]://user:password@host:port/database "
                             "(or chdb:///path)")
        return value

    @property
    def pg_dir(self) -> Path:
        return self.data_dir / "pg"

    @property
    def uses_embedded_db(self) -> bool:
        return self.database_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
