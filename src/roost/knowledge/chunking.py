"""Token-aware chunking with overlap, preferring paragraph and sentence boundaries.

Sizes are counted in the embedding model's own tokens: with the default MiniLM
WordPiece tokenizer a chunk of ``chunk_tokens=256`` is exactly what all-MiniLM-L6-v2
reads before it truncates (its limit of 256 includes [CLS] and [SEP], and so does
``Chunk.token_count``).  Without the ``roost[local]`` extra a regex word/punctuation
tokenizer stands in; its counts then approximate a remote model's tokens.

Chunks never cross a section, so each keeps one page and one heading path.  Chunk
offsets index :attr:`roost.knowledge.parsing.ParsedDocument.text` (the section texts
joined by :data:`~roost.knowledge.parsing.SECTION_SEPARATOR`), so for the sections of
one parsed document ``doc.text[c.char_start:c.char_end] == c.text``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from roost.knowledge.embeddings import bundled_model_path
from roost.knowledge.parsing import SECTION_SEPARATOR, Section

__all__ = [
    "Chunk",
    "HFTokenizer",
    "RegexTokenizer",
    "Tokenizer",
    "chunk_sections",
    "chunk_text",
    "default_tokenizer",
]

log = logging.getLogger(__name__)

# Token budgets below this leave no room to pick a sensible break point.
_MIN_TEXT_TOKENS: Final = 8


@dataclass(frozen=True, slots=True)
class Chunk:
    index: int  # contiguous from 0 within one chunk_sections() call
    text: str
    token_count: int  # tokens the embedder sees, special tokens included
    page: int | None
    heading: str | None
    char_start: int
    char_end: int


@runtime_checkable
class Tokenizer(Protocol):
    """Counts tokens the way the embedding model will."""

    @property
    def name(self) -> str: ...

    @property
    def special_tokens(self) -> int:
        """Tokens the model adds around every input ([CLS]/[SEP] for BERT-style models)."""
        ...

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Character ``(start, end)`` of every content token, in order."""
        ...

    def count(self, text: str) -> int:
        """Content tokens in ``text`` (special tokens excluded)."""
        ...


class RegexTokenizer:
    """Words and single punctuation marks: a dependency-free stand-in for a real tokenizer."""

    name = "regex-words"
    special_tokens = 0
    _TOKEN_RE: Final = re.compile(r"\w+|[^\w\s]", re.UNICODE)

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in self._TOKEN_RE.finditer(text)]

    def count(self, text: str) -> int:
        return sum(1 for _ in self._TOKEN_RE.finditer(text))


class HFTokenizer:
    """A Hugging Face ``tokenizers`` tokenizer loaded from a local ``tokenizer.json``."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        # The shipped tokenizer.json pads/truncates to 128 for training; counting needs neither.
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        self.name = name
        self.special_tokens: int = len(tokenizer.encode("", add_special_tokens=True).ids)

    @classmethod
    def from_file(cls, path: Path, *, name: str | None = None) -> HFTokenizer:
        from tokenizers import Tokenizer as _Tokenizer

        return cls(_Tokenizer.from_file(str(path)), name or path.parent.name)

    def spans(self, text: str) -> list[tuple[int, int]]:
        offsets: list[tuple[int, int]] = self._tokenizer.encode(text, add_special_tokens=False).offsets
        return offsets

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


@functools.cache
def default_tokenizer() -> Tokenizer:
    """The MiniLM WordPiece tokenizer from the bundled model files, else :class:`RegexTokenizer`."""
    path = bundled_model_path()
    if path is not None and (path / "tokenizer.json").is_file():
        try:
            return HFTokenizer.from_file(path / "tokenizer.json", name="all-MiniLM-L6-v2")
        except Exception as exc:  # missing `tokenizers` or an unreadable file
            log.warning("falling back to the regex tokenizer: %s", exc)
    return RegexTokenizer()


# --------------------------------------------------------------------------- break points

# Scores for cutting between two tokens: higher is a more natural place to end a chunk.
_PARAGRAPH: Final = 4.0
_SENTENCE: Final = 3.0
_LINE: Final = 2.0
_CLAUSE: Final = 1.5
_WORD: Final = 1.0
_INSIDE_WORD: Final = 0.0
# Escapes keep ruff's confusable-character check quiet: ellipsis, CJK full stop, fullwidth
# ! and ?; right single/double quote, guillemet; em and en dash.
_SENTENCE_END: Final = frozenset(".!?\u2026\u3002\uff01\uff1f")
_CLOSERS: Final = frozenset("\"')]}\u2019\u201d\u00bb")
_CLAUSE_END: Final = frozenset(",;:\u2014\u2013")


def _break_score(text: str, spans: list[tuple[int, int]], boundary: int) -> float:
    """How good a chunk end is between token ``boundary - 1`` and token ``boundary``."""
    prev_end, next_start = spans[boundary - 1][1], spans[boundary][0]
    gap = text[prev_end:next_start]
    if not any(ch.isspace() for ch in gap):
        return _INSIDE_WORD  # "##piece" continuations and glued punctuation
    newlines = gap.count("\n")
    if newlines >= 2:
        return _PARAGRAPH
    i = prev_end - 1
    while i > 0 and text[i] in _CLOSERS:
        i -= 1
    if text[i] in _SENTENCE_END:
        return _SENTENCE
    if newlines:
        return _LINE
    if text[prev_end - 1] in _CLAUSE_END:
        return _CLAUSE
    return _WORD


def _best_end(text: str, spans: list[tuple[int, int]], lo: int, hi: int) -> int:
    """The boundary in ``[lo, hi]`` with the best score; the latest one wins ties."""
    best, best_score = hi, -1.0
    for boundary in range(hi, lo - 1, -1):
        score = _break_score(text, spans, boundary)
        if score > best_score:
            best, best_score = boundary, score
            if score >= _PARAGRAPH:
                break
    return best


def _overlap_start(text: str, spans: list[tuple[int, int]], start: int, end: int, overlap: int) -> int:
    """Where the next chunk starts: ``overlap`` tokens back, nudged to a sentence or word."""
    if overlap == 0:
        return end
    lo = max(end - overlap, start + 1)
    if lo >= end:
        return end
    word_start: int | None = None
    for boundary in range(lo, end):
        score = _break_score(text, spans, boundary)
        # A sentence start is the nicest overlap, unless it throws away most of it.
        if score >= _SENTENCE and end - boundary >= max(1, overlap // 2):
            return boundary
        if word_start is None and score >= _WORD:
            word_start = boundary
    return word_start if word_start is not None else lo


#: The longest token span a chunk is cut around: WordPiece reads a word longer than 100
#: characters as one unknown token, so a 60,000-character hex blob was one token and one
#: 60 KB chunk (a 10 MB one was one 10 MB chunk, handed whole to an agent's context).
MAX_SPAN_CHARS: Final = 100


def _bounded(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` with each longer than :data:`MAX_SPAN_CHARS` cut into pieces of at most
    that many characters (places a chunk may end)."""
    if all(end - start <= MAX_SPAN_CHARS for start, end in spans):
        return spans
    bounded: list[tuple[int, int]] = []
    for start, end in spans:
        while end - start > MAX_SPAN_CHARS:
            bounded.append((start, start + MAX_SPAN_CHARS))
            start += MAX_SPAN_CHARS
        bounded.append((start, end))
    return bounded


def _split(text: str, tokenizer: Tokenizer, budget: int, overlap: int) -> Iterator[tuple[int, int, int]]:
    """Yield ``(char_start, char_end, token_count)`` windows over one section's text."""
    spans = _bounded(tokenizer.spans(text))
    n = len(spans)
    start = 0
    while start < n:
        hard_end = min(start + budget, n)
        if hard_end == n:
            end = n
        else:
            # Never settle for less than half a chunk just to end on a nicer boundary.
            end = _best_end(text, spans, start + max(1, budget // 2), hard_end)
        while True:
            # Re-count the exact substring: a cut inside a word re-tokenises differently
            # ("##ffa" alone becomes "ff", "##a"), and the limit must hold for what the
            # embedder will actually see.
            piece_start, piece_end = spans[start][0], spans[end - 1][1]
            count = tokenizer.count(text[piece_start:piece_end])
            if count <= budget or end - start == 1:
                break
            end = max(start + 1, end - max(1, count - budget))
        yield piece_start, piece_end, count
        if end >= n:
            return
        start = _overlap_start(text, spans, start, end, overlap)


def _validate(chunk_tokens: int, overlap_tokens: int, tokenizer: Tokenizer) -> int:
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
    if overlap_tokens < 0:
        raise ValueError(f"overlap_tokens must not be negative, got {overlap_tokens}")
    if overlap_tokens >= chunk_tokens:
        raise ValueError(
            f"overlap_tokens ({overlap_tokens}) must be smaller than chunk_tokens ({chunk_tokens})"
        )
    budget = chunk_tokens - tokenizer.special_tokens
    if budget < _MIN_TEXT_TOKENS or overlap_tokens >= budget:
        raise ValueError(
            f"chunk_tokens={chunk_tokens} leaves {budget} tokens of text after the model's "
            f"{tokenizer.special_tokens} special tokens; it needs at least {_MIN_TEXT_TOKENS} "
            f"and more than overlap_tokens ({overlap_tokens})"
        )
    return budget


def chunk_sections(
    sections: Iterable[Section],
    *,
    chunk_tokens: int = 256,
    overlap_tokens: int = 32,
    tokenizer: Tokenizer | None = None,
) -> list[Chunk]:
    """Split sections into chunks of at most ``chunk_tokens`` model tokens.

    Consecutive chunks of one section share about ``overlap_tokens`` tokens (trimmed to
    start on a sentence or word) so a fact cut at a boundary is still whole in one
    chunk.  Raises :class:`ValueError` for sizes that cannot work.
    """
    tok = tokenizer if tokenizer is not None else default_tokenizer()
    budget = _validate(chunk_tokens, overlap_tokens, tok)
    chunks: list[Chunk] = []
    offset = 0  # where the current section starts in ParsedDocument.text
    for position, section in enumerate(sections):
        if position:
            offset += len(SECTION_SEPARATOR)
        text = section.text
        for start, end, count in _split(text, tok, budget, overlap_tokens):
            chunks.append(
                Chunk(
                    index=len(chunks),
                    text=text[start:end],
                    token_count=count + tok.special_tokens,
                    page=section.page,
                    heading=section.heading,
                    char_start=offset + start,
                    char_end=offset + end,
                )
            )
        offset += len(text)
    return chunks


def chunk_text(
    text: str,
    *,
    chunk_tokens: int = 256,
    overlap_tokens: int = 32,
    tokenizer: Tokenizer | None = None,
) -> list[Chunk]:
    """Chunk one plain string (a single section without page or heading)."""
    return chunk_sections(
        [Section(text)],
        chunk_tokens=chunk_tokens,
        overlap_tokens=overlap_tokens,
        tokenizer=tokenizer,
    )
