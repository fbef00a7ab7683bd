"""What the OpenAPI document says about errors, and the ``Allow`` header of every 405.

Routes declare their success answers; the error answers every operation can give are
added here once, after FastAPI has built the document:

- ``/api/...`` operations: RFC 9457 problems (``application/problem+json``, the
  ``Problem`` schema; 422 and 400 carry ``errors``) for every status ``http/problems.py``
  can answer;
- ``/v1/...`` (OpenAI-compatible): OpenAI's ``{"error": {...}}`` as ``application/json``;
- ``/health``: its own JSON document with 503.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from roost.http.problems import PROBLEM_MEDIA_TYPE, problem

# Every status an /api operation may answer with a problem (besides its own success).
PROBLEM_STATUSES: dict[int, str] = {
    400: "Bad request: malformed JSON or a value out of range",
    401: "Missing, invalid or expired credentials",
    402: "The subscription's credits cannot cover this (balance and need given; docs/billing.md)",
    403: "The principal may not do this (or a plan limit, named in `limit`)",
    404: "No such resource (or not visible to the principal)",
    409: "Conflicts with stored data",
    413: "Request body larger than ROOST_MAX_REQUEST_BYTES",
    415: "A body not sent as application/json, or a Content-Encoding other than identity",
    422: "Invalid or missing fields (listed in errors, values never echoed)",
    429: "Too many attempts; retry later",
    500: "Unexpected error (only the request id is given)",
    502: "An upstream service (LLM provider, web page) failed",
    503: "The database (or an upstream service) is unavailable; retry later",
    504: "An upstream service did not answer in time",
}
# The /v1 OpenAI-compatible routes answer errors in OpenAI's shape.
OPENAI_ERROR_STATUSES = PROBLEM_STATUSES

_PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "RFC 9457 problem details.",
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "The failing fields (validation errors and malformed JSON), or "
                           "a workflow graph's problems (`invalid-workflow`: code, message "
                           "and the node or edge).",
            "items": {"anyOf": [
                {
                    "type": "object",
                    "required": ["loc", "msg", "type"],
                    "properties": {
                        "loc": {"type": "array", "items": {"anyOf": [{"type": "string"},
                                                                     {"type": "integer"}]}},
                        "msg": {"type": "string"},
                        "type": {"type": "string"},
                    },
                },
                {
                    "type": "object",
                    "required": ["code", "message"],
                    "properties": {
                        "code": {"type": "string"},
                        "message": {"type": "string"},
                        "node_id": {"type": ["string", "null"]},
                        "edge_id": {"type": ["string", "null"]},
                    },
                },
            ]},
        },
    },
    "additionalProperties": True,
}
_OPENAI_ERROR_SCHEMA: dict[str, Any] = {
    "title": "OpenAIError",
    "description": "OpenAI's error shape.",
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "code": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            },
            "additionalProperties": True,
        },
    },
    "additionalProperties": True,
}
_HEALTH_SCHEMA: dict[str, Any] = {
    "title": "Health",
    "type": "object",
    "required": ["status", "database", "migrations"],
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unavailable"]},
        "database": {"type": "string"},
        "migrations": {"type": "string"},
        "reason": {"type": "string"},
    },
}
_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def add_error_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Declare the error answers of every operation in ``schema`` (in place)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["Problem"] = _PROBLEM_SCHEMA
    components["OpenAIError"] = _OPENAI_ERROR_SCHEMA
    components["Health"] = _HEALTH_SCHEMA
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            if method not in _METHODS:
                continue
            responses: dict[str, Any] = operation.setdefault("responses", {})
            if path.startswith("/v1/") or path == "/v1":
                media, ref, statuses = "application/json", _ref("OpenAIError"), OPENAI_ERROR_STATUSES
            elif path == "/health":
                responses["200"] = {"description": "Healthy",
                                    "content": {"application/json": {"schema": _ref("Health")}}}
                media, ref, statuses = "application/json", _ref("Health"), {503: "Unavailable"}
            else:
                media, ref, statuses = PROBLEM_MEDIA_TYPE, _ref("Problem"), PROBLEM_STATUSES
            for status, description in statuses.items():
                # Replaces FastAPI's own 422 (HTTPValidationError), which Roost never sends.
                responses[str(status)] = {"description": description,
                                          "content": {media: {"schema": ref}}}
    if not _mentions(schema.get("paths", {}), "HTTPValidationError"):
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
    return schema


def _mentions(node: Any, name: str) -> bool:
    if isinstance(node, dict):
        return any(_mentions(v, name) for v in node.values())
    if isinstance(node, list):
        return any(_mentions(v, name) for v in node)
    return isinstance(node, str) and node.endswith("/" + name)


_HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(app: FastAPI, scope: dict[str, Any]) -> list[str]:
    """Every method some route serves at this request's path (HEAD with GET), found by
    asking each route (included routers too) whether it fully matches that method."""
    return [
        method for method in _HTTP_METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL
               for route in app.router.routes)
    ]


async def _method_not_allowed(request: Request, exc: Exception) -> Response:
    """Starlette's 405 names the methods of the first route on the path only; this one
    names every method of the path, then answers through the app's HTTP error handler."""
    assert isinstance(exc, StarletteHTTPException)
    app = request.app
    allow = ", ".join(allowed_methods(app, dict(request.scope))) if isinstance(app, FastAPI) else ""
    detail = f"{request.method} is not allowed on {request.url.path}"
    fixed = StarletteHTTPException(
        405, detail=f"{detail}; allowed: {allow}" if allow else detail,
        headers={**dict(exc.headers or {}), "Allow": allow},
    )
    handler = app.exception_handlers.get(StarletteHTTPException)
    if handler is None:
        return problem(405, fixed.detail, headers=dict(fixed.headers or {}))
    response: Response = await handler(request, fixed)
    return response


def install_openapi(app: FastAPI) -> None:
    """Error responses in the document, and a complete ``Allow`` header on every 405."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_error_responses(build())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    # A status handler wins over the class handler of http/problems.py for 405 only.
    app.add_exception_handler(405, _method_not_allowed)
