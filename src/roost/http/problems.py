"""RFC 9457 problem details for every error answer, with no stack traces."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, Final

import asyncpg
import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import PrimaryKeyConstraint, UniqueConstraint
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm.exc import StaleDataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from roost.context import current_context
from roost.db.base import Base
from roost.db.errors import RETRYABLE_SQLSTATES
from roost.db.errors import sqlstate as sqlstate_of
from roost.errors import RoostError
from roost.security.crypto import DecryptionError, MessageDecryptionError

log = structlog.get_logger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
TYPE_BASE = "https://roost.dev/problems/"

_HTTP_TITLES = {
    400: "Bad request", 401: "Unauthorized", 403: "Forbidden", 404: "Not found",
    405: "Method not allowed", 406: "Not acceptable", 409: "Conflict",
    413: "Payload too large", 415: "Unsupported media type", 422: "Unprocessable content",
    429: "Too many requests", 500: "Internal server error", 502: "Bad gateway",
    503: "Service unavailable", 504: "Gateway timeout",
}


class BodyTooLarge(Exception):
    """Raised by the size-limit middleware while the body is being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body exceeds {limit} bytes")
        self.limit = limit


# Under /v1 (the OpenAI-compatible API) every error takes OpenAI's shape instead,
# {"error": {"message", "type", "param", "code"}}, so OpenAI SDKs raise their usual
# exceptions with a code; request_id rides inside "error" and in X-Request-ID.
_OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                 403: "permission_error", 404: "invalid_request_error",
                 405: "invalid_request_error", 409: "invalid_request_error",
                 413: "invalid_request_error", 415: "invalid_request_error",
                 422: "invalid_request_error", 429: "rate_limit_error", 500: "server_error"}
_OPENAI_CODES = {"unauthorized": "invalid_api_key", "payload-too-large": "content_too_large",
                 "malformed-json": "invalid_json", "validation-error": "invalid_value",
                 "not-found": "not_found", "internal-server-error": "internal_error"}


# OpenAI SDKs retry 408, 409, 429 and 5xx answers on their own (twice by default) unless
# the answer says ``x-should-retry: false``: said of every answer a retry cannot change.
NO_RETRY: Final = {"x-should-retry": "false"}
RETRIED_4XX: Final = frozenset({408, 429})


def retry_useless(status: int) -> bool:
    """Whether a retry of the same request cannot change an answer of ``status``: a 4xx
    but 408 and 429 (the request, or the configuration, must change first)."""
    return status < 500 and status not in RETRIED_4XX


def is_openai_path(path: str | None) -> bool:
    return path is not None and (path == "/v1" or path.startswith("/v1/"))


def openai_code(type_slug: str) -> str:
    return _OPENAI_CODES.get(type_slug, type_slug.replace("-", "_"))


def openai_error(
    status: int, message: str, *, code: str | None = None, param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    error: dict[str, Any] = {"message": message, "type": _OPENAI_TYPES.get(status, "api_error"),
                             "param": param, "code": code}
    request_id = current_context().request_id
    if request_id:
        error["request_id"] = request_id
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
    return JSONResponse({"error": error}, status_code=status, headers=headers)


def problem(
    status: int, detail: str, *, title: str | None = None, type_slug: str | None = None,
    headers: dict[str, str] | None = None, extra: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """The error answer: problem JSON, or OpenAI's shape for a request under /v1.
    ``extra``: members to add (``errors``, ``tool_run_id``...); one named as a member of
    the answer itself (``status``, ``detail``...) never replaces it."""
    if is_openai_path(current_context().path):
        if retry_useless(status):  # a 409 (a conflict with stored data) included
            headers = {**NO_RETRY, **(headers or {})}
        return openai_error(status, detail, code=openai_code(type_slug or _slug(status)),
                            headers=headers)
    body: dict[str, Any] = {
        "type": TYPE_BASE + (type_slug or _slug(status)),
        "title": title or _HTTP_TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    request_id = current_context().request_id
    if request_id:
        body["request_id"] = request_id
    for key, value in (extra or {}).items():
        body.setdefault(key, value)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _slug(status: int) -> str:
    return _HTTP_TITLES.get(status, "error").lower().replace(" ", "-")


def _validation_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    # Never echo "input": it may be a password or a token.
    return [
        {"loc": list(err.get("loc", ())), "msg": err.get("msg", ""), "type": err.get("type", "")}
        for err in exc.errors()
    ]


def retry_after(exc: RoostError) -> dict[str, str] | None:
    """``Retry-After`` (whole seconds) for a 429 whose ``extra`` says how long to wait."""
    seconds = exc.extra.get("retry_after_s")
    if exc.status == 429 and isinstance(seconds, int | float) and not isinstance(seconds, bool):
        return {"Retry-After": str(max(1, math.ceil(seconds)))}
    return None


async def _roost_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RoostError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else retry_after(exc)
    return problem(exc.status, exc.detail, title=exc.title, type_slug=exc.type_slug,
                   headers=headers, extra=exc.extra)


def json_error_reason(exc: RequestValidationError) -> str:
    """Why the body is not JSON (the decoder's message: a position or a field, no value)."""
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error")
            if isinstance(reason, str) and reason:
                return reason
    return "it could not be decoded"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _validation_errors(exc)
    if any(e["type"] == "json_invalid" for e in errors):
        return problem(400, f"request body is not valid JSON: {json_error_reason(exc)}",
                       type_slug="malformed-json", extra={"errors": errors})
    return problem(422, "request has invalid or missing fields; see errors",
                   type_slug="validation-error", extra={"errors": errors})


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI wraps body-read errors in a 400
        return await _too_large(request, exc.__cause__)
    detail = exc.detail if isinstance(exc.detail, str) else _HTTP_TITLES.get(exc.status_code, "")
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route for {request.method} {request.url.path}"
    return problem(exc.status_code, detail, headers=dict(exc.headers or {}) or None)


async def _too_large(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, BodyTooLarge)
    return problem(413, f"request body is larger than the limit of {exc.limit} bytes")


async def _integrity_error(request: Request, exc: Exception) -> JSONResponse:
    log.warning("integrity_error", error=type(exc.__cause__ or exc).__name__)
    driver = getattr(exc, "orig", None) or exc
    driver = getattr(driver, "__cause__", None) or driver
    missing = _missing_reference(driver)
    if missing is not None:
        return missing
    return problem(409, "the change conflicts with data already stored" + _conflicting(driver))


async def _gone_meanwhile(request: Request, exc: Exception) -> JSONResponse:
    """An ORM change of a row another transaction deleted after this one read it (its
    UPDATE matched no row): what the request changes no longer exists, a 404, as when
    the deletion came first.  (A service that locks what it changes never gets here.)"""
    log.warning("changed_row_gone", error=str(exc)[:200])
    return problem(404, "what this request changes was deleted meanwhile")


def _missing_reference(driver: Any) -> JSONResponse | None:
    """A row written with a reference to a row deleted meanwhile (the service had found
    it, a deletion committed before the write): a 404 naming the field, as for an id
    that never existed.  A deletion of a row still referenced stays a 409, as does a
    reference to a user: the caller's own account ended mid-request, not a bad id."""
    if getattr(driver, "sqlstate", None) != "23503":
        return None
    if not str(getattr(driver, "message", "") or driver).startswith("insert or update on"):
        return None
    columns = _foreign_keys().get(str(getattr(driver, "constraint_name", None) or ""))
    if not columns:
        return None
    field = ", ".join(columns)
    return problem(404, f"the {field} names something that does not exist (or no longer "
                   "does)", extra={"field": field} if len(columns) == 1 else None)


def _conflicting(driver: Any) -> str:
    """What a service did not check first, as far as the driver says: the columns of a
    unique key already taken (by the constraint's name: PostgreSQL leaves the key's
    values out of the message on tables with row-level security, and they are not
    repeated here either), or a reference to a row that does not exist."""
    sqlstate = getattr(driver, "sqlstate", None)
    if sqlstate == "23503":
        return ": it refers to something that does not exist (or no longer does)"
    columns = _unique_keys().get(str(getattr(driver, "constraint_name", None) or ""))
    if sqlstate == "23505" and columns:
        return f": another record already has the same {', '.join(columns)}"
    return ""


@functools.cache
def _foreign_keys() -> dict[str, tuple[str, ...]]:
    """Every foreign key of the models but those to users, by name: its columns."""
    return {str(constraint.name): tuple(constraint.column_keys)
            for table in Base.metadata.tables.values()
            for constraint in table.foreign_key_constraints
            if constraint.name and constraint.referred_table.name != "users"}


@functools.cache
def _unique_keys() -> dict[str, tuple[str, ...]]:
    """Every unique index and constraint of the models, by name: its columns."""
    keys: dict[str, tuple[str, ...]] = {}
    for table in Base.metadata.tables.values():
        for index in table.indexes:
            if index.unique and index.name:
                keys[str(index.name)] = tuple(c.name for c in index.columns)
        for constraint in table.constraints:
            if isinstance(constraint, UniqueConstraint | PrimaryKeyConstraint) and constraint.name:
                keys[str(constraint.name)] = tuple(c.name for c in constraint.columns)
    return keys


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # Connection failures and timeouts: the database is unreachable or overloaded.
    log.error("database_unavailable", error=type(exc.__cause__ or exc).__name__)
    return problem(503, "the database is unavailable; try again shortly",
                   headers={"Retry-After": "5"})


async def _dbapi_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if exc.connection_invalidated:
        return await _database_error(request, exc)
    return await _sqlstate_error(request, exc)


async def _driver_error(request: Request, exc: Exception) -> JSONResponse:
    """asyncpg's own error, from the hot paths that use the driver directly
    (``roost.db.transaction``): answered by its SQLSTATE as SQLAlchemy's would be (a NUL
    in a text value was a 500 on an agent run's input)."""
    if (sqlstate_of(exc) or "").startswith("23"):
        return await _integrity_error(request, exc)
    return await _sqlstate_error(request, exc)


async def _sqlstate_error(request: Request, exc: Exception) -> JSONResponse:
    sqlstate = sqlstate_of(exc) or ""
    if sqlstate.startswith("22"):  # data exception: out of range, bad text representation
        return problem(400, "a value is out of range or malformed for its field")
    if sqlstate == "57014":  # statement timeout
        return problem(503, "the database took too long to answer; try again shortly")
    if sqlstate in RETRYABLE_SQLSTATES:  # serialization failure, deadlock: nothing was changed
        log.warning("transaction_conflict", sqlstate=sqlstate)
        return problem(503, "the change collided with a concurrent one and was not made; "
                       "try again", headers={"Retry-After": "1"})
    if sqlstate == "42501":
        # Row-level security (or a guard trigger) refused a row the service let through:
        # the database's wall held, the transaction rolled back.  Logged: a service check
        # in front of it is missing.
        log.warning("database_refused_change", error=type(getattr(exc, "orig", exc)).__name__)
        return problem(403, "this account may not make this change")
    # Class 08 (connection exception: PgBouncer's "server conn crashed?", "no more
    # connections allowed"), shut-downs (57P01-57P03) and too many connections: the
    # database or the pooler in front of it is unavailable, not a bug.
    if sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03", "53300"):
        return await _database_error(request, exc)
    return await _unexpected(request, exc)


async def _os_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, ConnectionError | TimeoutError):
        return await _database_error(request, exc)
    return await _unexpected(request, exc)


async def _undecryptable(request: Request, exc: Exception) -> JSONResponse:
    """Stored ciphertext no configured key opens, met by any read that did not say so
    itself (an LLM request's prompt, a tool run's input, a secret): the operator's
    problem, named with the setting to fix, not an anonymous 500."""
    log.error("stored_data_undecryptable", error=type(exc).__name__)
    if isinstance(exc, MessageDecryptionError):
        return problem(500, "stored content cannot be decrypted with the configured message "
                       "keys; an operator must restore the missing key in ROOST_MESSAGE_KEYS",
                       title="Message keys do not match", type_slug="message-keys-mismatch")
    return problem(500, "a stored secret cannot be decrypted with the configured secrets key; "
                   "an operator must restore the key it was written with (ROOST_SECRETS_KEY "
                   "or DATA_DIR/keys/secrets_key)", title="Secrets key does not match",
                   type_slug="secrets-key-mismatch")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return unexpected_error(exc)


def unexpected_error(exc: BaseException) -> JSONResponse:
    """500 with only the request id; the exception goes to the log with its traceback.

    A lost database connection met outside SQLAlchemy's statement execution (the hot
    paths that talk to the asyncpg connection directly, ``roost.db.transaction``) arrives
    here untranslated: it is a 503 like any other, e.g. while PgBouncer restarts."""
    if connection_lost(exc):
        log.error("database_unavailable", error=type(exc).__name__)
        return problem(503, "the database is unavailable; try again shortly",
                       headers={"Retry-After": "5"})
    log.error("unhandled_error", error=type(exc).__name__, exc_info=exc)
    return problem(500, "an unexpected error occurred; quote the request id when reporting it")


def connection_lost(exc: BaseException) -> bool:
    """Whether ``exc`` or what it was raised from is a lost or refused database connection
    (also for answers that are not problem JSON: /mcp's tool results)."""
    lost = (asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
            asyncpg.exceptions.CannotConnectNowError, asyncpg.exceptions.AdminShutdownError,
            asyncpg.exceptions.TooManyConnectionsError, ConnectionError)
    seen: BaseException | None = exc
    for _ in range(8):  # a short chain: the driver's error, the adapter's, SQLAlchemy's
        if seen is None:
            return False
        if isinstance(seen, lost) or (isinstance(seen, OSError) and _while_connecting(seen)):
            return True
        seen = seen.__cause__
    return False


def _while_connecting(exc: BaseException) -> bool:
    """Raised in the driver's code that opens a connection (asyncpg.connect_utils): the
    embedded server's socket gone (FileNotFoundError), a refused or unreachable address;
    an OSError from anywhere else (a file a request names) is no database's."""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_globals.get("__name__") == "asyncpg.connect_utils":
            return True
        tb = tb.tb_next
    return False


def install_problem_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RoostError, _roost_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(BodyTooLarge, _too_large)
    app.add_exception_handler(IntegrityError, _integrity_error)
    app.add_exception_handler(StaleDataError, _gone_meanwhile)
    app.add_exception_handler(OperationalError, _database_error)
    app.add_exception_handler(InterfaceError, _database_error)
    app.add_exception_handler(DBAPIError, _dbapi_error)
    app.add_exception_handler(asyncpg.PostgresError, _driver_error)
    app.add_exception_handler(OSError, _os_error)
    app.add_exception_handler(DecryptionError, _undecryptable)
    app.add_exception_handler(Exception, _unexpected)
