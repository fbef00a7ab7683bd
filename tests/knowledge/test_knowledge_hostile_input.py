"""Hostile input to the knowledge API, as an attacker would send it: web ingestion URLs
naming loopback in other notations or using other schemes, upload file names that look
like paths or carry control characters, lying content types, malformed files and a PDF
decompression bomb, hostile tags, and an endless upload without a length.  Each ends in a
clear refusal or a run with a clear end state, and the loopback test server (which web
ingestion, allowing public addresses only, must never reach) sees no request."""

from __future__ import annotations

import json
import zlib
from collections.abc import AsyncIterator

import httpx
import pytest

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from tests.knowledge.helpers import LoopbackServer, pdf_file
from tests.knowledge.support import drain_jobs, upload
from tests.support.identity import make_user
from tests.support.sql import scalar

API = "/api/v1/knowledge"
FETCH_REFUSED = "https://roost.dev/problems/fetch-refused"
INVALID_URL = "https://roost.dev/problems/invalid-url"


async def _run_errors(client: httpx.AsyncClient, headers: dict[str, str],
                      run_id: str) -> tuple[str, list[str]]:
    run = (await client.get(f"{API}/ingestion-runs/{run_id}", headers=headers)).json()
    return run["status"], [error["type"] for error in run["errors"]]


# --------------------------------------------------------------------------- web ingestion

# Literal addresses and localhost names: refused at once, nothing queued.
REFUSED_AT_ONCE = [
    "0.0.0.0",  # noqa: S104 - an address under test, not a bind
    "[::ffff:127.0.0.1]", "[0:0:0:0:0:ffff:7f00:1]", "[::127.0.0.1]", "[::]",
    "[::1%25lo]", "LOCALHOST", "foo.localhost", "[::ffff:7f00:1]", "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
    "127\u30020\u30020\u30021",  # ideographic full stops, IDNA-mapped to dots
]
# Names the resolver turns into loopback: refused when the run fetches.
RESOLVED_TO_LOOPBACK = ["127.1", "0", "2130706433", "0x7f000001", "017700000001", "0x7f.1"]
# Fully qualified names: refused or unresolvable, depending on the machine's resolver.
TRAILING_DOT = ["localhost.", "127.0.0.1.", "foo.localhost."]


async def test_web_ingestion_never_reaches_loopback_in_any_notation(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
    loopback: LoopbackServer,
) -> None:
    _, headers = await make_user(database)
    queued: dict[str, str] = {}
    for host in REFUSED_AT_ONCE + RESOLVED_TO_LOOPBACK + TRAILING_DOT:
        url = f"http://{host}:{loopback.port}/doc.html"
        answer = await kclient.post(f"{API}/ingestion-runs", headers=headers,
                                    json={"target": url})
        if host in REFUSED_AT_ONCE:
            assert answer.status_code == 403, (host, answer.text)
            assert answer.json()["type"] == FETCH_REFUSED, (host, answer.text)
        else:
            assert answer.status_code == 202, (host, answer.text)
            queued[host] = answer.json()["id"]
    await drain_jobs(database, kcfg)
    for host, run_id in queued.items():
        expected = {"fetch-refused"} if host in RESOLVED_TO_LOOPBACK else {
            "fetch-refused", "fetch-failed"}
        status, errors = await _run_errors(kclient, headers, run_id)
        assert status == "failed" and len(errors) == 1 and errors[0] in expected, (
            host, status, errors)
    assert loopback.hits == {}


HOSTILE_URLS = [
    *((url, 400, INVALID_URL) for url in (
        "file:///etc/passwd", "gopher://127.0.0.1:70/_x", "ftp://example.com/x",
        "data:text/plain,hello", "dict://127.0.0.1:11211/stat", "javascript:alert(1)",
        "http://example.com@127.0.0.1/",  # a user name, not a host
        "http://[::1/",
        "http://127.0.0.1:99999/", "http://127.0.0.1:-1/")),  # a port outside 1-65535
    ("http://127.0.0.1#@example.com/", 403, FETCH_REFUSED),
    ("http://example.com/" + "x" * 100_000, 422, None),
    ("http://\x00example.com/", 422, None),
    # Names no resolver answers: accepted, then the run fails.
    ("http://" + "a" * 70 + ".example.com/", 202, "invalid-url"),  # a label over 63: no DNS name
    ("http://exa mple.com/", 202, "fetch-failed"),
    ("https://%31%32%37.0.0.1/", 202, "fetch-failed"),  # not decoded into 127
]


@pytest.mark.parametrize(("url", "status", "problem"), HOSTILE_URLS,
                         ids=[repr(url)[1:-1][:40] for url, _, _ in HOSTILE_URLS])
async def test_hostile_web_ingestion_urls_are_refused_or_end_in_a_failed_run(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
    loopback: LoopbackServer, url: str, status: int, problem: str | None,
) -> None:
    _, headers = await make_user(database)
    answer = await kclient.post(f"{API}/ingestion-runs", headers=headers,
                                json={"target": url, "from_web": True})
    assert answer.status_code == status, answer.text[:500]
    if status == 202:
        await drain_jobs(database, kcfg)
        assert await _run_errors(kclient, headers, answer.json()["id"]) == ("failed", [problem])
    else:
        body = answer.json()
        assert body["detail"] and (problem is None or body["type"] == problem), body
    assert loopback.hits == {}


# --------------------------------------------------------------------------- uploads

# The name sent -> the document's name: its last path segment, printable, at most 255.
# (httpx percent-escapes CR, LF and quotes in a multipart file name, as browsers do.)
NAMES = {
    "../../etc/passwd": "passwd", "/etc/passwd": "passwd",
    "..\\..\\windows\\win.ini": "win.ini", "C:\\boot.ini": "boot.ini",
    "a\x00b.txt": "a%00b.txt", "evil\nname.txt": "evil%0Aname.txt",
    "evil\r\nX-Header: 1.txt": "evil%0D%0AX-Header: 1.txt", "\u202etxt.exe": "txt.exe",
    "\t.txt": "%09.txt", "名前.txt": "名前.txt", "CON": "CON", "NUL.txt": "NUL.txt",
    # Composed (NFC): a Mac's decomposed "étude" is the same name, the same document.
    "e\u0301tude.txt": "\u00e9tude.txt", "\u00e9tude.txt": "\u00e9tude.txt",
    # A label, never a path: stored as sent.
    ".": ".", "..": "..", "...": "...",
    "x" * 1000 + ".txt": "x" * 251 + ".txt",  # shortened before its extension
}


async def test_an_upload_s_name_becomes_a_plain_label(
    kclient: httpx.AsyncClient, database: Database,
) -> None:
    user_id, headers = await make_user(database)
    stored = {}
    for sent in NAMES:
        answer = await upload(kclient, headers, sent, b"plain words about herons")
        assert answer.status_code == 202, (sent[:40], answer.text)
        stored[sent] = answer.json()["document"]["name"]
    assert stored == NAMES
    for nameless in ("/", " ", "\\"):
        refused = await upload(kclient, headers, nameless, b"words")
        assert refused.status_code == 422, (nameless, refused.text)
        assert refused.json()["detail"] == "the uploaded file needs a file name"
    # A name past the multipart parser's header limit: the whole request is malformed.
    too_long = await upload(kclient, headers, "x" * 5000 + ".txt", b"words")
    assert too_long.status_code == 400, too_long.text
    assert too_long.json()["detail"] == "Invalid multipart data."
    # One document per name (a name uploaded again replaces its document).
    assert await scalar(database, "SELECT count(*) FROM documents WHERE user_id = :u",
                        u=user_id) == len(set(NAMES.values()))


CONTENT_TYPES: list[tuple[str, int | str]] = [
    ("text/plain\x00", 422),  # refused naming the Content-Type
    ("text/plain; charset=\x00", 422),
    ("x" * 10_000, 400),  # past the multipart parser's header limit
    ("text/plain; charset=no-such-codec", "ready"),
    ("text/plain; charset=utf-7", "ready"),
    ("", "ready"),
    ("application/pdf", "the file is declared as PDF but has no %PDF- header"),
    # A type Roost does not read, on a text file with a text extension: read by the
    # extension (Windows browsers send application/vnd.ms-excel for every .csv).
    ("multipart/form-data; boundary=x", "ready"),
]


@pytest.mark.parametrize(("content_type", "outcome"), CONTENT_TYPES,
                         ids=[repr(c)[1:-1][:30] or "none" for c, _ in CONTENT_TYPES])
async def test_a_hostile_content_type_is_refused_or_read_for_what_the_file_is(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
    content_type: str, outcome: int | str,
) -> None:
    _, headers = await make_user(database)
    answer = await upload(kclient, headers, "c.txt", "words + é\n".encode(), content_type)
    if isinstance(outcome, int):
        assert answer.status_code == outcome, answer.text
        assert answer.json()["detail"]
        assert await scalar(database, "SELECT count(*) FROM documents") == 0
        return
    assert answer.status_code == 202, answer.text
    await drain_jobs(database, kcfg)
    doc = (await kclient.get(f"{API}/documents/{answer.json()['document']['id']}",
                             headers=headers)).json()
    if outcome == "ready":
        assert (doc["status"], doc["error_message"]) == ("ready", None), doc
    else:
        assert (doc["status"], doc["error_message"]) == ("error", outcome), doc


def _flate_bomb_pdf(levels: int, raw: int) -> bytes:
    """A one-page PDF whose content stream is ``raw`` zero bytes, deflated ``levels``
    times over."""
    stream = b"\0" * raw
    for _ in range(levels):
        stream = zlib.compress(stream, 9)
    filters = " ".join(["/FlateDecode"] * levels)
    return pdf_file([
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 5 0 R >> >> /Contents 4 0 R >>",
        (f"<< /Length {len(stream)} /Filter [{filters}] >>\nstream\n".encode()
         + stream + b"\nendstream"),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ])


MALFORMED = [
    ("bad.txt", b"caf\xe9 \xff\xfe\x80 text that is not utf-8 \xc3\x28",
     "text/plain; charset=utf-8", ["café ÿþ€ text that is not utf-8 Ã("], None),
    ("bad.md", b"# T\xc3\n\n\xed\xa0\x80 surrogate bytes", "text/markdown",
     ["í\xa0€ surrogate bytes"], None),
    ("bad.html", b"<html><meta charset=utf-8><p>\xff\xfe\xfa</p>", "text/html", ["ÿþú"], None),
    ("nul.txt", b"text with \x00 NUL \x00 bytes inside it", "text/plain", [],
     "unsupported-document"),
    ("zip.docx", b"PK\x03\x04" + b"\x00" * 200,
     "application/vnd.openxmlformats-officedocument.wordprocessingml.document", [],
     "unsupported-document"),
    ("trunc.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R", "application/pdf", [],
     "corrupt-document"),
    # 200 MB of zeros in a few hundred bytes: pypdf's bounded read finds no text in it,
    # which is said (no-text), not a silent ready with no chunks.
    ("bomb.pdf", _flate_bomb_pdf(2, 200_000_000), "application/pdf", [], "no-text"),
]


@pytest.mark.parametrize(("name", "data", "content_type", "chunks", "error"), MALFORMED,
                         ids=[case[0] for case in MALFORMED])
async def test_a_malformed_upload_ends_ready_or_with_a_clear_error(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
    name: str, data: bytes, content_type: str, chunks: list[str], error: str | None,
) -> None:
    _, headers = await make_user(database)
    answer = await upload(kclient, headers, name, data, content_type)
    assert answer.status_code == 202, answer.text
    await drain_jobs(database, kcfg)
    doc_id = answer.json()["document"]["id"]
    doc = (await kclient.get(f"{API}/documents/{doc_id}", headers=headers)).json()
    run = await _run_errors(kclient, headers, answer.json()["ingestion_run"]["id"])
    if error is None:
        assert (doc["status"], run) == ("ready", ("success", [])), (doc, run)
        stored = (await kclient.get(f"{API}/documents/{doc_id}/chunks", headers=headers)).json()
        assert [c["content"] for c in stored] == chunks
    else:
        assert doc["status"] == "error" and doc["error_message"], doc
        assert run == ("failed", [error])


@pytest.mark.parametrize(("files", "form"), [
    ([("file", ("a.md", b"# A", "text/markdown")), ("file", ("b.md", b"# B", "text/markdown"))],
     {}),
    ([("file", ("a.md", b"# A", "text/markdown"))], {"collection": ["left", "right"]}),
])
async def test_a_repeated_form_field_is_a_422_and_nothing_is_stored(
    kclient: httpx.AsyncClient, database: Database,
    files: list[tuple[str, tuple[str, bytes, str]]], form: dict[str, list[str]],
) -> None:
    """Two files in one upload (``curl -F file=@a.md -F file=@b.md``), or one field sent
    twice, is refused naming the field: storing one and reporting success lost the other
    without a word."""
    _, headers = await make_user(database)
    answer = await kclient.post(f"{API}/documents", headers=headers, files=files, data=form)
    assert answer.status_code == 422, answer.text
    assert answer.json()["fields"] == ["file" if not form else "collection"]
    assert await scalar(database, "SELECT count(*) FROM documents") == 0


async def test_hostile_tags_are_a_422_naming_the_problem(
    kclient: httpx.AsyncClient, database: Database,
) -> None:
    _, headers = await make_user(database)
    for tags, detail in (
        ("a\x00b", "tags must not contain NUL characters"),
        (json.dumps(["a\u0000b"]), "tags must not contain NUL characters"),
        (json.dumps([{"x": 1}]), "tags must be strings"),
        (json.dumps([1, 2]), "tags must be strings"),
        # what a terminal, a log or a reader's eye would act on
        (json.dumps(["a\u001b[2Jb"]), "tags must not contain control characters, line "
                                      "breaks or bidirectional overrides"),
        ("a\nb,c", "tags must not contain control characters, line breaks or bidirectional "
                  "overrides"),
        (json.dumps(["invoice\u202efdp.exe"]), "tags must not contain control characters, "
                                              "line breaks or bidirectional overrides"),
        ("[" * 10_000, "request has invalid or missing fields; see errors"),
    ):
        answer = await upload(kclient, headers, "t.txt", b"words", tags=tags)
        assert answer.status_code == 422, (tags[:30], answer.text)
        assert answer.json()["detail"] == detail, (tags[:30], answer.text)
    assert await scalar(database, "SELECT count(*) FROM documents") == 0


@pytest.mark.parametrize("tags", ["[" * 5000, "[" * 2000 + "]" * 2000])
async def test_deeply_nested_tags_within_the_field_limit_are_a_422(
    kclient: httpx.AsyncClient, database: Database, tags: str,
) -> None:
    """Thousands of nested arrays (under the form field's 8192 characters) exhaust the JSON
    parser's recursion: a 422 like any malformed tags, not a 500."""
    _, headers = await make_user(database)
    answer = await upload(kclient, headers, "h.txt", b"hostile form", tags=tags)
    assert answer.status_code == 422, (answer.status_code, answer.text[:500])
    assert "tags is not a valid JSON array" in answer.json()["detail"], answer.text[:500]
    assert await scalar(database, "SELECT count(*) FROM documents") == 0


async def test_an_endless_upload_without_a_length_is_cut_off_early(
    kclient: httpx.AsyncClient, database: Database,
) -> None:
    """A multipart body streamed without Content-Length, far past max_request_bytes
    (256 KiB here): a 413, and the server stopped reading soon after the limit."""
    _, headers = await make_user(database)
    sent = 0
    boundary = "endlessboundary"

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="huge.txt"\r\nContent-Type: text/plain\r\n\r\n').encode()
        for piece in (head, *(b"a" * 16384 for _ in range(4096))):  # up to 64 MiB
            sent += len(piece)
            yield piece

    answer = await kclient.post(f"{API}/documents", content=body(), headers={
        **headers, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 413, answer.text[:300]
    assert answer.json()["detail"]
    assert sent < 8 * 1024 * 1024, f"the server read {sent} bytes before answering 413"
