"""Full WebAuthn ceremonies between py_webauthn (relying party) and SoftAuthenticator."""

from __future__ import annotations

import json
from typing import Any

import pytest
from tests.support.soft_authenticator import SoftAuthenticator, b64url_decode
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidRegistrationResponse,
)
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    PublicKeyCredentialDescriptor,
    UserVerificationRequirement,
)

RP_ID = "roost.test"
ORIGIN = "https://roost.test"
USER_ID = b"user-0190c0de-0000-7000"


def _registration_options() -> Any:
    return generate_registration_options(
        rp_id=RP_ID,
        rp_name="Roost",
        user_id=USER_ID,
        user_name="alice@example.org",
        attestation=AttestationConveyancePreference.NONE,
    )


def _verify_registration(options: Any, response: Any, **extra: Any) -> Any:
    return verify_registration_response(
        credential=response, expected_challenge=options.challenge, expected_rp_id=RP_ID,
        expected_origin=ORIGIN, **extra,
    )


def _verify_assertion(
    options: Any, assertion: Any, public_key: bytes, sign_count: int = 0, **extra: Any
) -> Any:
    return verify_authentication_response(
        credential=assertion, expected_challenge=options.challenge, expected_rp_id=RP_ID,
        expected_origin=ORIGIN, credential_public_key=public_key,
        credential_current_sign_count=sign_count, **extra,
    )


def _register(auth: SoftAuthenticator) -> tuple[Any, Any]:
    options = _registration_options()
    response = auth.create(options_to_json(options), origin=ORIGIN)
    return options, _verify_registration(options, response, require_user_verification=True)


def _authenticate(
    auth: SoftAuthenticator, public_key: bytes, sign_count: int, credential_id: bytes
) -> Any:
    options = generate_authentication_options(
        rp_id=RP_ID,
        allow_credentials=[PublicKeyCredentialDescriptor(id=credential_id)],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    assertion = auth.get(options_to_json(options), origin=ORIGIN)
    return _verify_assertion(options, assertion, public_key, sign_count,
                             require_user_verification=True)


def test_full_registration_and_authentication_ceremony() -> None:
    auth = SoftAuthenticator()
    _, reg = _register(auth)
    assert reg.fmt == "none"
    assert reg.sign_count == 0
    assert reg.user_verified
    assert reg.credential_id in auth.credentials

    first = _authenticate(auth, reg.credential_public_key, reg.sign_count, reg.credential_id)
    assert first.credential_id == reg.credential_id
    assert first.new_sign_count == 1
    assert first.user_verified

    second = _authenticate(auth, reg.credential_public_key, first.new_sign_count, reg.credential_id)
    assert second.new_sign_count == 2


def test_options_may_be_given_as_object_dict_or_json() -> None:
    auth = SoftAuthenticator()
    for form in ("object", "dict", "json"):
        options = _registration_options()
        given: Any = {
            "object": options,
            "dict": json.loads(options_to_json(options)),
            "json": options_to_json(options),
        }[form]
        _verify_registration(options, auth.create(given, origin=ORIGIN))


def test_discoverable_login_returns_the_user_handle() -> None:
    auth = SoftAuthenticator()
    _, reg = _register(auth)
    options = generate_authentication_options(rp_id=RP_ID)  # no allowCredentials
    assertion = auth.get(options_to_json(options), origin=ORIGIN)
    assert b64url_decode(assertion["response"]["userHandle"]) == USER_ID
    verified = _verify_assertion(options, assertion, reg.credential_public_key)
    assert verified.credential_id == reg.credential_id


@pytest.mark.parametrize(("made_with", "reason"), [
    ({"origin": ORIGIN, "challenge": b"x" * 32}, "challenge"),
    ({"origin": "https://evil.example"}, "origin"),
    ({"origin": ORIGIN, "rp_id": "evil.example"}, "RP ID"),
], ids=["wrong-challenge", "wrong-origin", "wrong-rp-id"])
def test_registration_for_another_ceremony_is_rejected(
    made_with: dict[str, Any], reason: str
) -> None:
    options = _registration_options()
    response = SoftAuthenticator().create(options_to_json(options), **made_with)
    with pytest.raises(InvalidRegistrationResponse, match=reason):
        _verify_registration(options, response)


def _auth_options(credential_id: bytes) -> Any:
    return generate_authentication_options(
        rp_id=RP_ID, allow_credentials=[PublicKeyCredentialDescriptor(id=credential_id)]
    )


def test_assertion_with_wrong_challenge_or_origin_is_rejected() -> None:
    auth = SoftAuthenticator()
    _, reg = _register(auth)
    options = _auth_options(reg.credential_id)
    wrong_challenge = auth.get(options_to_json(options), origin=ORIGIN, challenge=b"y" * 32)
    wrong_origin = auth.get(options_to_json(options), origin="https://evil.example")
    for assertion, reason in ((wrong_challenge, "challenge"), (wrong_origin, "origin")):
        with pytest.raises(InvalidAuthenticationResponse, match=reason):
            _verify_assertion(options, assertion, reg.credential_public_key)


def test_replayed_assertion_is_rejected_by_sign_count() -> None:
    auth = SoftAuthenticator()
    _, reg = _register(auth)
    options = _auth_options(reg.credential_id)
    assertion = auth.get(options_to_json(options), origin=ORIGIN)
    first = _verify_assertion(options, assertion, reg.credential_public_key)
    with pytest.raises(InvalidAuthenticationResponse, match="sign count"):
        _verify_assertion(options, assertion, reg.credential_public_key, first.new_sign_count)


def test_signature_from_another_key_is_rejected() -> None:
    auth = SoftAuthenticator()
    _, reg = _register(auth)
    _, other = _register(auth)
    options = _auth_options(reg.credential_id)
    assertion = auth.get(options_to_json(options), origin=ORIGIN)
    with pytest.raises(InvalidAuthenticationResponse, match="signature"):
        _verify_assertion(options, assertion, other.credential_public_key)


def test_user_verification_required_but_absent_is_rejected() -> None:
    auth = SoftAuthenticator(user_verification=False)
    options = _registration_options()
    response = auth.create(options_to_json(options), origin=ORIGIN)
    with pytest.raises(InvalidRegistrationResponse, match="verif"):
        _verify_registration(options, response, require_user_verification=True)


def test_synced_passkey_without_counter_and_backup_flags() -> None:
    auth = SoftAuthenticator(use_counter=False, backup_eligible=True)
    _, reg = _register(auth)
    assert reg.credential_backed_up
    result = _authenticate(auth, reg.credential_public_key, 0, reg.credential_id)
    assert result.new_sign_count == 0
    assert result.credential_backed_up


def test_exclude_credentials_prevents_double_registration() -> None:
    auth = SoftAuthenticator()
    _, reg = _register(auth)
    options = generate_registration_options(
        rp_id=RP_ID,
        rp_name="Roost",
        user_id=USER_ID,
        user_name="alice@example.org",
        exclude_credentials=[PublicKeyCredentialDescriptor(id=reg.credential_id)],
    )
    with pytest.raises(ValueError, match="excluded"):
        auth.create(options_to_json(options), origin=ORIGIN)


def test_unknown_credential_cannot_sign() -> None:
    auth = SoftAuthenticator()
    with pytest.raises(LookupError):
        auth.get(options_to_json(_auth_options(b"not-ours")), origin=ORIGIN)
