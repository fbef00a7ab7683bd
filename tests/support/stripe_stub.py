"""A loopback stand-in for the few Stripe API endpoints Roost calls (docs/billing.md,
"Stripe"): a real HTTP server on 127.0.0.1 in a thread, answering the SDK as Stripe does.

It checks what Stripe checks and what Roost must send: the bearer key, form-encoded
bodies with the required parameters (a missing one is Stripe's 400 ``parameter_missing``
error), and idempotency keys: a repeated ``Idempotency-Key`` gets the first answer back
and creates nothing, which is what makes a retried sync job harmless.  Every request is
kept in ``requests`` and every object created in ``objects`` for the test to assert on.
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class StubRequest:
    method: str
    path: str
    form: dict[str, str]  # the form body, flattened keys as sent: "items[0][price]"
    idempotency_key: str | None
    replayed: bool = False  # answered from the idempotency cache


@dataclass
class StripeStub:
    api_key: str
    url: str = ""
    requests: list[StubRequest] = field(default_factory=list)
    # "customer" | "subscription" | "invoice" | "invoiceitem" -> id -> the object
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _idempotent: dict[tuple[str, str], tuple[int, dict[str, Any]]] = field(default_factory=dict)
    _ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def created(self, kind: str) -> list[dict[str, Any]]:
        return list(self.objects.get(kind, {}).values())

    def calls(self, method: str, path_prefix: str) -> list[StubRequest]:
        return [r for r in self.requests if r.method == method and r.path.startswith(path_prefix)]

    # --- the endpoints -----------------------------------------------------------------

    def _new(self, kind: str, prefix: str, body: dict[str, Any]) -> dict[str, Any]:
        obj = {"id": f"{prefix}_{next(self._ids):06d}", "object": kind, "livemode": False,
               **body}
        self.objects.setdefault(kind, {})[obj["id"]] = obj
        return obj

    def handle(self, method: str, path: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["v1"] or len(parts) < 2:
            return _error(404, "resource_missing", f"Unrecognized request URL ({method}: {path})")
        resource, rest = parts[1], parts[2:]
        if method == "POST" and resource == "customers" and not rest:
            if not any(k.startswith("metadata[roost_") for k in form):
                return _missing("metadata[roost_user_id]")
            return 200, self._new("customer", "cus", {
                "email": form.get("email"), "name": form.get("name"),
                "metadata": _sub_dict(form, "metadata")})
        if resource == "subscriptions":
            return self._subscriptions(method, rest, form)
        if method == "POST" and resource == "invoices" and not rest:
            customer = form.get("customer")
            if not customer:
                return _missing("customer")
            if customer not in self.objects.get("customer", {}):
                return _error(400, "resource_missing", f"No such customer: '{customer}'",
                              param="customer")
            return 200, self._new("invoice", "in", {
                "customer": customer, "status": "draft", "description": form.get("description"),
                "currency": form.get("currency"), "auto_advance": form.get("auto_advance"),
                "pending_invoice_items_behavior": form.get("pending_invoice_items_behavior"),
                "metadata": _sub_dict(form, "metadata"), "lines": []})
        if method == "POST" and resource == "invoiceitems" and not rest:
            for name in ("customer", "amount", "currency", "invoice"):
                if not form.get(name):
                    return _missing(name)
            invoice = self.objects.get("invoice", {}).get(form["invoice"])
            if invoice is None:
                return _error(400, "resource_missing", f"No such invoice: '{form['invoice']}'",
                              param="invoice")
            item = self._new("invoiceitem", "ii", {
                "customer": form["customer"], "amount": int(form["amount"]),
                "currency": form["currency"], "invoice": form["invoice"],
                "description": form.get("description"),
                "metadata": _sub_dict(form, "metadata")})
            invoice["lines"].append(item["id"])
            return 200, item
        return _error(404, "resource_missing", f"Unrecognized request URL ({method}: {path})")

    def _subscriptions(self, method: str, rest: list[str],
                       form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        subs = self.objects.setdefault("subscription", {})
        if method == "POST" and not rest:
            customer, price = form.get("customer"), form.get("items[0][price]")
            if not customer:
                return _missing("customer")
            if not price:
                return _missing("items[0][price]")
            if customer not in self.objects.get("customer", {}):
                return _error(400, "resource_missing", f"No such customer: '{customer}'",
                              param="customer")
            item = {"id": f"si_{next(self._ids):06d}", "object": "subscription_item",
                    "price": {"id": price, "object": "price"}}
            return 200, self._new("subscription", "sub", {
                "customer": customer, "status": "trialing" if form.get("trial_end") else "active",
                "trial_end": int(form["trial_end"]) if form.get("trial_end") else None,
                "items": {"object": "list", "data": [item]},
                "metadata": _sub_dict(form, "metadata")})
        if not rest or rest[0] not in subs:
            return _error(404, "resource_missing",
                          f"No such subscription: '{rest[0] if rest else ''}'", param="id")
        sub = subs[rest[0]]
        if method == "GET" and len(rest) == 1:
            return 200, sub
        if method == "DELETE" and len(rest) == 1:
            if sub["status"] == "canceled":
                return _error(400, "resource_missing",
                              f"No such subscription: '{sub['id']}'", param="id")
            sub["status"] = "canceled"
            return 200, sub
        if method == "POST" and len(rest) == 1:
            if sub["status"] == "canceled":
                return _error(400, None, "A canceled subscription can only update its "
                              "cancellation_details and metadata.")
            price, item_id = form.get("items[0][price]"), form.get("items[0][id]")
            if price:
                if item_id != sub["items"]["data"][0]["id"]:
                    return _error(400, "resource_missing", "items[0][id] names no item of "
                                  "this subscription", param="items[0][id]")
                sub["items"]["data"][0]["price"] = {"id": price, "object": "price"}
            sub["metadata"].update(_sub_dict(form, "metadata"))
            return 200, sub
        return _error(404, "resource_missing", "Unrecognized request URL")

    def serve(self, method: str, path: str, form: dict[str, str], key: str | None,
              auth: str | None) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if auth != f"Bearer {self.api_key}":
                return _error(401, None, "Invalid API Key provided", kind="invalid_request_error")
            request = StubRequest(method, path, form, key)
            self.requests.append(request)
            if key is not None and method == "POST":
                cached = self._idempotent.get((path, key))
                if cached is not None:
                    request.replayed = True
                    return cached
            status, body = self.handle(method, path, form)
            if key is not None and method == "POST" and status < 500:
                self._idempotent[(path, key)] = (status, body)
            return status, body


def _sub_dict(form: dict[str, str], name: str) -> dict[str, str]:
    prefix = f"{name}["
    return {k[len(prefix):-1]: v for k, v in form.items() if k.startswith(prefix) and k.endswith("]")}


def _error(status: int, code: str | None, message: str, *, param: str | None = None,
           kind: str = "invalid_request_error") -> tuple[int, dict[str, Any]]:
    error: dict[str, Any] = {"type": kind, "message": message}
    if code:
        error["code"] = code
    if param:
        error["param"] = param
    return status, {"error": error}


def _missing(param: str) -> tuple[int, dict[str, Any]]:
    return _error(400, "parameter_missing", f"Missing required param: {param}.", param=param)


def _handler(stub: StripeStub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length).decode("utf-8") if length else ""
            url = urlsplit(self.path)
            if self.command == "GET":
                raw = url.query
            content_type = self.headers.get("Content-Type", "")
            if raw and self.command != "GET" and "x-www-form-urlencoded" not in content_type:
                status, body = _error(400, None, f"unexpected Content-Type {content_type!r}")
            else:
                form = {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}
                status, body = stub.serve(self.command, url.path, form,
                                          self.headers.get("Idempotency-Key"),
                                          self.headers.get("Authorization"))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", "req_stub")
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def stripe_stub(api_key: str = "sk_test_roost_stub") -> Iterator[StripeStub]:
    """Serve a :class:`StripeStub` on an ephemeral loopback port until the block ends."""
    stub = StripeStub(api_key=api_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stub))
    server.daemon_threads = True
    stub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="stripe-stub", daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
