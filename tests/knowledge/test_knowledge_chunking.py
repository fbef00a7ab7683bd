from __future__ import annotations

import itertools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.knowledge.chunking import (
    MAX_SPAN_CHARS,
    Chunk,
    HFTokenizer,
    RegexTokenizer,
    Tokenizer,
    chunk_sections,
    chunk_text,
    default_tokenizer,
)
from roost.knowledge.embeddings import bundled_model_path
from roost.knowledge.parsing import ParsedDocument, Section, parse_document

REGEX = RegexTokenizer()


def _sentences(n: int, prefix: str = "Sentence") -> str:
    return " ".join(
        f"{prefix} {i} explains how vectors are stored and searched in PostgreSQL." for i in range(n)
    )


def _long_document() -> ParsedDocument:
    paragraphs = "\n\n".join(_sentences(6, f"Para{p}") for p in range(12))
    md = f"# Guide\n\n{paragraphs}\n\n## Short\n\nTiny section.\n"
    return parse_document(md.encode(), filename="guide.md")


def _tokenizers() -> list[Tokenizer]:
    found: list[Tokenizer] = [REGEX]
    if not isinstance(default_tokenizer(), RegexTokenizer):
        found.append(default_tokenizer())
    return found


def _assert_invariants(doc_text: str, chunks: list[Chunk], tok: Tokenizer, chunk_tokens: int) -> None:
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text, "no empty chunks"
        assert c.text == c.text.strip(), "chunks start and end on tokens, not whitespace"
        assert doc_text[c.char_start : c.char_end] == c.text
        # The limit holds for what the embedder will actually see.
        assert c.token_count == tok.count(c.text) + tok.special_tokens
        assert c.token_count <= chunk_tokens


@pytest.mark.parametrize("tok", _tokenizers(), ids=lambda t: t.name)
def test_chunks_never_exceed_limit_and_offsets_match(tok: Tokenizer) -> None:
    doc = _long_document()
    chunks = chunk_sections(doc.sections, chunk_tokens=64, overlap_tokens=8, tokenizer=tok)
    assert len(chunks) > 5
    _assert_invariants(doc.text, chunks, tok, 64)
    assert chunks[-1].heading == "Guide > Short"
    assert chunks[-1].text == "Tiny section."


@pytest.mark.parametrize("tok", _tokenizers(), ids=lambda t: t.name)
def test_consecutive_chunks_overlap(tok: Tokenizer) -> None:
    chunks = chunk_text(_sentences(40), chunk_tokens=60, overlap_tokens=12, tokenizer=tok)
    assert len(chunks) > 3
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.char_start < prev.char_end, "the next chunk starts inside the previous one"
        assert nxt.char_start > prev.char_start, "and still makes progress"
        shared = prev.text[nxt.char_start - prev.char_start :]
        assert nxt.text.startswith(shared)
        assert 0 < tok.count(shared) <= 12


def test_zero_overlap_gives_disjoint_chunks() -> None:
    chunks = chunk_text(_sentences(30), chunk_tokens=50, overlap_tokens=0, tokenizer=REGEX)
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.char_start >= prev.char_end


def test_prefers_sentence_and_paragraph_boundaries() -> None:
    chunks = chunk_text(_sentences(40), chunk_tokens=64, overlap_tokens=0, tokenizer=REGEX)
    # Every chunk but the last ends a sentence rather than cutting one in half.
    assert all(c.text.endswith(".") for c in chunks)
    paragraphs = "\n\n".join(f"Short paragraph number {i} here." for i in range(30))
    chunks = chunk_text(paragraphs, chunk_tokens=40, overlap_tokens=0, tokenizer=REGEX)
    assert all(c.text.startswith("Short paragraph") for c in chunks)


def test_long_unbroken_text_is_still_cut_within_limit() -> None:
    text = "-".join(["abc"] * 2000)  # no whitespace anywhere
    chunks = chunk_text(text, chunk_tokens=32, overlap_tokens=4, tokenizer=REGEX)
    _assert_invariants(text, chunks, REGEX, 32)
    assert chunks[-1].char_end == len(text)


@pytest.mark.parametrize("tok", _tokenizers(), ids=lambda t: t.name)
def test_a_long_unbroken_word_is_cut_into_chunks_of_bounded_length(tok: Tokenizer) -> None:
    """A 60,000-character hex blob is one token to either tokenizer (WordPiece reads a
    word over 100 characters as one unknown token): it was one 60 KB chunk.  A chunk
    now ends at most every ``MAX_SPAN_CHARS`` characters of such a word."""
    text = "The contract bytecode follows.\n\n0x" + "6080604052" * 6000
    chunks = chunk_text(text, chunk_tokens=64, overlap_tokens=8, tokenizer=tok)
    _assert_invariants(text, chunks, tok, 64)
    assert max(len(c.text) for c in chunks) <= 64 * MAX_SPAN_CHARS, [len(c.text) for c in chunks]
    assert chunks[-1].char_end == len(text)


def test_page_and_heading_travel_with_chunks_and_indices_span_sections() -> None:
    sections = [
        Section(_sentences(10), page=1, heading="A"),
        Section("   ", page=2, heading="empty"),
        Section(_sentences(10), page=3, heading="B"),
    ]
    doc = ParsedDocument("application/pdf", None, sections)
    chunks = chunk_sections(sections, chunk_tokens=48, overlap_tokens=8, tokenizer=REGEX)
    _assert_invariants(doc.text, chunks, REGEX, 48)
    assert {(c.page, c.heading) for c in chunks} == {(1, "A"), (3, "B")}
    pages = [c.page or 0 for c in chunks]
    assert pages == sorted(pages), "chunks keep document order"


def test_short_text_is_one_chunk_and_empty_is_none() -> None:
    assert [c.text for c in chunk_text("Just one line.", tokenizer=REGEX)] == ["Just one line."]
    assert chunk_text("", tokenizer=REGEX) == []
    assert chunk_sections([], tokenizer=REGEX) == []


@pytest.mark.parametrize(
    ("chunk_tokens", "overlap_tokens", "message"),
    [
        (0, 0, "positive"),
        (64, -1, "negative"),
        (64, 64, "smaller"),
        (64, 100, "smaller"),
        (5, 0, "at least"),
    ],
)
def test_invalid_sizes_raise_value_error(chunk_tokens: int, overlap_tokens: int, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        chunk_text("text", chunk_tokens=chunk_tokens, overlap_tokens=overlap_tokens, tokenizer=REGEX)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=st.text(alphabet=st.sampled_from(list("abcdefgh  ..,!?\n\n\téü漢字-'")), min_size=0, max_size=1500),
    chunk_tokens=st.integers(20, 80),
    overlap=st.integers(0, 15),
)
def test_chunking_invariants_hold_for_arbitrary_text(text: str, chunk_tokens: int, overlap: int) -> None:
    for tok in _tokenizers():
        chunks = chunk_text(text, chunk_tokens=chunk_tokens, overlap_tokens=overlap, tokenizer=tok)
        _assert_invariants(text, chunks, tok, chunk_tokens)
        if text.strip():
            # Together the chunks cover every token of the text.
            assert chunks[0].char_start == tok.spans(text)[0][0]
            assert chunks[-1].char_end == tok.spans(text)[-1][1]


# --------------------------------------------------------------------------- MiniLM tokenizer

@pytest.mark.needs_local
def test_default_tokenizer_is_minilm_wordpiece() -> None:
    tok = default_tokenizer()
    assert isinstance(tok, HFTokenizer)
    assert tok.special_tokens == 2  # [CLS] and [SEP]
    assert tok.count("unaffable tokenization") > 2  # word pieces, not words
    assert default_tokenizer() is tok  # loaded once


@pytest.mark.needs_local
def test_default_chunks_fit_the_models_256_token_window() -> None:
    from transformers import AutoTokenizer

    model_tokenizer = AutoTokenizer.from_pretrained(str(bundled_model_path()), local_files_only=True)
    doc = _long_document()
    chunks = chunk_sections(doc.sections * 3)
    assert any(c.token_count > 200 for c in chunks)
    for c in chunks:
        # What sentence-transformers will feed the model, special tokens included.
        assert len(model_tokenizer(c.text)["input_ids"]) == c.token_count <= 256
