"""Passkey (WebAuthn) ceremonies on top of py_webauthn, with Roost's error types.

Stateless: ``begin_*`` returns the options JSON for the browser and the challenge
the caller must keep (server-side, single use, short-lived) until ``finish_*``.
Failures become :class:`roost.errors.BadRequest` (registration: the signed-in user
sees why) or :class:`roost.errors.Unauthorized` (sign-in: one generic message, so
the answer does not help an attacker tune a forgery).

Passkeys are discoverable credentials with user verification; attestation is
``"none"`` (we trust the account holder, not the authenticator model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import (
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
    options_to_json_dict,
    parse_cbor,
)
from webauthn.helpers.algorithms import get_ec2_sig_alg, is_rsa_pkcs, is_rsa_pss
from webauthn.helpers.decode_credential_public_key import (
    DecodedEC2PublicKey,
    DecodedRSAPublicKey,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from roost.errors import BadRequest, Unauthorized

__all__ = [
    "PasskeyAssertion",
    "RegisteredPasskey",
    "RelyingParty",
    "begin_authentication",
    "begin_registration",
    "finish_authentication",
    "finish_registration",
]

_TIMEOUT_MS = 120_000


@dataclass(frozen=True)
class RelyingParty:
    """Who we are to the browser: ``rp_id`` is the registrable domain (no scheme/port);
    ``origins`` are the exact page origins allowed to run ceremonies."""

    rp_id: str
    rp_name: str
    origins: tuple[str, ...]


@dataclass(frozen=True)
class RegisteredPasskey:
    credential_id: bytes
    public_key: bytes  # COSE_Key, stored as-is and handed back to finish_authentication
    sign_count: int
    aaguid: str
    backed_up: bool
    device_type: str  # "single_device" or "multi_device"
    user_verified: bool


@dataclass(frozen=True)
class PasskeyAssertion:
    credential_id: bytes
    new_sign_count: int
    backed_up: bool
    user_verified: bool


def begin_registration(
    rp: RelyingParty,
    *,
    user_handle: bytes,
    user_name: str,
    display_name: str | None = None,
    exclude_credential_ids: Sequence[bytes] = (),
) -> tuple[dict[str, Any], bytes]:
    """Options for ``navigator.credentials.create()`` and the challenge to keep.

    ``user_handle`` must be random and stable per user (never an email: it is
    stored on the authenticator and returned on every sign-in).
    """
    options = generate_registration_options(
        rp_id=rp.rp_id,
        rp_name=rp.rp_name,
        user_id=user_handle,
        user_name=user_name,
        user_display_name=display_name or user_name,
        timeout=_TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.REQUIRED,
            require_resident_key=True,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=c) for c in exclude_credential_ids],
    )
    return options_to_json_dict(options), options.challenge


def finish_registration(
    rp: RelyingParty,
    *,
    credential: str | dict[str, Any],
    expected_challenge: bytes,
    require_user_verification: bool = True,
) -> RegisteredPasskey:
    """Verify the browser's answer; :class:`BadRequest` with the reason when it fails."""
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=expected_challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins),
            require_user_verification=require_user_verification,
        )
    except WebAuthnException as exc:
        raise BadRequest(f"passkey registration could not be verified: {exc}") from None
    except (ValueError, TypeError, KeyError):  # malformed base64/JSON from the client
        raise BadRequest("passkey registration response is malformed") from None
    if verified.fmt == AttestationFormat.NONE and not _empty_statement(verified.attestation_object):
        raise BadRequest("passkey registration could not be verified: a `none` attestation "
                         "must have an empty attestation statement")
    if not _usable_public_key(verified.credential_public_key):
        raise BadRequest("passkey public key is invalid")
    return RegisteredPasskey(
        credential_id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=verified.aaguid,
        backed_up=verified.credential_backed_up,
        device_type=str(verified.credential_device_type.value),
        user_verified=verified.user_verified,
    )


def _empty_statement(attestation_object: bytes) -> bool:
    """WebAuthn's `none` format has an empty ``attStmt`` map; py_webauthn only looks for
    the fields it knows, so ``{"foo": 1}`` (or a list) would pass."""
    try:
        statement = parse_cbor(attestation_object).get("attStmt")
    except (WebAuthnException, AttributeError):
        return False
    return isinstance(statement, dict) and not statement


def _usable_public_key(cose_key: bytes) -> bool:
    """Whether a sign-in could ever verify against ``cose_key``.  With a `none`
    attestation nothing signed at registration, so py_webauthn never built the key: an
    off-curve point or a key that does not fit its algorithm would be stored and then
    fail every sign-in."""
    try:
        decoded = decode_credential_public_key(cose_key)
        decoded_public_key_to_cryptography(decoded)  # refuses points off the curve
        if isinstance(decoded, DecodedEC2PublicKey):
            get_ec2_sig_alg(decoded.alg)
        elif isinstance(decoded, DecodedRSAPublicKey):
            return is_rsa_pkcs(decoded.alg) or is_rsa_pss(decoded.alg)
    except (WebAuthnException, ValueError, TypeError, KeyError, IndexError):
        return False
    return True


def begin_authentication(
    rp: RelyingParty, *, allow_credential_ids: Sequence[bytes] = ()
) -> tuple[dict[str, Any], bytes]:
    """Options for ``navigator.credentials.get()`` and the challenge to keep.

    Leave ``allow_credential_ids`` empty for username-less (discoverable) sign-in.
    """
    options = generate_authentication_options(
        rp_id=rp.rp_id,
        timeout=_TIMEOUT_MS,
        allow_credentials=[PublicKeyCredentialDescriptor(id=c) for c in allow_credential_ids],
        user_verification=UserVerificationRequirement.REQUIRED,
    )
    return options_to_json_dict(options), options.challenge


def finish_authentication(
    rp: RelyingParty,
    *,
    credential: str | dict[str, Any],
    expected_challenge: bytes,
    public_key: bytes,
    current_sign_count: int,
    require_user_verification: bool = True,
) -> PasskeyAssertion:
    """Verify a sign-in; :class:`Unauthorized` (generic message) when it fails.

    The caller looks up ``public_key``/``current_sign_count`` by the credential id
    in the response, and stores ``new_sign_count`` afterwards.  A counter that does
    not increase (a cloned authenticator or a replay) is refused.
    """
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=expected_challenge,
            expected_rp_id=rp.rp_id,
            expected_origin=list(rp.origins),
            credential_public_key=public_key,
            credential_current_sign_count=current_sign_count,
            require_user_verification=require_user_verification,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError):
        raise Unauthorized("passkey sign-in failed") from None
    return PasskeyAssertion(
        credential_id=verified.credential_id,
        new_sign_count=verified.new_sign_count,
        backed_up=verified.credential_backed_up,
        user_verified=verified.user_verified,
    )
