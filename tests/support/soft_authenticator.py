"""A software WebAuthn authenticator for tests (a passkey without a browser or a token).

It plays both the authenticator and the client (browser) role: given the options
JSON the relying party produced with ``webauthn.generate_registration_options`` /
``generate_authentication_options`` (as returned by ``webauthn.options_to_json``, a
dict of it, or the options object itself) and the page origin, it returns the
``PublicKeyCredential`` JSON a browser would post back, ready for
``webauthn.verify_registration_response`` / ``verify_authentication_response``.

* attestation format ``"none"``; ``authData`` with attested credential data;
* ES256 (COSE alg -7) keys on P-256, COSE_Key EC2 encoding, CBOR via ``cbor2``
  (a dependency of ``webauthn`` itself);
* the signature counter increments on every assertion (``use_counter=False``
  mimics synced passkeys, which always report 0).

Example::

    auth = SoftAuthenticator()
    reg_json = auth.create(options_to_json(reg_options), origin="https://roost.test")
    verified = verify_registration_response(credential=reg_json, ...)
    assertion = auth.get(options_to_json(auth_options), origin="https://roost.test")
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["SoftAuthenticator", "SoftCredential", "b64url_decode", "b64url_encode"]

_ES256 = -7
_FLAG_UP = 0x01  # user present
_FLAG_UV = 0x04  # user verified
_FLAG_BE = 0x08  # backup eligible
_FLAG_BS = 0x10  # backed up
_FLAG_AT = 0x40  # attested credential data included


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _options_dict(options: Any) -> dict[str, Any]:
    """Options as the JSON dict ``webauthn.options_to_json`` produces."""
    if isinstance(options, str | bytes):
        parsed = json.loads(options)
        if not isinstance(parsed, dict):
            raise TypeError("options JSON must be an object")
        return parsed
    if isinstance(options, dict):
        return options
    from webauthn.helpers import options_to_json_dict  # the options dataclasses

    return options_to_json_dict(options)


@dataclass
class SoftCredential:
    """One credential (passkey) held by the authenticator."""

    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0
    user_name: str = ""

    def cose_public_key(self) -> bytes:
        numbers = self.private_key.public_key().public_numbers()
        # COSE_Key (RFC 9053): kty=EC2(2), alg=ES256(-7), crv=P-256(1), x, y.
        return cbor2.dumps(
            {
                1: 2,
                3: _ES256,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )


@dataclass
class SoftAuthenticator:
    """An in-memory platform authenticator holding any number of credentials."""

    aaguid: bytes = bytes(16)
    user_verification: bool = True
    use_counter: bool = True
    backup_eligible: bool = False
    credentials: dict[bytes, SoftCredential] = field(default_factory=dict)

    # --- registration (navigator.credentials.create) ------------------------------

    def create(
        self,
        options: Any,
        origin: str,
        *,
        rp_id: str | None = None,
        challenge: bytes | None = None,
        client_data_type: str = "webauthn.create",
    ) -> dict[str, Any]:
        """A registration response for ``options``; the new credential is kept.

        ``rp_id`` defaults to ``options["rp"]["id"]`` (else the origin's host);
        ``challenge`` overrides the options' challenge (to test rejection).
        """
        opts = _options_dict(options)
        algs = [p.get("alg") for p in opts.get("pubKeyCredParams", [])]
        if algs and _ES256 not in algs:
            raise ValueError("relying party does not accept ES256; SoftAuthenticator only has it")
        rp_id = rp_id or opts.get("rp", {}).get("id") or _host(origin)
        excluded = {b64url_decode(c["id"]) for c in opts.get("excludeCredentials", [])}
        for cred_id in excluded:
            known = self.credentials.get(cred_id)
            if known is not None and known.rp_id == rp_id:
                # What a browser reports as InvalidStateError.
                raise ValueError("authenticator already holds an excluded credential")

        credential = SoftCredential(
            credential_id=secrets.token_bytes(32),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            rp_id=rp_id,
            user_handle=b64url_decode(opts["user"]["id"]),
            user_name=opts["user"].get("name", ""),
        )
        client_data = self._client_data(
            client_data_type,
            challenge if challenge is not None else b64url_decode(opts["challenge"]),
            origin,
        )
        attested = (
            self.aaguid
            + struct.pack(">H", len(credential.credential_id))
            + credential.credential_id
            + credential.cose_public_key()
        )
        auth_data = self._auth_data(rp_id, credential.sign_count, _FLAG_AT) + attested
        attestation_object = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        self.credentials[credential.credential_id] = credential
        cred_id_text = b64url_encode(credential.credential_id)
        return {
            "id": cred_id_text,
            "rawId": cred_id_text,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url_encode(client_data),
                "attestationObject": b64url_encode(attestation_object),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    # --- authentication (navigator.credentials.get) -------------------------------

    def get(
        self,
        options: Any,
        origin: str,
        *,
        rp_id: str | None = None,
        challenge: bytes | None = None,
        credential_id: bytes | None = None,
        client_data_type: str = "webauthn.get",
    ) -> dict[str, Any]:
        """An assertion for ``options`` signed by a matching credential.

        Uses ``credential_id`` if given, else the first of ``allowCredentials`` this
        authenticator holds, else (discoverable login) any credential for the RP.
        """
        opts = _options_dict(options)
        rp_id = rp_id or opts.get("rpId") or _host(origin)
        credential = self._pick(rp_id, opts, credential_id)
        if self.use_counter:
            credential.sign_count += 1
        client_data = self._client_data(
            client_data_type,
            challenge if challenge is not None else b64url_decode(opts["challenge"]),
            origin,
        )
        auth_data = self._auth_data(rp_id, credential.sign_count, 0)
        signed = auth_data + hashlib.sha256(client_data).digest()
        signature = credential.private_key.sign(signed, ec.ECDSA(hashes.SHA256()))
        cred_id_text = b64url_encode(credential.credential_id)
        return {
            "id": cred_id_text,
            "rawId": cred_id_text,
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url_encode(client_data),
                "authenticatorData": b64url_encode(auth_data),
                "signature": b64url_encode(signature),
                "userHandle": b64url_encode(credential.user_handle),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    # --- internals -----------------------------------------------------------------

    def _pick(
        self, rp_id: str, opts: dict[str, Any], credential_id: bytes | None
    ) -> SoftCredential:
        if credential_id is not None:
            chosen = self.credentials.get(credential_id)
            if chosen is None:
                raise LookupError("authenticator does not hold that credential")
            return chosen
        allowed = [b64url_decode(c["id"]) for c in opts.get("allowCredentials", [])]
        candidates = [c for c in self.credentials.values() if c.rp_id == rp_id]
        if allowed:
            candidates = [c for c in candidates if c.credential_id in allowed]
        if not candidates:
            raise LookupError(f"authenticator holds no credential for rp_id {rp_id!r}")
        return candidates[0]

    def _flags(self, extra: int) -> int:
        flags = _FLAG_UP | extra
        if self.user_verification:
            flags |= _FLAG_UV
        if self.backup_eligible:
            flags |= _FLAG_BE | _FLAG_BS
        return flags

    def _auth_data(self, rp_id: str, sign_count: int, extra_flags: int) -> bytes:
        rp_id_hash = hashlib.sha256(rp_id.encode("utf-8")).digest()
        return rp_id_hash + bytes([self._flags(extra_flags)]) + struct.pack(">I", sign_count)

    @staticmethod
    def _client_data(kind: str, challenge: bytes, origin: str) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": b64url_encode(challenge),
                "origin": origin,
                "crossOrigin": False,
            },
            separators=(",", ":"),
        ).encode("utf-8")


def _host(origin: str) -> str:
    host = origin.split("://", 1)[-1].split("/", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host
