"""Passkey ceremonies through roost.security.webauthn_helpers and the soft authenticator."""

from __future__ import annotations

import pytest
from tests.support.soft_authenticator import SoftAuthenticator, b64url_decode

from roost.errors import BadRequest, Unauthorized
from roost.security.webauthn_helpers import (
    RelyingParty,
    begin_authentication,
    begin_registration,
    finish_authentication,
    finish_registration,
)

RP = RelyingParty(rp_id="roost.test", rp_name="Roost", origins=("https://roost.test",))
ORIGIN = "https://roost.test"


def test_register_then_sign_in() -> None:
    auth = SoftAuthenticator()
    options, challenge = begin_registration(RP, user_handle=b"h" * 16, user_name="alice")
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert options["authenticatorSelection"]["userVerification"] == "required"
    assert b64url_decode(options["challenge"]) == challenge

    passkey = finish_registration(
        RP, credential=auth.create(options, origin=ORIGIN), expected_challenge=challenge
    )
    assert passkey.sign_count == 0
    assert passkey.device_type == "single_device"

    options, challenge = begin_authentication(RP)  # discoverable: no allow list
    assertion = finish_authentication(
        RP,
        credential=auth.get(options, origin=ORIGIN),
        expected_challenge=challenge,
        public_key=passkey.public_key,
        current_sign_count=passkey.sign_count,
    )
    assert assertion.credential_id == passkey.credential_id
    assert assertion.new_sign_count == 1
    assert assertion.user_verified


def test_registration_failure_is_a_bad_request_with_reason() -> None:
    auth = SoftAuthenticator()
    options, challenge = begin_registration(RP, user_handle=b"h" * 16, user_name="alice")
    response = auth.create(options, origin="https://evil.example")
    with pytest.raises(BadRequest, match="origin"):
        finish_registration(RP, credential=response, expected_challenge=challenge)
    with pytest.raises(BadRequest):
        finish_registration(RP, credential="{not json", expected_challenge=challenge)
    garbled = auth.create(options, origin=ORIGIN)
    garbled["response"]["attestationObject"] = "!!!"
    with pytest.raises(BadRequest):
        finish_registration(RP, credential=garbled, expected_challenge=challenge)


def test_exclude_list_is_passed_to_the_browser() -> None:
    options, _ = begin_registration(
        RP, user_handle=b"h" * 16, user_name="alice", exclude_credential_ids=[b"old-cred"]
    )
    assert [b64url_decode(c["id"]) for c in options["excludeCredentials"]] == [b"old-cred"]


def test_sign_in_failures_are_generic_unauthorized() -> None:
    auth = SoftAuthenticator()
    options, challenge = begin_registration(RP, user_handle=b"h" * 16, user_name="alice")
    passkey = finish_registration(
        RP, credential=auth.create(options, origin=ORIGIN), expected_challenge=challenge
    )
    options, challenge = begin_authentication(RP, allow_credential_ids=[passkey.credential_id])
    response = auth.get(options, origin=ORIGIN)
    for kwargs in (
        {"expected_challenge": b"other", "current_sign_count": 0},
        {"expected_challenge": challenge, "current_sign_count": 5},  # counter went backwards
    ):
        with pytest.raises(Unauthorized) as info:
            finish_authentication(
                RP,
                credential=response,
                public_key=passkey.public_key,
                **kwargs,  # type: ignore[arg-type]
            )
        assert info.value.detail == "passkey sign-in failed"
    with pytest.raises(Unauthorized):
        finish_authentication(
            RP,
            credential=response,
            expected_challenge=challenge,
            public_key=b"not a cose key",
            current_sign_count=0,
        )
