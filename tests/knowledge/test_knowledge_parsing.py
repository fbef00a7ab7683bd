from __future__ import annotations

import io
import re
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.errors import RoostError
from roost.knowledge.parsing import (
    MIME_HTML,
    MIME_MARKDOWN,
    MIME_PDF,
    MIME_TEXT,
    CorruptDocument,
    DocumentTooComplex,
    ParseError,
    UnsupportedDocument,
    detect_mime,
    parse_document,
)
from tests.knowledge.helpers import (
    make_pdf,
    pages_sharing_one_stream,
    pdf_drawing_a_form,
    pdf_with_a_heavy_page,
    surrogate_pdf,
)

# --------------------------------------------------------------------------- text


def test_plain_utf8_text() -> None:
    doc = parse_document("Grüße aus Köln.\r\nZweite Zeile.".encode(), filename="notes.txt")
    assert doc.mime == MIME_TEXT
    assert doc.title == "notes.txt"
    assert [s.text for s in doc.sections] == ["Grüße aus Köln.\nZweite Zeile."]


def test_text_encodings_fall_back_sensibly() -> None:
    assert parse_document("café crème".encode("cp1252"), filename="a.txt").text == "café crème"
    assert parse_document("naïve".encode("utf-16"), filename="a.txt").text == "naïve"
    assert parse_document("no bom here".encode("utf-16-le"), filename=None).text == "no bom here"
    # A declared charset wins over guessing.
    koi8 = "Привет".encode("koi8_r")
    assert parse_document(koi8, filename=None, mime="text/plain; charset=koi8-r").text == "Привет"


@pytest.mark.parametrize("charset", ["iso-8859-1", "latin-1", "us-ascii", "windows-1252"])
def test_utf8_text_declared_latin1_is_read_as_utf8(charset: str) -> None:
    """A server's default charset on a UTF-8 file: strict UTF-8 holding non-ASCII wins (a
    legacy text almost never is valid UTF-8), so no "itâ€™s" mojibake nor a C1 control
    that would refuse the file as binary."""
    data = "it\u2019s \u201cfine\u201d \u2014 d\u00e9j\u00e0 vu".encode()
    doc = parse_document(data, filename=None, mime=f"text/plain; charset={charset}")
    assert doc.text == "it\u2019s \u201cfine\u201d \u2014 d\u00e9j\u00e0 vu"


def test_latin1_labels_mean_cp1252_as_in_whatwg() -> None:
    data = "\u201cquoted\u201d caf\u00e9".encode("cp1252")
    doc = parse_document(data, filename=None, mime="text/plain; charset=iso-8859-1")
    assert doc.text == "\u201cquoted\u201d caf\u00e9"


def test_a_declared_utf16_is_honoured_only_where_the_bytes_can_be_utf16() -> None:
    """ASCII bytes (no BOM, no NULs) declared UTF-16 are UTF-8; UTF-16 without a BOM
    whose bytes are no UTF-8 is read as declared."""
    ascii_csv = parse_document(b"city,seats\nParis,12\n", filename=None,
                               mime="text/csv; charset=utf-16")
    assert ascii_csv.text == "city,seats\nParis,12"
    chinese = "\u4e2d\u6587\u6587\u4ef6\u5939".encode("utf-16-le")
    assert b"\x00" not in chinese
    doc = parse_document(chinese, filename=None, mime="text/plain; charset=utf-16-le")
    assert doc.text == "\u4e2d\u6587\u6587\u4ef6\u5939"


@pytest.mark.parametrize("charset", ["rot13", "base64", "hex", "zlib", "undefined", "nonsense"])
def test_a_declared_charset_that_is_not_a_text_encoding_is_ignored(charset: str) -> None:
    """Codecs that are no text encodings (rot13, base64...) or decode nothing
    ("undefined") are ignored as an unknown name is: UTF-8 and the fallbacks decide."""
    doc = parse_document("héron".encode(), filename=None, mime=f"text/plain; charset={charset}")
    assert doc.text == "héron"


def test_text_that_decodes_to_lone_surrogates_is_made_storable() -> None:
    """A declared UTF-7 can spell a lone surrogate ("+2AA-" is U+D800), which neither
    PostgreSQL nor the tokenizer take: it becomes U+FFFD."""
    data = b"herons wade in shallow water " * 4 + b"+2AA-"
    doc = parse_document(data, filename=None, mime="text/plain; charset=utf-7")
    assert doc.text.endswith("water \ufffd") and doc.text.isprintable()


def test_title_falls_back_to_first_line_without_filename() -> None:
    doc = parse_document(b"\n\n  First line here  \nbody", filename=None, mime="text/plain")
    assert doc.title == "First line here"


def test_binary_content_is_rejected() -> None:
    with pytest.raises(UnsupportedDocument, match="binary"):
        parse_document(b"\x00\x01\x02\x03\x04 not text \x00\xff", filename="data.bin")
    with pytest.raises(UnsupportedDocument, match="PNG"):
        parse_document(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, filename="notes.txt")
    with pytest.raises(UnsupportedDocument, match="ZIP"):
        parse_document(b"PK\x03\x04" + b"\x00" * 20, filename="report.docx")


def test_unsupported_declared_mime_is_rejected_with_actionable_message() -> None:
    with pytest.raises(UnsupportedDocument) as info:
        parse_document(b"hello", filename="x", mime="image/png")
    assert "image/png" in info.value.detail
    assert "Markdown, HTML or PDF" in info.value.detail
    assert info.value.status == 415
    assert isinstance(info.value, ParseError) and isinstance(info.value, RoostError)


def test_text_that_starts_like_a_magic_number_is_still_text() -> None:
    doc = parse_document(b"GIF89a was a popular image format.", filename="history.txt")
    assert doc.text.startswith("GIF89a")


def test_empty_text_gives_no_sections() -> None:
    doc = parse_document(b"   \n\n  ", filename="empty.txt")
    assert doc.sections == []


@pytest.mark.parametrize(
    ("filename", "mime", "expected"),
    [
        ("a.md", None, MIME_MARKDOWN),
        ("a.md", "text/plain", MIME_MARKDOWN),  # browsers send text/plain for .md
        ("a.md", "application/octet-stream", MIME_MARKDOWN),
        ("page", "text/html; charset=utf-8", MIME_HTML),
        ("index.php", "text/html", MIME_HTML),
        ("a.htm", None, MIME_HTML),
        ("script.py", None, MIME_TEXT),
        ("data.json", "application/json", MIME_TEXT),
        ("README", None, MIME_TEXT),
        (None, None, MIME_TEXT),
    ],
)
def test_detect_mime_by_mime_and_extension(filename: str | None, mime: str | None, expected: str) -> None:
    assert detect_mime(b"# Title\n\nbody", filename=filename, mime=mime) == expected


def test_detect_mime_by_magic_and_sniffing() -> None:
    pdf = make_pdf(["x"])
    # Magic bytes beat a misleading name and mime.
    assert detect_mime(pdf, filename="notes.txt", mime="text/plain") == MIME_PDF
    assert detect_mime(b"<!DOCTYPE html><html><body>x</body></html>", filename=None) == MIME_HTML


# --------------------------------------------------------------------------- markdown

MARKDOWN = b"""---
title: Operator Guide
tags: [a, b]
---
Preamble before any heading.

# Guide

Welcome text.

## Install

```bash
# this is a shell comment, not a heading
pip install roost
```

### Linux

Use apt.

Setext Heading
--------------

Under setext.

# Appendix

- item one
---
"""


def test_markdown_sections_keep_heading_paths() -> None:
    doc = parse_document(MARKDOWN, filename="guide.md")
    assert doc.mime == MIME_MARKDOWN
    assert doc.title == "Operator Guide"  # front matter beats the first H1
    headings = [s.heading for s in doc.sections]
    assert headings == [
        None,
        "Guide",
        "Guide > Install",
        "Guide > Install > Linux",
        "Guide > Setext Heading",
        "Appendix",
    ]
    texts = {s.heading: s.text for s in doc.sections}
    assert texts[None] == "Preamble before any heading."
    assert "# this is a shell comment, not a heading" in texts["Guide > Install"]
    assert "tags:" not in doc.text  # front matter is metadata, not content
    assert texts["Appendix"] == "- item one\n---"  # "---" after a list item is a rule


def test_markdown_title_from_first_h1_without_front_matter() -> None:
    doc = parse_document(b"intro\n\n# The Title\n\ntext\n\n# Second\n", filename="x.md")
    assert doc.title == "The Title"


def test_a_markdown_outline_of_headings_only_is_its_text() -> None:
    """A file of headings and nothing under them (an outline) is searchable by them, not
    a document without text."""
    doc = parse_document(b"# Plan\n\n## Hire two engineers\n## Ship the console\n",
                         filename="plan.md")
    assert doc.title == "Plan"
    assert [s.text for s in doc.sections] == ["Plan\nHire two engineers\nShip the console"]


@pytest.mark.parametrize(("line", "heading"), [
    ("# Title", "Title"),
    ("##   Spaced   out  ", "Spaced   out"),
    ("### Closed ###", "Closed"),
    ("# Closed \t#   ", "Closed"),
    ("# Hash#tag#", "Hash#tag#"),  # a closing sequence follows a space
    ("#\tTabbed", "Tabbed"),
    ("   # Indented", "Indented"),
])
def test_markdown_atx_headings(line: str, heading: str) -> None:
    doc = parse_document(f"{line}\n\nbody".encode(), filename="x.md")
    assert [(s.heading, s.text) for s in doc.sections] == [(heading, "body")]


@pytest.mark.parametrize("line", ["#NoSpace", "####### seven", "    # four spaces in"])
def test_markdown_lines_that_are_no_atx_headings_stay_text(line: str) -> None:
    doc = parse_document(line.encode(), filename="x.md")
    assert [(s.heading, s.text) for s in doc.sections] == [(None, line.strip())]


@pytest.mark.parametrize("line", ["#", "##  ", "# ##", "### ### "])
def test_markdown_empty_atx_headings_are_dropped(line: str) -> None:
    doc = parse_document(f"{line}\nbody".encode(), filename="x.md")
    assert [(s.heading, s.text) for s in doc.sections] == [(None, "body")]


def test_markdown_front_matter_title_is_trimmed_and_never_the_next_line() -> None:
    doc = parse_document(b"---\ntitle:   Spaced   Title   \n---\nbody\n", filename="x.md")
    assert doc.title == "Spaced Title"
    doc = parse_document(b"---\ntitle:\nauthor: me\n---\n# Heading\n", filename="x.md")
    assert doc.title == "Heading"


def test_a_markdown_heading_line_of_spaces_parses_in_linear_time() -> None:
    """'# a<1 MB of spaces>b' took the ATX heading regex quadratic time (its lazy
    "(.*?)" before "[ \\t]*$": 1.5 s at 16 KB, hours at 1 MB); it now takes well under a
    second.  Run in a child process, so a regression fails here instead of hanging."""
    code = ("from roost.knowledge.parsing import parse_document\n"
            "d = parse_document(b'# a' + b' ' * 1_000_000 + b'b', filename='x.md')\n"
            "assert d.title == 'a b', d.title\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("parsing one 1 MB Markdown line did not end in 60 s: a quadratic regex")
    assert proc.returncode == 0, err.decode()[-2000:]


# --------------------------------------------------------------------------- html

HTML = """<!DOCTYPE html>
<html><head>
  <meta charset="utf-8"><title>Roost &amp; Friends</title>
  <style>body { color: red; }</style>
  <script>var secret = "do not index";</script>
</head>
<body>
  <header><h1>Site Banner</h1><nav><a href="/">Home</a> <a href="/about">About</a></nav></header>
  <div role="navigation">Breadcrumbs</div>
  <main>
    <h1>Vector Search</h1>
    <p>PostgreSQL   stores
       embeddings with <b>pgvector</b>.</p>
    <h2>Indexes</h2>
    <p>HNSW uses m=16 &amp; ef_construction=64.</p>
    <pre>CREATE INDEX ON chunks
    USING hnsw (embedding vector_cosine_ops);</pre>
    <h3>Tuning</h3>
    <ul><li>Raise ef_search</li><li>Watch recall</li></ul>
    <h4>Minor note</h4><p>Small heading stays text.</p>
    <div hidden>Hidden text</div>
    <noscript>Enable JS</noscript>
  </main>
  <aside>Related articles</aside>
  <footer>Copyright 2026</footer>
  <script>trackUser();</script>
</body></html>
"""


def test_html_boilerplate_dropped_and_headings_kept() -> None:
    doc = parse_document(HTML.encode(), filename=None, mime="text/html")
    assert doc.mime == MIME_HTML
    assert doc.title == "Roost & Friends"
    text = doc.text
    for boilerplate in (
        "Site Banner", "Home", "About", "Breadcrumbs", "Related articles", "Copyright",
        "secret", "trackUser", "color: red", "Hidden text", "Enable JS",
    ):  # fmt: skip
        assert boilerplate not in text, boilerplate
    by_heading = {s.heading: s.text for s in doc.sections}
    assert by_heading["Vector Search"] == "PostgreSQL stores embeddings with pgvector."
    assert "HNSW uses m=16 & ef_construction=64." in by_heading["Vector Search > Indexes"]
    # <pre> keeps its line breaks and indentation.
    assert "CREATE INDEX ON chunks\n    USING hnsw" in by_heading["Vector Search > Indexes"]
    tuning = by_heading["Vector Search > Indexes > Tuning"]
    assert "Raise ef_search\nWatch recall" in tuning
    assert "Minor note\n\nSmall heading stays text." in tuning


def test_html_without_main_keeps_all_non_boilerplate_text() -> None:
    page = b"<html><body><nav>menu</nav><h2>Part</h2><p>One.</p><p>Two.</p></body></html>"
    doc = parse_document(page, filename="p.html")
    assert [(s.heading, s.text) for s in doc.sections] == [("Part", "One.\n\nTwo.")]
    assert doc.title == "p.html"


def test_html_meta_charset_is_honoured() -> None:
    page = '<html><head><meta charset="iso-8859-1"></head><body><p>déjà vu</p></body></html>'
    doc = parse_document(page.encode("latin-1"), filename="p.html")
    assert doc.text == "déjà vu"


@pytest.mark.parametrize("charset", ["utf-16", "UTF-16LE", "utf-16be", "utf-32"])
def test_an_html_meta_charset_of_utf16_or_utf32_in_ascii_bytes_means_utf8(charset: str) -> None:
    """WHATWG: a <meta> readable as ASCII cannot be in UTF-16/32; the page is UTF-8."""
    page = f'<html><head><meta charset="{charset}"></head><body><p>déjà vu</p></body></html>'
    assert parse_document(page.encode(), filename="p.html").text == "déjà vu"


def test_an_html_meta_charset_naming_no_text_encoding_is_ignored() -> None:
    page = "<html><meta charset=base64><p>déjà vu</p></html>"
    assert parse_document(page.encode(), filename="p.html").text == "déjà vu"


def test_html_with_unclosed_boilerplate_does_not_crash() -> None:
    doc = parse_document(b"<p>before</p><nav><ul><li>x", filename="p.html")
    assert doc.text == "before"


def test_an_end_tag_in_a_hidden_element_closes_its_unclosed_children() -> None:
    """As a browser does: </section> closes the <div> left open in it, so the hidden
    <div>'s own end tag ends the hidden part and the text after it is kept."""
    page = b"<div hidden><section><div>secret</section></div>visible <nav><b>menu</i></nav>end"
    assert parse_document(page, filename="p.html").text == "visible end"


def test_html_end_tags_inside_a_skipped_element_are_found_without_a_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Parsing HTML does work proportional to its size: an end tag inside <nav>/<script>
    must not scan the whole list of open tags (a 10 MB upload of
    "<nav><b><b>...</i></i>..." pinned a worker thread for hours)."""
    import roost.knowledge.parsing as parsing

    scanned = [0]

    class CountingList(list[str]):
        def __contains__(self, item: object) -> bool:
            scanned[0] += len(self)
            return super().__contains__(item)

    real_init = parsing._HtmlExtractor.__init__

    def init(self: parsing._HtmlExtractor) -> None:
        real_init(self)
        self._skip = CountingList()

    monkeypatch.setattr(parsing._HtmlExtractor, "__init__", init)
    n = 20_000
    data = b"<html><body><nav>" + b"<b>" * n + b"</i>" * n + b"</nav><p>hi</p></body></html>"
    parsed = parsing.parse_document(data, filename="x.html", mime="text/html")
    assert parsed.text == "hi"
    assert scanned[0] <= 50 * len(data), (
        f"{scanned[0]} open tags compared for a {len(data)}-byte page: quadratic")


@pytest.mark.parametrize("page", [
    b"<nav>" + b"<b>" * 5000 + b"</i>" * 5000 + b"</nav><p>hi</p>",
    b"<body>" + b"<div>" * 20_000 + b"hi" + b"</div>" * 20_000,
    b"<p>" + b"<br>\n " * 20_000 + b"hi",
], ids=["nesting-in-nav", "nested-divs", "line-breaks"])
def test_html_parsing_takes_memory_in_proportion_to_the_text_not_the_tags(page: bytes) -> None:
    """Runs of tags with no text (nested <div>s, <br>s, tags inside a skipped <nav>) kept
    a string or a list entry each: ~30 bytes of memory per byte of such a page (300 MB
    for 5 MB of <div>s)."""
    import tracemalloc

    tracemalloc.start()
    try:
        doc = parse_document(page, filename="p.html")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert doc.text == "hi"
    assert peak <= 4 * len(page), f"{peak} bytes of memory to parse a {len(page)}-byte page"


def test_html_with_unclosed_title_and_headings_keeps_the_text() -> None:
    doc = parse_document(b"<title>T<body><h1>Head<p>para text</p>", filename="p.html")
    assert doc.title == "T"
    assert "para text" in doc.text
    doc = parse_document(b"<h1>One</h1>a<h2>Two<h2>Three</h2>b", filename="p.html")
    assert [(s.heading, s.text) for s in doc.sections] == [("One", "a"), ("One > Three", "b")]


# --------------------------------------------------------------------------- pdf


def test_pdf_pages_and_title() -> None:
    data = make_pdf(["Chapter one\nThe quick brown fox.", "", "Chapter two is here."], title="Fox Book")
    doc = parse_document(data, filename="fox.pdf", mime="application/pdf")
    assert doc.mime == MIME_PDF
    assert doc.title == "Fox Book"
    assert [(s.page, s.text) for s in doc.sections] == [
        (1, "Chapter one\nThe quick brown fox."),
        (3, "Chapter two is here."),
    ]
    assert doc.warnings == ["1 of 3 pages had no extractable text"]


def test_pdf_title_and_text_are_made_storable() -> None:
    """A NUL in a PDF's /Title is dropped, a lone surrogate from a ToUnicode map becomes
    U+FFFD: PostgreSQL (the chunks' jsonb metadata too) can hold neither."""
    doc = parse_document(make_pdf(["words"], title="a\x00b"), filename="t.pdf")
    assert doc.title == "ab"
    doc = parse_document(surrogate_pdf(), filename="s.pdf")
    assert doc.text == "\ufffd hello herons" and doc.title == "\ufffd hello herons"


def test_pdf_outline_becomes_section_headings() -> None:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf(["a", "b", "c"]))))
    writer.add_outline_item(title="Intro", page_number=0)
    part = writer.add_outline_item(title="Part B", page_number=1)
    writer.add_outline_item(title="Details", page_number=2, parent=part)
    out = io.BytesIO()
    writer.write(out)
    doc = parse_document(out.getvalue(), filename="x.pdf")
    assert [(s.page, s.heading) for s in doc.sections] == [
        (1, "Intro"),
        (2, "Part B"),
        (3, "Part B > Details"),
    ]


def test_pdf_without_text_warns_instead_of_failing() -> None:
    doc = parse_document(make_pdf(["", ""]), filename="scan.pdf")
    assert doc.sections == []
    assert "OCR" in doc.warnings[0]


@pytest.mark.parametrize(
    "data",
    [
        make_pdf(["hello world"])[:200],  # truncated mid-file
        b"%PDF-1.7\n" + b"\x00garbage" * 50,
        b"%PDF-",
    ],
)
def test_corrupt_pdf_raises_corrupt_document(data: bytes) -> None:
    with pytest.raises(CorruptDocument) as info:
        parse_document(data, filename="broken.pdf")
    assert "PDF" in info.value.detail
    assert info.value.status == 422


def test_a_pdf_page_whose_content_inflates_past_the_cap_is_left_out_with_a_warning() -> None:
    """A page of a few KB that inflates to 4 MB of text operators: pypdf's text extraction
    of it alone took ~16 s here (more than in proportion to the size), past any time
    limit, since a page cannot be stopped once started.  Its text is left out with a
    warning; the other pages are read."""
    data = pdf_with_a_heavy_page("Readable first page", inflated_mb=4)
    assert len(data) < 64 * 1024
    doc = parse_document(data, filename="bomb.pdf", time_limit_s=60)
    assert [s.page for s in doc.sections] == [1], doc.sections
    assert "Readable first page" in doc.sections[0].text
    assert any(w.startswith("page 2: its content is 4.0 MB") for w in doc.warnings), doc.warnings


@pytest.mark.parametrize(("form_kb", "draws", "megabytes"), [(3072, 1, "3.0"), (200, 15, "2.9")],
                         ids=["one-big-form", "a-form-drawn-often"])
def test_a_pdf_page_whose_forms_inflate_past_the_cap_is_left_out(
    form_kb: int, draws: int, megabytes: str,
) -> None:
    """The same cap holds for the text a page draws from Form XObjects (``/Fm0 Do``): a
    page of 7 bytes drawing a form of 3 MB, or a 200 KB form drawn 15 times (pypdf reads
    it each time), was read in full, past the cap and any time limit.  Left out with a
    warning; a page drawing a small form once is read."""
    data = pdf_drawing_a_form("Readable first page", form_kb=form_kb, draws=draws)
    assert len(data) < 64 * 1024
    doc = parse_document(data, filename="forms.pdf", time_limit_s=600)
    assert [s.page for s in doc.sections] == [1], [(s.page, len(s.text)) for s in doc.sections]
    assert any(w.startswith(f"page 2: its content is {megabytes} MB") for w in doc.warnings), \
        doc.warnings
    small = parse_document(pdf_drawing_a_form("First", form_kb=4, draws=2), filename="s.pdf",
                           time_limit_s=600)
    assert [s.page for s in small.sections] == [1, 2] and "AAAA" in small.sections[1].text


def test_a_pdf_whose_text_takes_too_long_is_refused_between_pages() -> None:
    # 10,000 pages of one stream: hours of work in 1.5 MB; refused once the limit passes.
    data = pages_sharing_one_stream(10_000, 20_000)
    assert len(data) < 2 * 1024 * 1024
    with pytest.raises(DocumentTooComplex) as info:
        parse_document(data, filename="pages.pdf", time_limit_s=0.2)
    assert info.value.status == 422
    stopped = re.search(r"stopped at page (\d+) of 10000", info.value.detail)
    assert stopped is not None and int(stopped.group(1)) < 100, info.value.detail
    # The same pages, few enough for the limit: read in full.
    small = parse_document(pages_sharing_one_stream(2, 200), filename="two.pdf",
                           time_limit_s=60)
    assert [s.page for s in small.sections] == [1, 2] and small.sections[0].text.startswith("x")


def test_pdf_named_file_without_pdf_content_is_corrupt() -> None:
    with pytest.raises(CorruptDocument, match="no %PDF- header"):
        parse_document(b"just some text", filename="fake.pdf")
    with pytest.raises(CorruptDocument):
        parse_document(b"just some text", filename=None, mime="application/pdf")


def _encrypted_pdf(text: str, user_password: str, algorithm: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(make_pdf([text]))))
    writer.encrypt(user_password=user_password, owner_password="owner", algorithm=algorithm)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def test_password_protected_pdf_is_unsupported() -> None:
    with pytest.raises(UnsupportedDocument, match="password"):
        parse_document(_encrypted_pdf("secret", "pw", "AES-256"), filename="locked.pdf")


def test_pdf_encrypted_with_empty_password_is_read() -> None:
    locked = _encrypted_pdf("open secret", "", "AES-128")
    assert parse_document(locked, filename="perm.pdf").text == "open secret"


# --------------------------------------------------------------------------- robustness

_VALID_PDF = make_pdf(["Robust parsing\nsecond line", "page two"], title="T")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=400),
    filename=st.sampled_from([None, "x.pdf", "x.html", "x.md", "x.txt", "x.bin"]),
    mime=st.sampled_from([None, "application/pdf", "text/html", "text/plain", "image/png"]),
)
def test_arbitrary_bytes_only_ever_raise_parse_errors(
    data: bytes, filename: str | None, mime: str | None
) -> None:
    try:
        parse_document(data, filename=filename, mime=mime)
    except ParseError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.integers(0, len(_VALID_PDF) - 1), st.integers(0, 255)),
        min_size=1,
        max_size=8,
    )
)
def test_damaged_pdfs_only_ever_raise_parse_errors(flips: list[tuple[int, int]]) -> None:
    data = bytearray(_VALID_PDF)
    for position, value in flips:
        data[position] = value
    try:
        parse_document(bytes(data), filename="x.pdf")
    except ParseError:
        pass

