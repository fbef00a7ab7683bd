"""Passkey ceremonies through roost.security.webauthn_helpers and the soft authenticator."""

from __future__ import annotations

import struct
from typing import Any

import cbor2
import pytest
from tests.support.soft_authenticator import SoftAuthenticator, b64url_decode, b64url_encode

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


def _registration(
    *, public_key: object = None, statement: object = None
) -> tuple[dict[str, Any], bytes]:
    """A soft authenticator's registration with its COSE public key and/or attStmt
    replaced (attestation `none` signs neither, so verification alone cannot notice)."""
    options, challenge = begin_registration(RP, user_handle=b"h" * 16, user_name="alice")
    cred = SoftAuthenticator().create(options, origin=ORIGIN)
    att = cbor2.loads(b64url_decode(cred["response"]["attestationObject"]))
    if public_key is not None:
        cred_id = b64url_decode(cred["rawId"])
        att["authData"] = (att["authData"][:53] + struct.pack(">H", len(cred_id)) + cred_id
                           + cbor2.dumps(public_key))
    if statement is not None:
        att["attStmt"] = statement
    cred["response"]["attestationObject"] = b64url_encode(cbor2.dumps(att))
    return cred, challenge


@pytest.mark.parametrize("key", [
    {1: 2, 3: -7, -1: 1, -2: b"x", -3: b"y"},  # not a point on P-256
    {1: 2, 3: -7, -1: 1, -2: "x" * 32, -3: "y" * 32},  # coordinates are no byte strings
    {1: 2, 3: -7, -1: 99, -2: b"x" * 32, -3: b"y" * 32},  # unknown curve
    {1: 2, 3: -257, -1: 1, -2: b"x" * 32, -3: b"y" * 32},  # an RSA algorithm on an EC key
    {1: 1, 3: -8, -1: 6, -2: b"x"},  # Ed25519 key of the wrong length
    {1: 3, 3: -257, -1: b"\x00", -2: b"\x01\x00\x01"},  # RSA modulus 0
])
def test_registration_with_an_unusable_public_key_is_refused(key: dict[int, Any]) -> None:
    cred, challenge = _registration(public_key=key)
    with pytest.raises(BadRequest, match="passkey public key is invalid"):
        finish_registration(RP, credential=cred, expected_challenge=challenge)


@pytest.mark.parametrize("statement", [{"foo": 1}, {"sig": b"x"}, [1], "x"])
def test_none_attestation_with_a_statement_is_refused(statement: object) -> None:
    """WebAuthn's `none` format carries an empty attStmt map; anything else is refused."""
    cred, challenge = _registration(statement=statement)
    with pytest.raises(BadRequest, match="attestation statement"):
        finish_registration(RP, credential=cred, expected_challenge=challenge)
