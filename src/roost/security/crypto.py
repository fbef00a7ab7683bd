"""Encryption at rest: Fernet for chat message content, AES-256-GCM for secrets.

Two ciphers, two jobs (both named by the seeds):

``MessageCipher``
    Fernet (AES-128-CBC + HMAC-SHA256) through ``MultiFernet`` for chat message
    content, as YouWorker stores it.  Built from a list of url-safe base64 Fernet
    keys: the first encrypts, every key decrypts, so a key rotation is "prepend the
    new key, re-encrypt rows in the background with :meth:`MessageCipher.rotate`,
    then drop the old key".

``SecretBox``
    AES-256-GCM for small secrets (OAuth tokens, provider API keys, agent secrets).
    A ciphertext is ASCII bytes in a versioned, self-describing format::

        b"v1:" + key_id + b":" + urlsafe_b64(nonce[12] || ciphertext || tag[16])  (no padding)

    ``key_id`` is 1-32 characters from ``[A-Za-z0-9_-]`` naming the key in the key
    ring, so decryption picks the right key without trial and error and rotation
    can tell which rows are still under an old key.  The authenticated data given to
    GCM is ``b"v1:" + key_id + b":" + aad``: the header cannot be edited and a
    ciphertext bound with ``aad`` (e.g. ``b"oauth_tokens:<row id>:access_token"``)
    does not decrypt when copied into another row or column.  The header is
    prefix-free (key ids never contain ``:``), so the concatenation is unambiguous.

Errors never include key material or plaintext: a failed decryption raises
:class:`DecryptionError` with a fixed message.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = [
    "DecryptionError",
    "MessageCipher",
    "SecretBox",
    "decode_aes_key",
    "derive_key_id",
    "fernet_key_from_secret",
    "generate_aes_key",
    "generate_fernet_key",
    "validate_fernet_key",
]

SECRETBOX_VERSION = b"v1"
_NONCE_BYTES = 12  # the GCM standard nonce size; random nonces are safe up to ~2**32 messages/key
_TAG_BYTES = 16
_AES_KEY_BYTES = 32
_KEY_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class DecryptionError(Exception):
    """Ciphertext could not be decrypted: wrong/missing key, tampering, or corruption.

    The message never contains key material or plaintext.  Services treat this as a
    server-side fault (misconfigured keys or damaged data), not as the caller's mistake.
    """


class MessageDecryptionError(DecryptionError):
    """What :class:`MessageCipher` could not decrypt: no key of ``ROOST_MESSAGE_KEYS``
    opens it (an old key removed before its rows were rotated, a lost key file)."""


# --- key helpers ---------------------------------------------------------------------


def generate_fernet_key() -> str:
    """A fresh Fernet key (url-safe base64 of 32 random bytes), as text for config files."""
    return Fernet.generate_key().decode("ascii")


def generate_aes_key() -> bytes:
    """A fresh 32-byte AES-256 key."""
    return secrets.token_bytes(_AES_KEY_BYTES)


def fernet_key_from_secret(secret: str) -> str:
    """The Fernet key YouWorker derived from its passphrase: ``urlsafe_b64(sha256(secret))``.

    Only for decrypting imported YouWorker messages (put the result after the current
    key in ``ROOST_MESSAGE_KEYS``); new keys come from :func:`generate_fernet_key`.
    """
    return base64.urlsafe_b64encode(hashlib.sha256(secret.encode("utf-8")).digest()).decode()


def validate_fernet_key(
    key: str | bytes, *, position: int = 1, setting: str = "ROOST_MESSAGE_KEYS"
) -> bytes:
    """Check one Fernet key and return it as bytes; ``ValueError`` names what is wrong.

    ``position`` is the 1-based index of the key in ``setting`` so the operator knows
    which entry to fix.  The key itself never appears in the message.
    """
    where = f"{setting} entry {position}"
    hint = (
        "expected 32 random bytes in url-safe base64 (44 characters ending in '='); "
        'generate one with: python -c "from roost.security.crypto import '
        'generate_fernet_key; print(generate_fernet_key())"'
    )
    raw = key.encode("ascii", errors="replace") if isinstance(key, str) else key
    raw = raw.strip()
    if not raw:
        raise ValueError(f"{where} is empty; {hint}")
    try:
        decoded = base64.b64decode(raw, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"{where} is not a valid Fernet key: not url-safe base64; {hint}"
        ) from None
    if len(decoded) != 32:
        raise ValueError(
            f"{where} is not a valid Fernet key: decodes to {len(decoded)} bytes, not 32; {hint}"
        )
    try:
        Fernet(raw)
    except (ValueError, binascii.Error):  # pragma: no cover - covered by the checks above
        raise ValueError(f"{where} is not a valid Fernet key; {hint}") from None
    return raw


def decode_aes_key(value: str | bytes, *, setting: str = "ROOST_SECRETS_KEY") -> bytes:
    """Decode a base64 (standard or url-safe, padding optional) AES-256 key from config.

    Raw 32-byte ``bytes`` are passed through unchanged.
    """
    if isinstance(value, bytes) and len(value) == _AES_KEY_BYTES:
        return value
    text = value.decode("ascii", errors="replace") if isinstance(value, bytes) else value
    text = text.strip().replace("-", "+").replace("_", "/")
    text += "=" * (-len(text) % 4)
    try:
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{setting} is not valid base64") from None
    if len(decoded) != _AES_KEY_BYTES:
        raise ValueError(
            f"{setting} must decode to exactly 32 bytes (AES-256), got {len(decoded)} bytes"
        )
    return decoded


def derive_key_id(key: bytes) -> str:
    """A stable, non-secret 8-character id for a key (truncated SHA-256 fingerprint).

    Lets a single configured key work without the operator naming it; after a
    rotation the old key keeps the same id, so old ciphertexts still find it.
    32 bits of a hash of a 256-bit key reveal nothing useful about the key.
    """
    return hashlib.sha256(b"roost-secretbox-key-id\x00" + key).hexdigest()[:8]


# --- Fernet for messages -------------------------------------------------------------


class MessageCipher:
    """Fernet/MultiFernet encryption of chat message text (first key encrypts)."""

    def __init__(self, keys: Sequence[str | bytes], *, setting: str = "ROOST_MESSAGE_KEYS") -> None:
        if isinstance(keys, str | bytes):  # a lone string would iterate per character
            raise TypeError("MessageCipher expects a list of keys, not a single string")
        if not keys:
            raise ValueError(f"{setting} is empty: give at least one Fernet key")
        fernets = [
            Fernet(validate_fernet_key(k, position=i, setting=setting))
            for i, k in enumerate(keys, start=1)
        ]
        self._primary = fernets[0]
        self._multi = MultiFernet(fernets)
        self.key_count = len(fernets)
        # Per Fernet key, for the read path's decryption: HMAC-SHA256 keyed with the
        # signing half as its two SHA-256 states after the padded key (RFC 2104: inner
        # ``K xor ipad``, outer ``K xor opad``), copied per token; and the encryption half.
        self._halves = [
            (*_hmac_states(raw[:16]), raw[16:])
            for raw in (base64.urlsafe_b64decode(validate_fernet_key(k, setting=setting))
                        for k in keys)
        ]
        self._encrypting = algorithms.AES(self._halves[0][2])  # the current key's

    def __repr__(self) -> str:  # never leak keys through a debug print
        return f"MessageCipher(<{self.key_count} key(s) redacted>)"

    def encrypt(self, plaintext: str) -> bytes:
        """Encrypt under the current key; returns the Fernet token (ASCII bytes)."""
        return self.encrypt_bytes(plaintext.encode("utf-8"))

    def decrypt(self, token: bytes | str) -> str:
        """Decrypt with any configured key; :class:`DecryptionError` if none fits."""
        return self.decrypt_many((token,))[0]

    def encrypt_bytes(self, plaintext: bytes) -> bytes:
        """:meth:`encrypt` of bytes that need not be text (a compressed payload).

        The Fernet specification with the current key's AES object and HMAC states made
        once (``Fernet.encrypt`` builds both per token: 18-22 against 9 us here, on
        every message stored): version, timestamp, a random IV, AES-128-CBC of the
        PKCS7-padded text, HMAC-SHA256 over all of it.  tests/security/test_crypto.py
        opens its tokens with ``cryptography``'s Fernet."""
        inner, outer, _ = self._halves[0]
        iv = os.urandom(16)
        pad = 16 - len(plaintext) % 16
        encryptor = Cipher(self._encrypting, modes.CBC(iv)).encryptor()
        ciphertext = encryptor.update(plaintext + bytes((pad,)) * pad) + encryptor.finalize()
        signed = b"\x80" + int(time.time()).to_bytes(8, "big") + iv + ciphertext
        inner_hash = inner.copy()
        inner_hash.update(signed)
        outer_hash = outer.copy()
        outer_hash.update(inner_hash.digest())
        return base64.urlsafe_b64encode(signed + outer_hash.digest())

    def decrypt_bytes(self, token: bytes | str) -> bytes:
        """:meth:`decrypt` to bytes; :class:`DecryptionError` if no key fits."""
        try:
            return self._multi.decrypt(_as_bytes(token))
        except (InvalidToken, TypeError, ValueError):
            raise _undecryptable() from None

    def decrypt_many(self, tokens: Sequence[bytes | str]) -> list[str]:
        """Decrypt every token (any configured key each); :class:`DecryptionError` if one
        does not open.

        The Fernet specification done with the standard library's HMAC and one AES
        context for all the tokens under one key: ``Fernet.decrypt`` builds HMAC and
        cipher objects per token through more layers, and a history page decrypts fifty.
        Same checks, same order: version byte and length, then the HMAC-SHA256 over
        everything before it, compared in constant time, for every token before any is
        decrypted (encrypt-then-MAC: the padding is only ever read from an authentic
        token, so its check cannot be an oracle).  No TTL, as MultiFernet was used.
        tests/security/test_crypto.py checks it against ``cryptography``'s Fernet."""
        blobs: list[bytes] = []
        by_key: dict[bytes, list[int]] = {}
        for index, token in enumerate(tokens):
            try:
                # base64.urlsafe_b64decode without its layers (same non-strict decoding).
                data = binascii.a2b_base64(_as_bytes(token).translate(_URLSAFE_TO_STANDARD))
            except (binascii.Error, TypeError, ValueError):
                raise _undecryptable() from None
            # version (1) || timestamp (8) || IV (16) || ciphertext (16·n, n ≥ 1) || HMAC (32)
            if len(data) < 73 or data[0] != 0x80 or (len(data) - 57) % 16:
                raise _undecryptable()
            signed, mac = data[:-32], data[-32:]
            encryption_key = self._signed_by(signed, mac)
            if encryption_key is None:
                raise _undecryptable()
            blobs.append(data)
            by_key.setdefault(encryption_key, []).append(index)
        texts = [""] * len(blobs)
        for encryption_key, indexes in by_key.items():
            # CBC decryption is per block: P_i = AES⁻¹(C_i) xor C_(i-1), with C_0 the IV.
            # So every token's blocks go through one AES context at once (ECB: AES⁻¹ of
            # each block alone), then one XOR with the blocks that precede them
            # (IV || C_1 .. C_(n-1) of each token: data[9:-48]).  The tokens were all
            # authenticated above; ECB is only the block primitive here.
            decryptor = Cipher(algorithms.AES(encryption_key), modes.ECB()).decryptor()  # noqa: S305
            decrypted = decryptor.update(b"".join(blobs[i][25:-32] for i in indexes))
            decrypted += decryptor.finalize()
            preceding = b"".join(blobs[i][9:-48] for i in indexes)
            plain = (int.from_bytes(decrypted, "big") ^ int.from_bytes(preceding, "big")
                     ).to_bytes(len(decrypted), "big")
            offset = 0
            for i in indexes:
                end = offset + len(blobs[i]) - 57
                pad = plain[end - 1]
                if not 1 <= pad <= 16 or plain[end - pad:end] != bytes((pad,)) * pad:
                    raise _undecryptable()
                try:
                    texts[i] = plain[offset:end - pad].decode("utf-8")
                except UnicodeDecodeError:
                    raise _undecryptable() from None
                offset = end
        return texts

    def _signed_by(self, signed: bytes, mac: bytes) -> bytes | None:
        """The encryption half of the key whose signing half made ``mac``, else None."""
        for inner, outer, encrypting in self._halves:
            # HMAC(K, m) = H((K xor opad) || H((K xor ipad) || m)), both prefixes hashed
            # once per key: two C-level state copies per token instead of hmac.HMAC's
            # Python layers (tests/security/test_crypto.py checks it against Fernet).
            inner_hash = inner.copy()
            inner_hash.update(signed)
            outer_hash = outer.copy()
            outer_hash.update(inner_hash.digest())
            if hmac.compare_digest(outer_hash.digest(), mac):
                return encrypting
        return None

    def rotate(self, token: bytes | str) -> bytes:
        """Re-encrypt under the current key (keeps the original timestamp)."""
        try:
            return self._multi.rotate(_as_bytes(token))
        except (InvalidToken, TypeError, ValueError):
            raise MessageDecryptionError(
                "message content could not be re-encrypted: no configured key decrypts it"
            ) from None

    def needs_rotation(self, token: bytes | str) -> bool:
        """True when the token is not under the current key (but an old key decrypts it).

        Fernet tokens carry no key id, so this tries the current key first (one HMAC);
        raises :class:`DecryptionError` when no key decrypts the token at all.
        """
        raw = _as_bytes(token)
        try:
            self._primary.decrypt(raw)
            return False
        except (InvalidToken, TypeError, ValueError):
            pass
        self.decrypt_bytes(raw)  # raises DecryptionError when no key fits
        return True


def _undecryptable() -> DecryptionError:
    return MessageDecryptionError(
        "message content could not be decrypted with any configured key "
        "(wrong key or corrupted data)"
    )


# --- AES-256-GCM for secrets ---------------------------------------------------------


class SecretBox:
    """AES-256-GCM with a key ring, versioned ciphertexts and associated data.

    ``keys`` maps key id -> 32-byte key; ``current_key_id`` names the key that
    encrypts.  Every key in the ring decrypts.
    """

    def __init__(self, keys: Mapping[str, bytes], current_key_id: str) -> None:
        if not keys:
            raise ValueError("SecretBox needs at least one key")
        ring: dict[bytes, AESGCM] = {}
        for key_id, key in keys.items():
            if not _KEY_ID_RE.fullmatch(key_id):
                raise ValueError(
                    f"secret key id {key_id!r} is invalid: use 1-32 characters from "
                    "A-Z, a-z, 0-9, '_' and '-'"
                )
            if not isinstance(key, bytes) or len(key) != _AES_KEY_BYTES:
                raise ValueError(f"secret key {key_id!r} must be exactly 32 bytes (AES-256)")
            ring[key_id.encode("ascii")] = AESGCM(key)
        if current_key_id not in keys:
            raise ValueError(f"current secret key id {current_key_id!r} is not in the key ring")
        self._ring = ring
        self._current_id = current_key_id.encode("ascii")

    @classmethod
    def from_keys(cls, current: bytes, old: Sequence[bytes] = ()) -> SecretBox:
        """Ring from bare keys, ids derived by :func:`derive_key_id` (current first)."""
        ring = {derive_key_id(current): current}
        for key in old:
            ring.setdefault(derive_key_id(key), key)
        return cls(ring, derive_key_id(current))

    def __repr__(self) -> str:
        return f"SecretBox(current={self.current_key_id!r}, keys=<{len(self._ring)} redacted>)"

    @property
    def current_key_id(self) -> str:
        return self._current_id.decode("ascii")

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(k.decode("ascii") for k in self._ring)

    @staticmethod
    def _header(key_id: bytes) -> bytes:
        return SECRETBOX_VERSION + b":" + key_id + b":"

    def encrypt(self, plaintext: bytes | str, aad: bytes = b"") -> bytes:
        """Encrypt under the current key; ``aad`` binds the ciphertext to its place."""
        data = plaintext.encode("utf-8") if isinstance(plaintext, str) else plaintext
        header = self._header(self._current_id)
        nonce = secrets.token_bytes(_NONCE_BYTES)
        sealed = self._ring[self._current_id].encrypt(nonce, data, header + aad)
        return header + base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=")

    def decrypt(self, blob: bytes | str, aad: bytes = b"") -> bytes:
        """Decrypt a :meth:`encrypt` result; :class:`DecryptionError` on any failure."""
        key_id, payload = self._parse(blob)
        cipher = self._ring.get(key_id)
        if cipher is None:
            raise DecryptionError(
                "secret was encrypted with a key that is not configured "
                f"(key id {key_id.decode('ascii')!r})"
            )
        nonce, sealed = payload[:_NONCE_BYTES], payload[_NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, sealed, self._header(key_id) + aad)
        except InvalidTag:
            raise DecryptionError(
                "secret could not be decrypted (wrong key, wrong associated data, "
                "or tampered ciphertext)"
            ) from None

    def decrypt_str(self, blob: bytes | str, aad: bytes = b"") -> str:
        """:meth:`decrypt` and decode UTF-8."""
        try:
            return self.decrypt(blob, aad).decode("utf-8")
        except UnicodeDecodeError:
            raise DecryptionError("decrypted secret is not UTF-8 text") from None

    def key_id_of(self, blob: bytes | str) -> str:
        """The key id a ciphertext names (no decryption)."""
        return self._parse(blob)[0].decode("ascii")

    def needs_rotation(self, blob: bytes | str) -> bool:
        """True when the ciphertext is under a key other than the current one."""
        return self._parse(blob)[0] != self._current_id

    def rotate(self, blob: bytes | str, aad: bytes = b"") -> bytes:
        """Re-encrypt under the current key (same ``aad``); unchanged if already current."""
        if not self.needs_rotation(blob):
            return _as_bytes(blob)
        return self.encrypt(self.decrypt(blob, aad), aad)

    def _parse(self, blob: bytes | str) -> tuple[bytes, bytes]:
        raw = _as_bytes(blob)
        parts = raw.split(b":", 2)
        if len(parts) != 3 or parts[0] != SECRETBOX_VERSION:
            raise DecryptionError("secret ciphertext has an unknown format or version")
        key_id, body = parts[1], parts[2]
        if not _KEY_ID_RE.fullmatch(key_id.decode("ascii", errors="replace")):
            raise DecryptionError("secret ciphertext has a malformed key id")
        try:
            payload = base64.b64decode(
                body + b"=" * (-len(body) % 4), altchars=b"-_", validate=True
            )
        except (binascii.Error, ValueError):
            raise DecryptionError("secret ciphertext is not valid base64") from None
        # Decoders ignore the unused low bits of the last character; insisting on the
        # canonical form means any edit to the stored text is detected, not just most.
        if base64.urlsafe_b64encode(payload).rstrip(b"=") != body:
            raise DecryptionError("secret ciphertext is not canonical base64")
        if len(payload) < _NONCE_BYTES + _TAG_BYTES:
            raise DecryptionError("secret ciphertext is truncated")
        return key_id, payload


_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


def _hmac_states(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    """SHA-256 after ``key xor ipad`` and after ``key xor opad`` (RFC 2104; the key is
    shorter than SHA-256's 64-byte block, so it is zero-padded, not hashed)."""
    padded = key.ljust(64, b"\0")
    return (hashlib.sha256(bytes(b ^ 0x36 for b in padded)),
            hashlib.sha256(bytes(b ^ 0x5C for b in padded)))


def _as_bytes(value: bytes | bytearray | memoryview | str) -> bytes:
    # asyncpg returns bytea as bytes, but memoryview/str show up from other drivers/JSON.
    if isinstance(value, str):
        # Non-ASCII cannot be a valid token; "replace" turns it into a decode failure.
        return value.encode("ascii", errors="replace")
    return bytes(value)
