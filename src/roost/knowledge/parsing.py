"""Turn uploaded or fetched bytes into plain-text sections ready for chunking.

Supported: plain text, Markdown, HTML and PDF.  Everything else is refused with
:class:`UnsupportedDocument`; damaged input with :class:`CorruptDocument`.  Both are
:class:`ParseError` (a :class:`roost.errors.RoostError`), so the HTTP layer turns them
into a 4xx problem instead of a 500, and no other exception type escapes
:func:`parse_document` for bad input.

Parsing is CPU-bound (PDFs especially): async callers run it with
:func:`roost.process.cpu_bound`, not the event loop's default executor, which the rest of
the process needs (password hashing, file reads): eight ingestion jobs parsing at once
would otherwise hold all of its threads for as long as their PDFs take.
A PDF is read page by page within a time limit (:data:`PARSE_TIME_LIMIT_S`): a page's
text is read only when its content inflates to at most
:data:`MAX_PDF_PAGE_CONTENT_BYTES` (about 5 s here), but pages may
share one content stream, so a 10 MB file can hold a hundred thousand pages of it, days
of work for a thread nobody can stop.  Past the limit the document is refused
(:class:`DocumentTooComplex`).
"""

from __future__ import annotations

import codecs
import io
import logging
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from html.parser import HTMLParser
from pathlib import PurePosixPath
from typing import Any, Final

from roost.errors import RoostError
from roost.inputs import is_blank

__all__ = [
    "MIME_HTML",
    "MIME_MARKDOWN",
    "MIME_PDF",
    "MIME_TEXT",
    "PARSE_TIME_LIMIT_S",
    "SECTION_SEPARATOR",
    "CorruptDocument",
    "DocumentTooComplex",
    "NoTextFound",
    "ParseError",
    "ParsedDocument",
    "Section",
    "UnsupportedDocument",
    "decode_text",
    "detect_mime",
    "parse_document",
]

log = logging.getLogger(__name__)

MIME_TEXT: Final = "text/plain"
MIME_MARKDOWN: Final = "text/markdown"
MIME_HTML: Final = "text/html"
MIME_PDF: Final = "application/pdf"

#: How section texts are joined into :attr:`ParsedDocument.text`; chunk offsets refer to it.
SECTION_SEPARATOR: Final = "\n\n"

# Heading paths are shown to people and stored in chunk metadata: "Guide > Install > Linux".
HEADING_PATH_SEPARATOR: Final = " > "
_MAX_TITLE_CHARS: Final = 200
#: Seconds a document's text extraction may take (ROOST_KNOWLEDGE_PARSE_TIME_LIMIT_S).
PARSE_TIME_LIMIT_S: Final = 120.0


class ParseError(RoostError):
    """The bytes could not be turned into text."""

    status, title, type_slug = 422, "Document could not be parsed", "document-parse-error"


class UnsupportedDocument(ParseError):
    """The document type is not one Roost can extract text from."""

    status, title, type_slug = 415, "Unsupported document type", "unsupported-document"


class CorruptDocument(ParseError):
    """The document claims a supported type but its content is damaged."""

    status, title, type_slug = 422, "Corrupt document", "corrupt-document"


class DocumentTooComplex(ParseError):
    """Reading the document's text would take longer than the parse time limit."""

    status, title, type_slug = 422, "Document too complex", "document-too-complex"


class NoTextFound(ParseError):
    """The document parsed but holds no text to search (a scanned PDF, a page of scripts).

    Raised by ingestion, not by :func:`parse_document`: an empty result is an answer for
    other readers (a web fetch tool), but a document nobody can find is an error."""

    status, title, type_slug = 422, "No text found", "no-text"


@dataclass(frozen=True, slots=True)
class Section:
    """A run of text that shares one page and one heading path."""

    text: str
    page: int | None = None  # 1-based, PDFs only
    heading: str | None = None  # "H1 > H2 > H3" path, None before the first heading


@dataclass(frozen=True, slots=True)
class ParsedDocument:
    mime: str
    title: str | None
    sections: list[Section]
    # Non-fatal findings worth reporting in an ingestion run (e.g. "no extractable text").
    warnings: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        """All section texts joined by :data:`SECTION_SEPARATOR` (what chunk offsets index)."""
        return SECTION_SEPARATOR.join(s.text for s in self.sections)


# --------------------------------------------------------------------------- detection

_MARKDOWN_MIMES: Final = frozenset({"text/markdown", "text/x-markdown", "text/x-gfm"})
_HTML_MIMES: Final = frozenset({"text/html", "application/xhtml+xml"})
_PDF_MIMES: Final = frozenset({"application/pdf", "application/x-pdf"})
# Structured text that reads fine as plain text.
_TEXTUAL_APPLICATION_MIMES: Final = frozenset(
    {
        "application/json",
        "application/ld+json",
        "application/xml",
        "application/x-yaml",
        "application/yaml",
        "application/toml",
        "application/x-sh",
        "application/javascript",
        "application/x-javascript",
        "application/sql",
        "application/x-ndjson",
    }
)
# Mimes that say nothing specific: the extension or the content decides instead.
_GENERIC_MIMES: Final = frozenset(
    {"", "application/octet-stream", "binary/octet-stream", "application/unknown", "text/plain"}
)

_MARKDOWN_EXTS: Final = frozenset({".md", ".markdown", ".mdown", ".mkd", ".mdx"})
_HTML_EXTS: Final = frozenset({".html", ".htm", ".xhtml"})
_TEXT_EXTS: Final = frozenset(
    {
        ".txt", ".text", ".log", ".rst", ".adoc", ".org", ".tex", ".csv", ".tsv", ".json",
        ".jsonl", ".ndjson", ".yaml", ".yml", ".toml", ".ini", ".cfg", ".conf", ".xml", ".py",
        ".pyi", ".js", ".mjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".go", ".rs", ".c", ".h",
        ".cc", ".cpp", ".hpp", ".cs", ".rb", ".php", ".swift", ".scala", ".sh", ".bash", ".zsh",
        ".sql", ".r", ".lua", ".pl", ".css", ".scss", ".vue", ".svelte", ".env", ".properties",
    }
)  # fmt: skip
# Well-known binary formats get a precise refusal instead of a "binary content" guess.
_BINARY_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"PK\x03\x04", "ZIP archive (also DOCX/XLSX/PPTX/EPUB)"),
    (b"\x1f\x8b", "gzip archive"),
    (b"BZh", "bzip2 archive"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip archive"),
    (b"\xfd7zXZ\x00", "xz archive"),
    (b"Rar!\x1a\x07", "RAR archive"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "legacy Office document (DOC/XLS/PPT)"),
    (b"\x7fELF", "ELF executable"),
    (b"MZ\x90\x00", "Windows executable"),
    (b"OggS", "Ogg media"),
    (b"ID3", "MP3 audio"),
    (b"fLaC", "FLAC audio"),
    (b"SQLite format 3\x00", "SQLite database"),
)
_PDF_MAGIC: Final = b"%PDF-"
# The PDF spec lets readers find the header within the first 1024 bytes.
_PDF_MAGIC_WINDOW: Final = 1024
# An XML prolog and comments may come first (saved pages, XHTML); a BOM is dropped before.
_HTML_SNIFF_RE: Final = re.compile(
    rb"^\s*(?:<\?xml[^>]*\?>\s*)?(?:<!--.*?-->\s*)*(?:<!doctype\s+html|<html[\s>]|<head[\s>])",
    re.I | re.S)


def _split_mime(mime: str | None) -> tuple[str, dict[str, str]]:
    if not mime:
        return "", {}
    base, _, rest = mime.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"').strip("'")
    return base.strip().lower(), params


def _extension(filename: str | None) -> str:
    if not filename:
        return ""
    # Filenames may come from URLs or Windows clients: only the last segment matters.
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return PurePosixPath(name).suffix.lower()


def _binary_kind(data: bytes) -> str | None:
    head = data[:16]
    for magic, kind in _BINARY_MAGIC:
        if head.startswith(magic):
            # A printable signature ("GIF89a", "OggS") could begin a real text file.
            if magic.isascii() and magic.decode("ascii").isprintable() and not _looks_binary(data):
                continue
            return kind
    return None


def _pdf_magic(data: bytes, declared: str, ext: str) -> bool:
    """Whether ``data`` is a PDF by its header: at the start (white space or a BOM before
    it aside) always; further into the first 1024 bytes (readers tolerate junk before
    it) only when nothing says the file is text: a page or a note that mentions "%PDF-"
    near its start was read as a broken PDF (``corrupt-document``)."""
    if data[:64].lstrip(b"\xef\xbb\xbf \t\r\n\x00").startswith(_PDF_MAGIC):
        return True
    if _PDF_MAGIC not in data[:_PDF_MAGIC_WINDOW]:
        return False
    textual = declared.startswith("text/") or declared in _HTML_MIMES or declared in _MARKDOWN_MIMES \
        or ext in _MARKDOWN_EXTS or ext in _HTML_EXTS or ext in _TEXT_EXTS
    return not textual


def _known_text_extension(ext: str) -> bool:
    return ext in _MARKDOWN_EXTS or ext in _HTML_EXTS or ext in _TEXT_EXTS


def detect_mime(data: bytes, *, filename: str | None = None, mime: str | None = None) -> str:
    """Pick one of the supported mimes, or raise :class:`UnsupportedDocument`.

    Order of trust: PDF magic bytes; other well-known binary magic; a specific declared
    mime; the file extension; finally a look at the content.  ``text/plain`` and
    ``application/octet-stream`` count as "not specific" because browsers and servers
    send them for Markdown and unknown files alike.
    """
    declared, _ = _split_mime(mime)
    ext = _extension(filename)
    if _pdf_magic(data, declared, ext):
        return MIME_PDF
    kind = _binary_kind(data)
    if kind is not None:
        raise UnsupportedDocument(
            f"{kind} is not a supported document type; upload text, Markdown, HTML or PDF instead"
        )
    if declared and declared not in _GENERIC_MIMES:
        if declared in _PDF_MIMES:
            return MIME_PDF  # no magic: the PDF parser reports it as corrupt
        if declared in _MARKDOWN_MIMES:
            return MIME_MARKDOWN
        if declared in _HTML_MIMES:
            return MIME_HTML
        if declared.startswith("text/") or declared in _TEXTUAL_APPLICATION_MIMES:
            return MIME_TEXT
        if declared.endswith(("+json", "+xml")):
            return MIME_TEXT
        # A text file sent with another type (Windows browsers with Office send
        # application/vnd.ms-excel for every .csv): its extension and content say text.
        if not (_known_text_extension(ext) and not _looks_binary(data)):
            raise UnsupportedDocument(
                f"documents of type {declared!r} are not supported; upload text, Markdown, "
                "HTML or PDF instead")
    if ext in _MARKDOWN_EXTS:
        return MIME_MARKDOWN
    if ext in _HTML_EXTS:
        return MIME_HTML
    if ext == ".pdf":
        return MIME_PDF
    if ext in _TEXT_EXTS or declared == "text/plain":
        return MIME_TEXT
    if _HTML_SNIFF_RE.match(data[:1024].removeprefix(codecs.BOM_UTF8)):
        return MIME_HTML
    # Unknown extension: accept it if it is text, otherwise refuse it as binary.
    if _looks_binary(data):
        what = f"the {ext} file" if ext else "the content"
        raise UnsupportedDocument(
            f"{what} is binary, not text, and not a supported format; "
            "upload text, Markdown, HTML or PDF instead"
        )
    return MIME_TEXT


# --------------------------------------------------------------------------- text decoding

_BOMS: Final[tuple[tuple[bytes, str], ...]] = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_ALLOWED_CONTROL: Final = frozenset("\t\n\r\f\v\x1b\x08")
_SNIFF_BYTES: Final = 8192


def _utf16_without_bom(sample: bytes) -> str | None:
    """Windows tools write UTF-16 without a BOM: ASCII text then has NULs in every other byte."""
    if len(sample) < 4:
        return None
    even, odd = sample[0::2], sample[1::2]
    even_nuls, odd_nuls = even.count(0) / len(even), odd.count(0) / len(odd)
    if odd_nuls > 0.4 and even_nuls < 0.05:
        return "utf-16-le"
    if even_nuls > 0.4 and odd_nuls < 0.05:
        return "utf-16-be"
    return None


def _looks_binary(data: bytes) -> bool:
    sample = data[:_SNIFF_BYTES]
    if not sample:
        return False
    if any(sample.startswith(bom) for bom, _ in _BOMS) or _utf16_without_bom(sample):
        return False
    if b"\x00" in sample:
        return True
    controls = sum(1 for b in sample if b < 32 and chr(b) not in _ALLOWED_CONTROL)
    return controls / len(sample) > 0.05


def _control_ratio(text: str) -> float:
    sample = text[:_SNIFF_BYTES]
    if not sample:
        return 0.0
    bad = sum(
        1
        for ch in sample
        if ch not in _ALLOWED_CONTROL and unicodedata.category(ch) in ("Cc", "Cs", "Co", "Cn")
    )
    return bad / len(sample)


_LEGACY_LATIN: Final = {"ascii": "cp1252", "iso8859-1": "cp1252"}  # codecs.lookup names


def _strict_utf8(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _decode_declared(data: bytes, declared: str | None) -> str:
    """Decode BOM-less, NUL-less text with the declared charset unless the bytes say otherwise.

    A declared charset is often a server's default rather than the file's: UTF-8 wins
    when the bytes are strict UTF-8 holding non-ASCII (text in a legacy encoding almost
    never is), or when UTF-16/32 is declared (no BOM, no NULs: it cannot be); a declared
    charset whose reading is mostly control characters is passed over too.  Then UTF-8,
    cp1252 and latin-1 (which decodes anything) decide, the first readable as text.
    """
    utf8 = _strict_utf8(data)
    if declared is not None and utf8 is not None and (
            not data.isascii() or declared.startswith(("utf-16", "utf-32"))):
        declared = None
    candidates = ([declared] if declared else []) + ["utf-8", "cp1252", "latin-1"]
    first: str | None = None
    for encoding in candidates:
        try:
            text = utf8 if encoding == "utf-8" else data.decode(encoding)
        except (UnicodeError, LookupError):  # "undefined" refuses everything
            continue
        if text is None:
            continue
        if _control_ratio(text) <= 0.05:
            return text
        first = first if first is not None else text
    assert first is not None  # latin-1 never fails
    return first  # refused as binary by the caller


def decode_text(data: bytes, *, charset: str | None = None) -> str:
    """Decode text bytes: BOM, then the declared charset, then UTF-8, then cp1252/latin-1
    (see :func:`_decode_declared` for when the declared charset is passed over).

    Raises :class:`UnsupportedDocument` for content that is binary rather than text.
    Newlines are normalised to ``\\n``.
    """
    text: str | None = None
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                text = data.decode(encoding)
            except UnicodeDecodeError as exc:
                raise CorruptDocument(
                    f"text starts with a {encoding} BOM but is not valid {encoding}: {exc.reason}"
                ) from None
            break
    if text is None and (enc16 := _utf16_without_bom(data[:_SNIFF_BYTES])):
        text = data.decode(enc16, errors="replace")
    if text is None:
        if _looks_binary(data):
            raise UnsupportedDocument(
                "the content is binary, not text; upload text, Markdown, HTML or PDF instead"
            )
        declared: str | None = None
        if charset:
            try:
                codec = codecs.lookup(charset)
            except LookupError:
                codec = None
            # "rot13", "base64" and the like are codecs but no text encodings: ignored as
            # an unknown name is (decoding with them raises LookupError).
            if codec is not None and getattr(codec, "_is_text_encoding", True):
                # Labels for latin-1 and ASCII mean windows-1252, as in WHATWG's Encoding
                # standard: servers send them by default for what is mostly cp1252 text.
                declared = _LEGACY_LATIN.get(codec.name, codec.name)
            else:
                log.debug("ignoring unknown declared charset %r", charset)
        text = _decode_declared(data, declared)
    if _control_ratio(text) > 0.05:
        raise UnsupportedDocument(
            "the content is binary, not text; upload text, Markdown, HTML or PDF instead"
        )
    return _storable(text.replace("\r\n", "\n").replace("\r", "\n"))


# --------------------------------------------------------------------------- helpers

_BLANK_LINES_RE: Final = re.compile(r"\n[ \t]*\n(?:[ \t]*\n)+")
_SURROGATE_RE: Final = re.compile("[\ud800-\udfff]")


def _storable(text: str) -> str:
    """``text`` as PostgreSQL (and the tokenizer) can take it: NULs dropped, lone
    surrogates (a PDF's ToUnicode map, a "utf-7" or escape codec) replaced by U+FFFD."""
    return _SURROGATE_RE.sub("\ufffd", text.replace("\x00", ""))


def _tidy(text: str) -> str:
    """Strip trailing spaces per line and squeeze runs of blank lines to one."""
    lines = [line.rstrip() for line in text.split("\n")]
    return _BLANK_LINES_RE.sub("\n\n", "\n".join(lines)).strip()


def _short_title(text: str | None) -> str | None:
    if not text:
        return None
    title = " ".join(_storable(text).split())  # a PDF's /Title or bookmark may hold NULs
    if is_blank(title):  # white space or invisible characters (zero-width) only
        return None
    if len(title) > _MAX_TITLE_CHARS:
        title = title[: _MAX_TITLE_CHARS - 1].rstrip() + "…"
    return title


def _title_from_filename(filename: str | None) -> str | None:
    if not filename:
        return None
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return _short_title(name)


def _first_line(sections: Iterable[Section]) -> str | None:
    for section in sections:
        for line in section.text.split("\n"):
            if line.strip():
                return _short_title(line)
    return None


def _heading_path(stack: list[tuple[int, str]]) -> str | None:
    return HEADING_PATH_SEPARATOR.join(text for _, text in stack) or None


def _push_heading(stack: list[tuple[int, str]], level: int, text: str) -> None:
    """A heading ends the deeper ones; one that shows nothing (zero-width characters only)
    names no section."""
    while stack and stack[-1][0] >= level:
        stack.pop()
    if not is_blank(text):
        stack.append((level, text))


# --------------------------------------------------------------------------- plain text


def _parse_text(text: str, filename: str | None) -> ParsedDocument:
    body = _tidy(text)
    sections = [Section(body)] if body else []
    return ParsedDocument(MIME_TEXT, _title_from_filename(filename) or _first_line(sections), sections)


# --------------------------------------------------------------------------- markdown

# Only the opening of an ATX heading: its text and closing "#"s are cut with string
# methods, as a lazy "(.*?)" before "[ \t]*$" backtracks quadratically on a line of
# spaces ("# a<300 KB of spaces>b" took minutes).
_ATX_RE: Final = re.compile(r" {0,3}(#{1,6})(?:[ \t]|$)")
_SETEXT_RE: Final = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE_RE: Final = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_BLOCK_END_RE: Final = re.compile(r"^ {0,3}(?:`{3,}|~{3,}|(?:([-*_])[ \t]*)(?:\1[ \t]*){2,}$)")
_NOT_SETEXT_RE: Final = re.compile(r"^\s*(?:[-*+>|]|\d+[.)]|#{1,6}(?:\s|$))")
_FRONT_MATTER_TITLE_RE: Final = re.compile(r"^title:(.*)$", re.M)  # stripped after: linear


def _strip_front_matter(text: str) -> tuple[str, str | None]:
    if not text.startswith("---\n"):
        return text, None
    end = text.find("\n---", 4)
    if end == -1 or end > 10_000:
        return text, None
    after = text.find("\n", end + 4)
    block = text[4:end]
    match = _FRONT_MATTER_TITLE_RE.search(block)
    title = match.group(1).strip().strip("'\"") if match else None
    return (text[after + 1 :] if after != -1 else ""), title


def _atx_text(rest: str) -> str:
    """The text of an ATX heading from what follows its opening "#"s: without the
    optional closing sequence ("## Title ##"), which must follow a space or a tab."""
    text = rest.strip(" \t")
    unclosed = text.rstrip("#")
    if not unclosed or unclosed.endswith((" ", "\t")):
        text = unclosed
    return text.strip()


def _parse_markdown(text: str, filename: str | None) -> ParsedDocument:
    text, fm_title = _strip_front_matter(text)
    lines = text.split("\n")
    stack: list[tuple[int, str]] = []
    sections: list[Section] = []
    body: list[str] = []
    heading: str | None = None
    first_h1: str | None = None
    fence: str | None = None
    titles: list[str] = []  # every heading, in order

    def flush() -> None:
        chunk = _tidy("\n".join(body))
        if chunk:
            sections.append(Section(chunk, heading=heading))
        body.clear()

    def start_section(level: int, title: str) -> None:
        nonlocal heading, first_h1
        flush()
        if level == 1 and first_h1 is None and not is_blank(title):
            first_h1 = title
        titles.append(title)
        _push_heading(stack, level, title)
        heading = _heading_path(stack)

    # Whether body[-1] opened a paragraph: only a one-line paragraph becomes a setext
    # heading here (multi-line ones are rare and stay text rather than being misread).
    opened_paragraph = False
    for line in lines:
        fence_match = _FENCE_RE.match(line)
        if fence is not None:
            # Inside a code block "# comment" is code, not a heading.
            if (
                fence_match
                and fence_match.group(1)[0] == fence[0]
                and len(fence_match.group(1)) >= len(fence)
            ):
                fence = None
            body.append(line)
            opened_paragraph = False
            continue
        if fence_match:
            fence = fence_match.group(1)
            body.append(line)
            opened_paragraph = False
            continue
        atx = _ATX_RE.match(line)
        if atx:
            heading_text = _atx_text(line[atx.end():])
            if heading_text:
                start_section(len(atx.group(1)), heading_text)
            opened_paragraph = False
            continue
        setext = _SETEXT_RE.match(line)
        # Setext heading: a paragraph line underlined with === (h1) or --- (h2).  A lone
        # "---" after a blank line is a thematic break and stays text.
        if setext and opened_paragraph and body and not _NOT_SETEXT_RE.match(body[-1]):
            start_section(1 if setext.group(1)[0] == "=" else 2, body.pop().strip())
            opened_paragraph = False
            continue
        # A paragraph opens after a blank line, a code fence or a thematic break.
        after_block = not body or not body[-1].strip() or bool(_BLOCK_END_RE.match(body[-1]))
        opened_paragraph = bool(line.strip()) and after_block
        body.append(line)
    flush()
    if not sections and titles:  # an outline, headings only: they are its text
        sections.append(Section("\n".join(titles)))

    title = _short_title(fm_title) or _short_title(first_h1) or _title_from_filename(filename)
    return ParsedDocument(MIME_MARKDOWN, title or _first_line(sections), sections)


# --------------------------------------------------------------------------- html

_HTML_META_CHARSET_RE: Final = re.compile(rb"<meta[^>]+charset\s*=\s*[\"']?\s*([A-Za-z0-9_.:-]+)", re.I)
# An XHTML page's XML declaration: the encoding an XML parser reads it in.
_XML_ENCODING_RE: Final = re.compile(
    rb"\A(?:\xef\xbb\xbf)?\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9_.:-]+)[\"']", re.I)
# Boilerplate and non-content elements whose text never belongs in a chunk.
_HTML_SKIP: Final = frozenset(
    {
        "script", "style", "noscript", "template", "nav", "header", "footer", "aside", "svg",
        "iframe", "object", "embed", "canvas", "button", "select", "math", "dialog",
    }
)  # fmt: skip
_HTML_SKIP_ROLES: Final = frozenset(
    {"navigation", "banner", "contentinfo", "complementary", "search", "dialog", "menu"}
)
# Paragraph-level elements are separated by a blank line; line-level ones (list items,
# table rows) start a new line only, so a list stays one paragraph.
_HTML_BLOCK: Final = frozenset(
    {
        "p", "div", "ul", "ol", "dl", "table", "section", "article", "main", "blockquote",
        "pre", "hr", "h4", "h5", "h6", "figure", "figcaption", "details", "summary",
        "address", "fieldset", "form", "caption", "body",
    }
)  # fmt: skip
_HTML_LINE: Final = frozenset({"br", "li", "dt", "dd", "tr"})
_HTML_CELL: Final = frozenset({"td", "th"})
_HTML_HEADINGS: Final = {"h1": 1, "h2": 2, "h3": 3}
_HTML_MAIN: Final = frozenset({"main", "article"})
_HTML_VOID: Final = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param",
     "source", "track", "wbr"}
)  # fmt: skip
_INLINE_WS_RE: Final = re.compile(r"[ \t\r\f\v]+")
# Whitespace the cleaner collapses outside <pre> (with _INLINE_WS_RE, _SPACE_AROUND_NL_RE).
_SOFT_WS: Final = " \t\r\f\v\n"
_SPACE_AROUND_NL_RE: Final = re.compile(r" *\n *")
_PRE_OPEN: Final = "\x02"
_PRE_CLOSE: Final = "\x03"
_PRE_MARKS_DROP: Final = str.maketrans("", "", _PRE_OPEN + _PRE_CLOSE)
_PRE_SPLIT_RE: Final = re.compile(f"{_PRE_OPEN}(.*?){_PRE_CLOSE}", re.S)


@dataclass(slots=True)
class _HtmlBlock:
    heading: str | None
    in_main: bool
    parts: list[str] = field(default_factory=list)


class _HtmlExtractor(HTMLParser):
    """Collects visible text per heading section, remembering what sat inside <main>/<article>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title_parts: list[str] = []
        self.first_h1: str | None = None
        self.blocks: list[_HtmlBlock] = []
        self._skip: list[str] = []  # open elements whose content is dropped
        # How many of each name _skip holds: an end tag finds its element in O(1), not by
        # a scan of _skip (quadratic for "<nav><b><b>...</i></i>...").
        self._skip_open: Counter[str] = Counter()
        self._skip_names: dict[str, str] = {}  # one string per tag name, not per element
        self._in_title = False
        self._pre = 0
        self._main = 0
        self._heading_tag: str | None = None
        self._heading_parts: list[str] = []
        self._stack: list[tuple[int, str]] = []
        self._block = _HtmlBlock(None, False)
        self.blocks.append(self._block)

    # The block that text goes into changes when a heading ends or <main> opens/closes.
    def _new_block(self) -> None:
        heading = _heading_path(self._stack)
        block = self._block
        if block.parts and (block.heading != heading or block.in_main != (self._main > 0)):
            self._block = _HtmlBlock(heading, self._main > 0)
            self.blocks.append(self._block)
        else:
            block.heading, block.in_main = heading, self._main > 0

    def _emit(self, text: str) -> None:
        parts = self._heading_parts if self._heading_tag is not None else self._block.parts
        if parts and not text.strip(_SOFT_WS) and not parts[-1].strip(_SOFT_WS):
            # Whitespace after whitespace (runs of empty <div>s or <br>s, indentation) is
            # merged into one part as the cleaner would squeeze it (a space, a line break
            # or a blank line): memory grows with the text, not with the tags.
            breaks = min((parts[-1] + text).count("\n"), 2)
            parts[-1] = "\n" * breaks or " "
            return
        parts.append(text)

    def _push_skip(self, tag: str) -> None:
        if tag not in _HTML_VOID:
            tag = self._skip_names.setdefault(tag, tag)
            self._skip.append(tag)
            self._skip_open[tag] += 1

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <title> holds only text, so any tag means an unclosed title ended before it.
        self._in_title = False
        if self._skip:
            self._push_skip(tag)
            return
        if tag == "title":
            self._in_title = not self.title_parts  # only the first <title> names the page
            return
        attr = dict(attrs)
        hidden = (
            tag in _HTML_SKIP
            or (attr.get("role") or "").lower() in _HTML_SKIP_ROLES
            or "hidden" in attr
            or (attr.get("aria-hidden") or "").lower() == "true"
        )
        if hidden:
            self._push_skip(tag)
            return
        if tag in _HTML_MAIN:
            self._main += 1
            self._new_block()
        if tag in _HTML_HEADINGS:
            if self._heading_tag is not None:
                self.handle_endtag(self._heading_tag)  # unclosed heading: end it here
            self._heading_tag = tag
            self._heading_parts = []
            return
        if tag == "pre":
            self._pre += 1
        if tag in _HTML_BLOCK:
            self._emit("\n\n")
        elif tag in _HTML_LINE:
            self._emit("\n")
        elif tag in _HTML_CELL:
            self._emit(" | ")
        elif tag == "img" and attr.get("alt"):
            self._emit(f" {attr['alt']} ")

    def handle_endtag(self, tag: str) -> None:
        if self._skip:
            if self._skip_open[tag]:
                # Pop up to the matching open tag: tolerates unclosed children.
                while (popped := self._skip.pop()) != tag:
                    self._skip_open[popped] -= 1
                self._skip_open[tag] -= 1
                if not self._skip:
                    self._skip_open.clear()
                    self._skip_names.clear()
            return
        if tag == "title":
            self._in_title = False
            return
        if tag == self._heading_tag:
            text = " ".join("".join(self._heading_parts).split())
            self._heading_tag = None
            if text:
                level = _HTML_HEADINGS[tag]
                if level == 1 and self.first_h1 is None and not is_blank(text):
                    self.first_h1 = text
                _push_heading(self._stack, level, text)
                self._new_block()
            return
        if tag in _HTML_MAIN and self._main:
            self._main -= 1
            self._new_block()
        if tag == "pre" and self._pre:
            self._pre -= 1
        if tag in _HTML_BLOCK:
            self._emit("\n\n")

    def finish(self) -> None:
        """Flush state left open by truncated markup."""
        if self._heading_tag is not None:
            # A heading that never closed swallowed the text after it: keep it as text.
            self._block.parts.extend(["\n\n", *self._heading_parts, "\n\n"])
            self._heading_tag = None

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        data = data.translate(_PRE_MARKS_DROP)
        if self._in_title:
            self.title_parts.append(data)
        elif self._pre and self._heading_tag is None:
            # Preformatted text keeps its layout; the marks tell the cleaner to leave it be.
            self._emit(f"{_PRE_OPEN}{data}{_PRE_CLOSE}")
        else:
            # Source line breaks are formatting; real breaks come from block tags.
            self._emit(data.replace("\n", " "))


def _known_charset(name: str | None) -> str | None:
    """``name`` when Python has a text codec of that name, else None: a label a browser
    does not know is ignored, and the page's own declaration decides."""
    if not name:
        return None
    try:
        codecs.lookup(name)
    except LookupError:
        return None
    return name


def _html_charset(data: bytes) -> str | None:
    match = _XML_ENCODING_RE.match(data[:2048])
    if match is None or not _known_charset(match.group(1).decode("ascii", "replace")):
        match = _HTML_META_CHARSET_RE.search(data[:2048])
    if match is None:
        return None
    name = match.group(1).decode("ascii", "replace")
    try:
        codec = codecs.lookup(name).name
    except LookupError:
        return name  # decode_text ignores it
    # A <meta> read as ASCII means the page is not UTF-16/32 (those have a BOM, or NULs
    # _utf16_without_bom finds): WHATWG's prescan takes such a declaration as UTF-8.
    return "utf-8" if codec.startswith(("utf-16", "utf-32")) else name


def _clean_html_text(parts: list[str]) -> str:
    out: list[str] = []
    for index, segment in enumerate(_PRE_SPLIT_RE.split("".join(parts))):
        if index % 2:  # preformatted
            out.append(segment)
        else:
            # Collapse source formatting whitespace; newlines here come from block tags.
            segment = _INLINE_WS_RE.sub(" ", segment)
            out.append(_SPACE_AROUND_NL_RE.sub("\n", segment))
    return _tidy("".join(out))


def _parse_html(text: str, filename: str | None) -> ParsedDocument:
    parser = _HtmlExtractor()
    try:
        parser.feed(text)
        parser.close()
        parser.finish()
    except Exception as exc:  # html.parser is lenient; anything raised means garbage input
        raise CorruptDocument(f"the HTML could not be parsed: {exc}") from None
    blocks = parser.blocks
    # Pages that mark their content with <main>/<article> lose everything around it
    # (cookie banners, sidebars without <aside>, related links).
    if any(b.in_main and _clean_html_text(b.parts) for b in blocks):
        blocks = [b for b in blocks if b.in_main]
    sections: list[Section] = []
    for block in blocks:
        body = _clean_html_text(block.parts)
        if not body:
            continue
        if sections and sections[-1].heading == block.heading:
            # Same heading split by a <main> boundary: keep it as one section.
            prev = sections.pop()
            body = f"{prev.text}\n\n{body}"
        sections.append(Section(body, heading=block.heading))
    title = (
        _short_title("".join(parser.title_parts))
        or _short_title(parser.first_h1)
        or _title_from_filename(filename)
        or _first_line(sections)
    )
    return ParsedDocument(MIME_HTML, title, sections)


# --------------------------------------------------------------------------- pdf


def _pdf_outline_headings(reader: Any) -> dict[int, str]:
    """Map 0-based page index -> heading path of the last bookmark starting on or before it."""
    starts: list[tuple[int, int, str]] = []  # (page, order, path)

    def walk(items: list[Any], path: list[str]) -> None:
        current: list[str] = path
        for item in items:
            if isinstance(item, list):
                walk(item, current)
                continue
            title = _short_title(str(getattr(item, "title", "") or ""))
            if not title:
                continue
            current = [*path, title]
            try:
                page = reader.get_destination_page_number(item)
            except Exception:  # broken bookmark: ignore it, the text still counts
                page = None
            if page is not None and page >= 0:
                starts.append((page, len(starts), HEADING_PATH_SEPARATOR.join(current)))

    try:
        walk(list(reader.outline), [])
    except Exception:  # outlines are optional and often malformed
        return {}
    starts.sort()
    mapping: dict[int, str] = {}
    for page, _, path in starts:
        mapping[page] = path  # the last bookmark on a page wins
    return mapping


#: The most a PDF page's content streams may inflate to for its text to be read: pypdf's
#: text extraction takes seconds per megabyte (2.4 s for 1 MB, 16 s for 4 MB here, and
#: more than in proportion), and one page cannot be stopped once started; pypdf's own
#: inflate cap is 75 MB.  A 17 KB upload held a thread past any time limit.
MAX_PDF_PAGE_CONTENT_BYTES: Final = 2 * 1024 * 1024


def _pdf_page_content_problem(page: Any) -> str | None:
    """Why the page's text is not read (its content streams, and the forms they draw,
    inflate past :data:`MAX_PDF_PAGE_CONTENT_BYTES`), or None."""
    contents = page.get_contents()
    data = contents.get_data() if contents is not None else b""
    size = len(data) + _pdf_forms_read(data, page.get("/Resources"), {}, frozenset())
    if size <= MAX_PDF_PAGE_CONTENT_BYTES:
        return None
    return (f"its content is {size / 1048576:.1f} MB once inflated, more than the "
            f"{MAX_PDF_PAGE_CONTENT_BYTES // 1048576} MB whose text Roost reads on one page; "
            "its text is left out")


# `/Name Do` draws an XObject; a name's delimiters end it (PDF 32000-1, 7.3.5).
_PDF_DRAW = re.compile(rb"/([^\s/\[\]()<>{}%]+)\s*Do(?![^\s/\[\]()<>{}%])")


def _pdf_forms_read(stream: bytes, resources: Any, sizes: dict[int, int],
                    drawing: frozenset[int]) -> int:
    """The bytes pypdf's text extraction reads for the Form XObjects ``stream`` draws:
    each form's inflated content (and what it draws in turn) as many times as it is
    drawn, for it reads a form again each time.  A 7-byte page content drawing one form
    of 3 MB was read in full past the page cap.  Each form is inflated once (``sizes``);
    a form that draws itself is not followed again (``drawing``); the sum stops growing
    past the cap (the page is left out anyway)."""
    try:
        xobjects = resources.get_object().get("/XObject") if resources is not None else None
        xobjects = xobjects.get_object() if xobjects is not None else None
    except Exception:
        return 0
    if not xobjects:
        return 0
    total = 0
    for name, times in Counter(_PDF_DRAW.findall(stream)).items():
        try:
            ref = xobjects.get("/" + name.decode("latin-1"))
            form = ref.get_object() if ref is not None else None
            if form is None or form.get("/Subtype") != "/Form":
                continue
            key = ref.idnum if hasattr(ref, "idnum") else id(form)
            if key in drawing:
                continue
            if key not in sizes:
                inner = form.get_data()
                sizes[key] = len(inner) + _pdf_forms_read(
                    inner, form.get("/Resources") or resources, sizes, drawing | {key})
        except Exception:  # noqa: S112 - a broken form: extraction reports it, if it reads it
            continue
        total += times * sizes[key]
        if total > MAX_PDF_PAGE_CONTENT_BYTES:
            break
    return total


def _parse_pdf(data: bytes, filename: str | None, time_limit_s: float) -> ParsedDocument:
    if _PDF_MAGIC not in data[:_PDF_MAGIC_WINDOW]:
        raise CorruptDocument("the file is declared as PDF but has no %PDF- header")
    try:
        from pypdf import PdfReader
    except ImportError:
        raise UnsupportedDocument(
            "PDF support needs the 'pypdf' package on the server; ask the operator to install it"
        ) from None
    warnings: list[str] = []
    started = time.monotonic()
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            # Many PDFs are "encrypted" with an empty user password just to set permissions.
            try:
                ok = bool(reader.decrypt(""))
            except Exception:
                ok = False
            if not ok:
                raise UnsupportedDocument(
                    "the PDF is password-protected; remove the password and upload it again"
                )
        page_count = len(reader.pages)
        outline = _pdf_outline_headings(reader)
        sections: list[Section] = []
        heading: str | None = None
        empty_pages = 0
        deadline = started + time_limit_s
        for index in range(page_count):
            if time.monotonic() > deadline:
                raise DocumentTooComplex(
                    f"reading the PDF's text took longer than {time_limit_s:g} s (stopped at "
                    f"page {index + 1} of {page_count}); split it or ask the operator to "
                    "raise ROOST_KNOWLEDGE_PARSE_TIME_LIMIT_S")
            heading = outline.get(index, heading)
            try:
                too_big = _pdf_page_content_problem(reader.pages[index])
                if too_big is not None:
                    warnings.append(f"page {index + 1}: {too_big}")
                    continue
                raw = reader.pages[index].extract_text() or ""
            except Exception as exc:
                # One broken page should not cost the rest of the document.
                warnings.append(f"page {index + 1}: text could not be extracted ({exc})")
                continue
            body = _tidy(_storable(raw))
            if body:
                sections.append(Section(body, page=index + 1, heading=heading))
            else:
                empty_pages += 1
        meta_title: str | None = None
        try:
            meta = reader.metadata
            if meta is not None and meta.title:
                meta_title = str(meta.title)
        except Exception:
            meta_title = None
    except ParseError:
        raise
    except Exception as exc:
        # pypdf signals damage with many exception types (PdfReadError, ValueError,
        # KeyError, RecursionError...): all of them mean "this PDF is broken".
        raise CorruptDocument(f"the PDF could not be read: {type(exc).__name__}: {exc}") from None
    if page_count and not sections:
        warnings.append("the PDF has no extractable text (scanned pages need OCR, which Roost does not do)")
    elif empty_pages:
        warnings.append(f"{empty_pages} of {page_count} pages had no extractable text")
    title = _short_title(meta_title) or _first_line(sections) or _title_from_filename(filename)
    return ParsedDocument(MIME_PDF, title, sections, warnings)


# --------------------------------------------------------------------------- entry point


def parse_document(data: bytes, *, filename: str | None = None, mime: str | None = None,
                   time_limit_s: float = PARSE_TIME_LIMIT_S) -> ParsedDocument:
    """Detect the type of ``data`` and extract its text as sections.

    ``mime`` may carry parameters (``text/html; charset=iso-8859-1``): the charset is
    honoured for text types.  Raises :class:`UnsupportedDocument`,
    :class:`CorruptDocument` or (past ``time_limit_s``, checked between PDF pages)
    :class:`DocumentTooComplex`; never another exception type for bad input.
    """
    kind = detect_mime(data, filename=filename, mime=mime)
    _, params = _split_mime(mime)
    charset = params.get("charset")
    if kind == MIME_PDF:
        return _composed(_parse_pdf(data, filename, time_limit_s))
    if kind == MIME_HTML:
        return _composed(_parse_html(decode_text(data, charset=_known_charset(charset)
                                                 or _html_charset(data)), filename))
    text = decode_text(data, charset=charset)
    if kind == MIME_MARKDOWN:
        return _composed(_parse_markdown(text, filename))
    return _composed(_parse_text(text, filename))


def _composed(parsed: ParsedDocument) -> ParsedDocument:
    """``parsed`` with its text composed (NFC), before anything is chunked or offsets are
    counted: "résumé" saved decomposed (as macOS may write it) is found by the word typed
    composed, the full-text index comparing words as stored, and a search query is
    composed too (schemas.SearchRequest)."""
    def nfc(value: str | None) -> str | None:
        return None if value is None else unicodedata.normalize("NFC", value)

    return replace(parsed, title=nfc(parsed.title), sections=[
        replace(s, text=unicodedata.normalize("NFC", s.text), heading=nfc(s.heading))
        for s in parsed.sections])
