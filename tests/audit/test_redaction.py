"""Which keys of an audit record's ``changes`` / ``metadata`` are redacted as secrets."""

from __future__ import annotations

import pytest

from roost.audit.redaction import REDACTED, redact


@pytest.mark.parametrize("key", ["DBPassword", "SMTPPassword", "AWSSecretKey", "JWTSecret",
                                 "OpenAIAPIKey", "HTTPAuthorization"])
def test_acronym_prefixed_secret_keys_are_redacted(key: str) -> None:
    """A credential word after an acronym ("DB" + "Password") is a word of its own."""
    assert redact({key: "hunter2"}) == {key: REDACTED}


@pytest.mark.parametrize("key", ["Client Secret", "API Key", "x.api.token", "password ",
                                 "Authorization:"])
def test_credential_word_after_a_space_dot_or_colon_is_redacted(key: str) -> None:
    """Any run of non-word characters separates words: a form label ("Client Secret"), a
    dotted config path ("x.api.token"), a copied header ("Authorization:") are redacted
    like "client_secret" or "x-api-token"."""
    assert redact({key: "hunter2"}) == {key: REDACTED}


@pytest.mark.parametrize("key", ["secrets", "passwords"])
def test_plural_credential_keys_are_redacted(key: str) -> None:
    """A map or list named "secrets" / "passwords" holds secrets: its values are redacted."""
    assert redact({key: {"OPENAI": "sk-live-123"}}) == {key: REDACTED}


@pytest.mark.parametrize("key", ["tokens_in", "tokensOut", "maxTokens", "HTTPStatus",
                                 "userID", "keyName", "Tokens In", "max.tokens"])
def test_counters_and_names_stay_visible(key: str) -> None:
    """Only credential words redact: counts of tokens and acronym-led keys are kept."""
    assert redact({key: 12}) == {key: 12}


@pytest.mark.parametrize("key", ["password1", "password2", "newPassword2", "token2"])
def test_a_credential_word_followed_by_a_digit_is_redacted(key: str) -> None:
    """"password2" (a confirmation field) as "password_2" is: a letter followed by a digit
    ends a word (it was one word, no credential word, and stored in clear)."""
    assert redact({key: "hunter2"}) == {key: REDACTED}


@pytest.mark.parametrize("key", ["clientsecret", "accesstoken", "refreshtoken", "privatekey"])
def test_an_all_lowercase_compound_credential_key_is_redacted(key: str) -> None:
    """Run-together spellings of "client_secret", "refreshToken", "private_key" (no
    boundary to split at) end in a credential word: redacted (they were kept in clear)."""
    assert redact({key: "hunter2"}) == {key: REDACTED}


@pytest.mark.parametrize("key", [
    "\uff30\uff21\uff33\uff33\uff37\uff2f\uff32\uff24",  # PASSWORD, fullwidth
    "\uff53\uff45\uff43\uff52\uff45\uff54",  # secret, fullwidth
])
def test_a_fullwidth_credential_key_is_redacted(key: str) -> None:
    """A label in fullwidth letters (NFKC "PASSWORD") is the same word to a reader: the key
    is compatibility-normalised first (it was only lower-cased, and kept)."""
    assert redact({key: "hunter2"}) == {key: REDACTED}


@pytest.mark.parametrize("key", ["encryption_key", "signing_key"])
def test_a_named_secret_key_is_redacted(key: str) -> None:
    """"encryption_key" and "signing_key" are as secret as "private_key" (they were kept)."""
    assert redact({key: "hunter2"}) == {key: REDACTED}


@pytest.mark.parametrize("key", ["tokens_in", "maxtokens", "prompt_tokens2", "shard_key",
                                 "idempotency_key", "tokenizer", "step2", "passkey_id"])
def test_counters_and_names_that_only_look_like_credentials_stay_visible(key: str) -> None:
    assert redact({key: 7}) == {key: 7}


@pytest.mark.parametrize(("url", "kept"), [
    ("http://h/mcp?api_key=sk-1&x=1", "http://h/mcp?api_key=[redacted]&x=1"),
    ("https://h/p?a=1&access_token=t#top", "https://h/p?a=1&access_token=[redacted]#top"),
    ("https://h/p?Client%20Secret=s", "https://h/p?Client%20Secret=[redacted]"),
    ("https://h/p?tokens_in=5&page=2", "https://h/p?tokens_in=5&page=2"),
    ("not a url? key=1", "not a url? key=1"),
])
def test_a_url_s_secret_query_values_are_redacted(url: str, kept: str) -> None:
    """A URL with a token in its query (an MCP server reached with ``?api_key=``) keeps
    its other parameters in the record, not the token; text that is no URL is left."""
    assert redact({"url": url, "nested": [url]}) == {"url": kept, "nested": [kept]}
