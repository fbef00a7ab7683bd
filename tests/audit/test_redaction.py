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
