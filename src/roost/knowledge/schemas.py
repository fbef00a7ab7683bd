"""Pydantic models of the knowledge API."""

from __future__ import annotations

import json
import re
import unicodedata
import uuid
from datetime import datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from roost.errors import Unprocessable
from roost.identity.common import nfc, refuse_hidden_characters
from roost.inputs import StrictInput, holds_control, is_blank, strip_invisible, strip_where
from roost.knowledge.models import MAX_TAGS_BYTES

MAX_TAG_CHARS = 100
MAX_COLLECTION_CHARS = 128
# What a form field or query parameter may send: a name's limit counts its characters
# once composed (NFC), and a decomposed spelling takes up to four code points for one.
SENT_COLLECTION_CHARS = 4 * MAX_COLLECTION_CHARS
SENT_NAME_CHARS = 65_536  # a document's new name as sent, before it is cleaned
SENT_TAG_CHARS = 4 * MAX_TAG_CHARS
MAX_QUERY_CHARS = 2000
MAX_DOCUMENT_IDS = 1000


def no_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold NUL characters: refuse them as bad input (422)."""
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if isinstance(value, list):
        for item in value:
            no_nul(item)
    return value


# Hangul fillers: letters (category Lo) that show nothing, which str.strip keeps.
_FILLERS: Final = frozenset("\u115f\u1160\u3164\uffa0")


def trimmed(value: str) -> str:
    """``value`` composed (NFC), without white space, format characters (zero-width
    spaces, a byte order mark, bidi marks) or Hangul fillers around it: the spelling a
    collection, a tag and a filter on them share.  Variation selectors and joiners stay
    (they belong to the emoji before them)."""
    return strip_where(nfc(value), lambda char: char.isspace() or char in _FILLERS
                       or unicodedata.category(char) == "Cf")


def check_collection(value: Any) -> Any:
    """A collection as it is stored: composed (NFC) and trimmed, none when that leaves
    nothing; ``ValueError`` (422 naming the field) for NUL, control (ANSI escapes), line
    break or invisible formatting characters."""
    if not isinstance(value, str):
        return value
    collection = trimmed(refuse_hidden_characters(nfc(no_nul(value)).strip()))
    if len(collection) > MAX_COLLECTION_CHARS:
        raise ValueError(f"must have at most {MAX_COLLECTION_CHARS} characters")
    return None if is_blank(collection) else collection


def collection_filter(value: str | None) -> str | None:
    """A collection to match, spelled as :func:`check_collection` stores it; a blank one
    (an empty form field) is no filter, as a blank stored collection is none."""
    if value is None:
        return None
    spelled = trimmed(value)
    return None if is_blank(spelled) else spelled


_BIDI_CONTROLS: Final = re.compile("[\u202a-\u202e\u2066-\u2069]")


def check_tags(tags: list[str] | None) -> list[str]:
    """Strip, compose (NFC: a decomposed "é" is the same tag), drop empties and duplicates
    (keeping order); at most 5 KB as JSON."""
    if not tags:
        return []
    out: list[str] = []
    seen: set[str] = set()
    size = 2  # the list's JSON as stored ("[", "]", ", " between tags), counted as it grows
    for raw in tags:
        if not isinstance(raw, str):
            raise Unprocessable("tags must be strings")
        if "\x00" in raw:
            raise Unprocessable("tags must not contain NUL characters")
        # ESC, CSI, a line break (a terminal or a log acts on them), a bidirectional
        # override or isolate (a tag shown reversed, "txt.exe" as "exe.txt")
        if holds_control(raw) or _BIDI_CONTROLS.search(raw):
            raise Unprocessable("tags must not contain control characters, line breaks or "
                                "bidirectional overrides")
        try:  # a JSON escape of a lone surrogate ("\ud800") decodes to no character
            raw.encode("utf-8")
        except UnicodeEncodeError:
            raise Unprocessable("tags must be valid Unicode") from None
        tag = trimmed(raw)  # "news" and a zero-width space after it is the tag "news"
        if is_blank(tag):
            continue
        if len(tag) > MAX_TAG_CHARS:
            raise Unprocessable(f"a tag may have at most {MAX_TAG_CHARS} characters")
        if tag in seen:
            continue
        # Refused as soon as the limit is passed: a list of 100,000 distinct tags (an
        # upload's form field has no item count) took minutes compared one by one.
        size += len(json.dumps(tag, ensure_ascii=False).encode()) + (2 if out else 0)
        if size > MAX_TAGS_BYTES:
            raise Unprocessable(f"tags take more than {MAX_TAGS_BYTES} bytes as JSON, the "
                                "limit")
        seen.add(tag)
        out.append(tag)
    return out


def parse_tags_field(raw: str | None) -> list[str]:
    """A form field: a JSON array of strings, or comma-separated tags."""
    if raw is None or not raw.strip():
        return []
    text = raw.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
            raise Unprocessable("tags is not a valid JSON array; send [\"a\", \"b\"] or a,b") from None
        if not isinstance(value, list):
            raise Unprocessable("tags must be a JSON array of strings or comma-separated")
        return check_tags(value)
    return check_tags(text.split(","))


class _KnowledgeInput(StrictInput):
    """A request body of this domain: no NUL characters anywhere (PostgreSQL text cannot
    hold them), and ``tags``, where there are any, cleaned by :func:`check_tags`."""

    @field_validator("tags", check_fields=False)
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else check_tags(value)

    @field_validator("*", mode="before")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        return no_nul(value)


class _Stored(_KnowledgeInput):
    """A body whose ``collection`` is stored: cleaned by :func:`check_collection` (an
    empty or blank one means none, as on upload)."""

    @field_validator("collection", mode="before", check_fields=False)
    @classmethod
    def _collection(cls, value: Any) -> Any:
        return check_collection(value)


class _Scope(_Stored):
    collection: str | None = Field(default=None, max_length=128)
    tags: list[str] = Field(default_factory=list)
    group_id: uuid.UUID | None = Field(
        default=None, description="Share with this group (you must be a member)"
    )
    is_private: bool = Field(default=False, description="Only you see it, even with a group")
    persona_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None


class IngestionRunCreate(_Scope):
    target: str = Field(min_length=1, max_length=4096,
                        description="A server path under an allowed ingest root, or an http(s) URL")
    from_web: bool | None = Field(default=None,
                                  description="Fetch target as a URL; default: when it starts with http(s)://")
    recursive: bool = Field(default=False, description="Descend into sub-directories")
    force: bool = Field(default=False, description="Re-ingest sources whose content is unchanged")
    prune: bool = Field(default=False, description=(
        "After ingesting a directory, delete your documents of files under it (its direct "
        "children unless recursive) that no longer exist"))


class DocumentOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    group_id: uuid.UUID | None
    is_private: bool
    persona_id: uuid.UUID | None
    project_id: uuid.UUID | None
    name: str
    description: str | None
    uri: str | None
    path: str | None
    mime: str | None
    bytes_size: int | None
    source: str
    tags: list[Any]
    collection: str | None
    path_hash: str
    status: Literal["pending", "processing", "ready", "error"]
    error_message: str | None
    chunk_count: int
    embedding_model: str | None
    ingestion_run_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    last_ingested_at: datetime | None


class DocumentUpdate(_Stored):
    # Cleaned as an uploaded file's name (service.clean_filename: the last path segment,
    # composed, shortened before its extension to 255): the limit here is on what is sent.
    name: str | None = Field(default=None, min_length=1, max_length=SENT_NAME_CHARS)
    description: str | None = Field(default=None, max_length=10_000)
    collection: str | None = Field(default=None, max_length=128)
    tags: list[str] | None = Field(default=None)
    group_id: uuid.UUID | None = None
    is_private: bool | None = None


class IngestionRunOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    target: str
    source: str
    from_web: bool
    recursive: bool
    prune: bool
    tags: list[Any]
    collection: str | None
    group_id: uuid.UUID | None
    is_private: bool
    persona_id: uuid.UUID | None
    project_id: uuid.UUID | None
    embedding_model: str
    task_id: uuid.UUID | None
    totals_files: int
    totals_chunks: int
    totals_pruned: int
    errors: list[Any]
    status: Literal["pending", "running", "success", "partial", "failed"]
    started_at: datetime | None
    finished_at: datetime | None
    created_at: datetime


class UploadAccepted(BaseModel):
    document: DocumentOut
    ingestion_run: IngestionRunOut


class SearchRequest(_KnowledgeInput):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(default=10, ge=1, le=100)
    mode: Literal["hybrid", "vector", "text"] = "hybrid"
    collection: str | None = Field(default=None, max_length=128)
    tags: list[str] = Field(default_factory=list, max_length=50,
                            description="Chunks of documents carrying all of these tags")
    document_ids: list[uuid.UUID] | None = Field(default=None, max_length=MAX_DOCUMENT_IDS)
    persona_id: uuid.UUID | None = None
    group_id: uuid.UUID | None = Field(default=None,
                                       description="Only documents shared with this group")
    owner_id: uuid.UUID | None = Field(default=None, description="Only documents of this owner")
    include_curated: bool = True
    embedding_model: str | None = Field(default=None, max_length=128)

    @field_validator("collection", mode="before")
    @classmethod
    def _collection(cls, value: Any) -> Any:  # composed before its length is checked
        return collection_filter(value) if isinstance(value, str) else value

    @field_validator("query")
    @classmethod
    def _query_not_blank(cls, value: str) -> str:
        # White space or invisible characters alone: a text search finds nothing and a
        # vector search returns whatever lies nearest to nothing, as if it were relevant.
        if is_blank(value):
            raise ValueError("must not be blank: give the words to search for")
        # Composed, as documents are (parsing._composed), and without invisible characters
        # at its ends (a pasted trailing zero-width space was part of the last word, which
        # then matched nothing).
        return strip_invisible(nfc(value))


class SearchDocument(BaseModel):
    id: uuid.UUID
    name: str
    source: str
    uri: str | None
    path: str | None
    collection: str | None
    mime: str | None


class SearchHit(BaseModel):
    chunk_id: uuid.UUID
    document_id: uuid.UUID
    chunk_index: int
    content: str
    score: float = Field(description="Cosine similarity (vector), ts_rank_cd (text) or RRF (hybrid)")
    vector_similarity: float | None = None
    text_rank: float | None = None
    page: int | None = None
    section: str | None = None
    char_start: int | None = None
    char_end: int | None = None
    is_curated: bool = False
    source_chunk_ids: list[uuid.UUID] | None = None
    document: SearchDocument


class SearchResponse(BaseModel):
    query: str
    mode: str
    embedding_model: str
    results: list[SearchHit]


class ChunkOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    document_id: uuid.UUID
    chunk_index: int
    content: str
    token_count: int | None
    embedding_model: str
    embedding_dim: int
    is_curated: bool
    source_chunk_ids: list[uuid.UUID] | None
    metadata: dict[str, Any] = Field(validation_alias="chunk_metadata")
    created_at: datetime
