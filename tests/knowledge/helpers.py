"""Test helpers for the knowledge pipeline: a hand-built PDF and a loopback HTTP server."""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


def make_pdf(pages: list[str], *, title: str | None = None) -> bytes:
    """A minimal valid PDF: one Helvetica text line per line of each page's text.

    Written by hand (objects, xref, trailer) so the test needs no PDF-writing library
    and the bytes are fully under our control.
    """
    objects: list[bytes] = []
    n_pages = len(pages)
    font_id = 3 + 2 * n_pages
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    for i, text in enumerate(pages):
        content_id = 4 + 2 * i
        ops = []
        for j, line in enumerate(text.split("\n")):
            esc = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"BT /F1 12 Tf 72 {720 - 16 * j} Td ({esc}) Tj ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> /Contents {content_id} 0 R >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    info_id = None
    if title is not None:
        objects.append(f"<< /Title ({title}) >>".encode("latin-1"))
        info_id = len(objects)
    return pdf_file(objects, f" /Info {info_id} 0 R" if info_id else "")


def pdf_file(objects: list[bytes], trailer_extra: str = "") -> bytes:
    """A PDF of ``objects`` (numbered from 1, the first the catalog): header, objects,
    cross-reference table and trailer."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for off in offsets:
        out += b"%010d 00000 n \n" % off
    trailer = f"<< /Size {len(objects) + 1} /Root 1 0 R{trailer_extra}"
    out += f"trailer\n{trailer} >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def surrogate_pdf() -> bytes:
    """A one-page PDF whose font's ToUnicode map turns 'A' into a lone surrogate (U+D800):
    its text reads "<U+D800> hello herons"."""
    cmap = (b"/CIDInit /ProcSet findresource begin 12 dict begin begincmap /CMapName /X def "
            b"1 begincodespacerange <00> <FF> endcodespacerange 1 beginbfchar <41> <D800> "
            b"endbfchar endcmap CMapName currentdict /CMap defineresource pop end end")
    stream = b"BT /F1 12 Tf 72 720 Td (A hello herons) Tj ET"
    return pdf_file([
        b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /ToUnicode 6 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(cmap) + cmap + b"\nendstream",
    ])


def pages_sharing_one_stream(pages: int, operators: int) -> bytes:
    """A PDF whose ``pages`` all draw the same compressed content stream of ``operators``
    text operators: a few KB that take pypdf about a second per page."""
    stream = zlib.compress(b"BT /F1 12 Tf (x) Tj ET\n" * operators, 9)
    kids = " ".join(f"{5 + i} 0 R" for i in range(pages))
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>",
               f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
               b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
               b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(stream) + stream
               + b"\nendstream"]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
                b"/Resources << /Font << /F1 3 0 R >> >> /Contents 4 0 R >>"] * pages
    return pdf_file(objects)


def pdf_with_a_heavy_page(first_page: str, inflated_mb: int) -> bytes:
    """A two-page PDF: ``first_page``'s text, then a page whose compressed content stream
    (a few KB) inflates to ``inflated_mb`` MB of text operators."""
    line = b"BT /F1 12 Tf 72 720 Td (" + b"A" * 200 + b") Tj ET\n"
    heavy = zlib.compress(line * (inflated_mb * 1024 * 1024 // len(line)), 9)
    light = f"BT /F1 12 Tf 72 720 Td ({first_page}) Tj ET".encode("latin-1")
    page = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Contents %d 0 R >>")
    return pdf_file([b"<< /Type /Catalog /Pages 2 0 R >>",
                     b"<< /Type /Pages /Kids [4 0 R 5 0 R] /Count 2 >>",
                     b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
                     page % 6, page % 7,
                     b"<< /Length %d >>\nstream\n" % len(light) + light + b"\nendstream",
                     b"<< /Length %d /Filter /FlateDecode >>\nstream\n" % len(heavy) + heavy
                     + b"\nendstream"])


def pdf_drawing_a_form(first_page: str, form_kb: int, draws: int) -> bytes:
    """A two-page PDF: ``first_page``'s text, then a page whose own content only draws a
    Form XObject ``draws`` times (``/Fm0 Do``), the form's compressed stream (a few KB)
    inflating to ``form_kb`` KB of text operators."""
    line = b"BT /F1 12 Tf 72 720 Td (" + b"A" * 200 + b") Tj ET\n"
    heavy = zlib.compress(line * max(1, form_kb * 1024 // len(line)), 9)
    light = f"BT /F1 12 Tf 72 720 Td ({first_page}) Tj ET".encode("latin-1")
    draw = b" ".join([b"/Fm0 Do"] * draws)
    page = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> /XObject << /Fm0 8 0 R >> >> "
            b"/Contents %d 0 R >>")
    form = (b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] "
            b"/Resources << /Font << /F1 3 0 R >> >> /Length %d /Filter /FlateDecode >>\n"
            b"stream\n" % len(heavy) + heavy + b"\nendstream")
    return pdf_file([b"<< /Type /Catalog /Pages 2 0 R >>",
                     b"<< /Type /Pages /Kids [4 0 R 5 0 R] /Count 2 >>",
                     b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
                     page % 6, page % 7,
                     b"<< /Length %d >>\nstream\n" % len(light) + light + b"\nendstream",
                     b"<< /Length %d >>\nstream\n" % len(draw) + draw + b"\nendstream",
                     form])


# --------------------------------------------------------------------------- loopback server

HTML_PAGE = (
    b"<html><head><title>Loopback page</title></head><body><nav>Menu</nav>"
    b"<main><h1>Hello</h1><p>Served from 127.0.0.1.</p></main></body></html>"
)


@dataclass
class EmbeddingsBehaviour:
    """How the fake OpenAI-compatible /v1/embeddings endpoint answers."""

    dimensions: int = 8
    fail_status: int | None = None
    fail_times: int = 0  # answer fail_status this many times, then succeed
    wrong_dimensions: bool = False
    sleep_s: float = 0.0
    requests: list[dict[str, Any]] = field(default_factory=list)
    auth_headers: list[str | None] = field(default_factory=list)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out on purpose leave broken pipes behind; that is the test.
        pass


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 with the routes the fetch and embedder tests use."""

    def __init__(self) -> None:
        self.embeddings = EmbeddingsBehaviour()
        self.hits: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

            def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(status)
                headers = dict(headers or {})
                headers.setdefault("Content-Length", str(len(body)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body)

            def _chunked(self, pieces: Any, delay: float = 0.0) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    for piece in pieces:
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                        self.wfile.flush()
                        if delay:
                            time.sleep(delay)
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as the test intends

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = parse_qs(parts.query)
                server.hits[parts.path] = server.hits.get(parts.path, 0) + 1
                route = parts.path
                if route == "/doc.html":
                    self._send(200, HTML_PAGE, {"Content-Type": "text/html; charset=utf-8"})
                elif route == "/host":
                    self._send(200, (self.headers.get("Host") or "").encode())
                elif route == "/redirect":
                    self._send(302, b"", {"Location": query["to"][0]})
                elif route == "/loop":
                    self._send(302, b"", {"Location": "/loop"})
                elif route == "/big":
                    self._send(200, b"x" * 5000, {"Content-Type": "text/plain"})
                elif route == "/big-chunked":
                    self._chunked([b"y" * 1000] * 5)
                elif route == "/gzip-bomb":
                    body = gzip.compress(b"\0" * 2_000_000)
                    self._send(200, body, {"Content-Type": "text/plain", "Content-Encoding": "gzip"})
                elif route == "/slow":
                    time.sleep(3)
                    self._send(200, b"late")
                elif route == "/drip":
                    self._chunked([b"."] * 30, delay=0.1)
                elif route == "/missing":
                    self._send(404, b"not here")
                else:
                    self._send(404, b"unknown route")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                payload = json.loads(self.rfile.read(length) or b"{}")
                if self.path != "/v1/embeddings":
                    self._send(404, b"unknown route")
                    return
                beh = server.embeddings
                beh.requests.append(payload)
                beh.auth_headers.append(self.headers.get("Authorization"))
                if beh.sleep_s:
                    time.sleep(beh.sleep_s)
                if beh.fail_status is not None and beh.fail_times > 0:
                    beh.fail_times -= 1
                    self._send(
                        beh.fail_status,
                        b'{"error": {"message": "try later"}}',
                        {"Content-Type": "application/json", "Retry-After": "0"},
                    )
                    return
                dims = beh.dimensions + (1 if beh.wrong_dimensions else 0)
                data = [
                    # Deterministic vectors: text length and position, easy to assert.
                    {"index": i, "embedding": [float(len(text))] + [float(i)] * (dims - 1)}
                    for i, text in enumerate(payload["input"])
                ]
                data.reverse()  # servers may answer out of order; "index" is what counts
                body = json.dumps({"data": data, "model": payload["model"]}).encode()
                self._send(200, body, {"Content-Type": "application/json"})

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        self.embeddings = EmbeddingsBehaviour()
        self.hits.clear()
