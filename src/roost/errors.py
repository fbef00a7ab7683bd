"""Domain errors that services raise; the HTTP layer turns them into RFC 9457 problems.

Services never import FastAPI: they raise one of these and ``roost.http.problems``
maps it to a status code and a problem JSON body.  ``detail`` must be safe to show
to the caller (no secrets, no stack traces, no other tenant's data).
"""

from __future__ import annotations

from typing import Any


class RoostError(Exception):
    """Base class: carries an HTTP status, a short title and a human-actionable detail."""

    status: int = 400
    title: str = "Bad request"
    type_slug: str = "bad-request"

    def __init__(self, detail: str, *, extra: dict[str, Any] | None = None,
                 retry_helps: bool | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra or {}
        # Whether the same request sent again may succeed; None: as its status says (a 5xx
        # may).  False where a retry would repeat what was done (a second agent run): /v1
        # tells OpenAI SDKs not to retry it on their own (``x-should-retry: false``).
        self.retry_helps = retry_helps


class BadRequest(RoostError):
    status, title, type_slug = 400, "Bad request", "bad-request"


class Unauthorized(RoostError):
    status, title, type_slug = 401, "Unauthorized", "unauthorized"


class Forbidden(RoostError):
    status, title, type_slug = 403, "Forbidden", "forbidden"


class PaymentRequired(RoostError):
    """The subscription's balance cannot cover the call (nothing was called); ``extra``
    says the balance and what was needed."""

    status, title, type_slug = 402, "Payment required", "payment-required"


class LimitReached(Forbidden):
    """A plan's feature limit (``extra["limit"]`` names it) stops the action."""

    status, title, type_slug = 403, "Plan limit reached", "limit-reached"


class NotFound(RoostError):
    status, title, type_slug = 404, "Not found", "not-found"


class Conflict(RoostError):
    status, title, type_slug = 409, "Conflict", "conflict"


class PayloadTooLarge(RoostError):
    status, title, type_slug = 413, "Payload too large", "payload-too-large"


class Unprocessable(RoostError):
    status, title, type_slug = 422, "Unprocessable content", "validation-error"


class TooManyRequests(RoostError):
    status, title, type_slug = 429, "Too many requests", "too-many-requests"


class BadGateway(RoostError):
    status, title, type_slug = 502, "Bad gateway", "bad-gateway"


class ServiceUnavailable(RoostError):
    status, title, type_slug = 503, "Service unavailable", "service-unavailable"


class GatewayTimeout(RoostError):
    status, title, type_slug = 504, "Gateway timeout", "gateway-timeout"
