"""MessageCipher (Fernet) and SecretBox (AES-256-GCM): round trips, rejection, rotation."""

from __future__ import annotations

import base64
import hmac
import time

import pytest
from cryptography.fernet import Fernet, InvalidToken
from hypothesis import given, settings
from hypothesis import strategies as st

from roost.security.crypto import (
    DecryptionError,
    MessageCipher,
    SecretBox,
    decode_aes_key,
    derive_key_id,
    fernet_key_from_secret,
    generate_aes_key,
    generate_fernet_key,
    validate_fernet_key,
)

KEY_A = generate_fernet_key()
KEY_B = generate_fernet_key()
CIPHER = MessageCipher([KEY_A])
AES_1 = generate_aes_key()
AES_2 = generate_aes_key()
BOX = SecretBox({"k1": AES_1}, "k1")


def _flip(blob: bytes, index: int) -> bytes:
    """Change one base64 character in place (to another valid one)."""
    chars = bytearray(blob)
    chars[index] = ord("A") if chars[index] != ord("A") else ord("B")
    return bytes(chars)


# --- key helpers ----------------------------------------------------------------------


def test_generated_keys_have_the_right_shape() -> None:
    assert len(base64.urlsafe_b64decode(generate_fernet_key())) == 32
    assert len(generate_aes_key()) == 32
    assert generate_aes_key() != generate_aes_key()
    Fernet(generate_fernet_key())  # accepted by cryptography itself


def test_validate_fernet_key_accepts_good_key() -> None:
    assert validate_fernet_key(KEY_A) == KEY_A.encode()


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ("", "empty"),
        ("not base64 !!!", "not url-safe base64"),
        (base64.urlsafe_b64encode(b"short").decode(), "decodes to 5 bytes"),
    ],
)
def test_validate_fernet_key_names_the_entry_and_the_problem(bad: str, reason: str) -> None:
    with pytest.raises(ValueError, match=r"ROOST_MESSAGE_KEYS entry 2") as info:
        validate_fernet_key(bad, position=2)
    assert reason in str(info.value)


def test_validate_fernet_key_never_echoes_the_key() -> None:
    bad = "A" * 40 + "sec!"
    with pytest.raises(ValueError) as info:
        validate_fernet_key(bad)
    assert bad not in str(info.value)


def test_message_cipher_rejects_bad_configuration() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MessageCipher([])
    with pytest.raises(TypeError):
        MessageCipher(KEY_A)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="entry 2 is not a valid Fernet key"):
        MessageCipher([KEY_A, "garbage"])


def test_fernet_key_from_secret_matches_youworker_derivation() -> None:
    # YouWorker: urlsafe_b64encode(sha256(secret)) used directly as the Fernet key.
    key = fernet_key_from_secret("chat secret")
    legacy_token = Fernet(key.encode()).encrypt(b"hello from youworker")
    assert MessageCipher([KEY_A, key]).decrypt(legacy_token) == "hello from youworker"


def test_decode_aes_key_accepts_both_base64_alphabets_and_raw_bytes() -> None:
    key = bytes(range(256))[-32:]  # contains bytes that encode to + and /
    assert decode_aes_key(base64.b64encode(key).decode()) == key
    assert decode_aes_key(base64.urlsafe_b64encode(key).decode().rstrip("=")) == key
    assert decode_aes_key(key) == key
    with pytest.raises(ValueError, match="exactly 32 bytes"):
        decode_aes_key(base64.b64encode(b"x" * 16).decode())
    with pytest.raises(ValueError, match="not valid base64"):
        decode_aes_key("%%%%")


# --- MessageCipher ----------------------------------------------------------------------


@settings(max_examples=50, deadline=None, database=None)
@given(st.text())
def test_message_round_trip(text: str) -> None:
    token = CIPHER.encrypt(text)
    assert isinstance(token, bytes)
    assert CIPHER.decrypt(token) == text


@settings(max_examples=100, deadline=None, database=None)
@given(st.binary(max_size=300))
def test_message_tokens_open_with_cryptography_fernet_under_the_current_key(
        plaintext: bytes) -> None:
    """Tokens are Fernet's own (MessageCipher builds them itself): ``cryptography``'s
    Fernet opens them with the first configured key, not the second, and they carry the
    time they were made."""
    before = int(time.time())
    token = MessageCipher([KEY_A, KEY_B]).encrypt_bytes(plaintext)
    assert Fernet(KEY_A).decrypt(token) == plaintext
    assert before <= Fernet(KEY_A).extract_timestamp(token) <= int(time.time())
    with pytest.raises(InvalidToken):
        Fernet(KEY_B).decrypt(token)


def test_message_encryption_is_randomised() -> None:
    assert CIPHER.encrypt("same") != CIPHER.encrypt("same")


def test_message_decrypt_accepts_str_and_memoryview() -> None:
    token = CIPHER.encrypt("héllo")
    assert CIPHER.decrypt(token.decode()) == "héllo"
    assert CIPHER.decrypt(memoryview(token)) == "héllo"  # type: ignore[arg-type]


def test_message_wrong_key_is_rejected() -> None:
    token = MessageCipher([KEY_B]).encrypt("secret")
    with pytest.raises(DecryptionError) as info:
        CIPHER.decrypt(token)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("blob", [b"", b"garbage", "ünïcode", b"gAAAAA" + b"A" * 100])
def test_message_garbage_is_rejected(blob: bytes | str) -> None:
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(blob)


def test_message_tampering_is_rejected() -> None:
    token = CIPHER.encrypt("pay alice 10")
    with pytest.raises(DecryptionError):
        CIPHER.decrypt(_flip(token, len(token) // 2))


@settings(max_examples=100, deadline=None, database=None)
@given(st.binary(max_size=300), st.integers(min_value=0, max_value=2))
def test_message_decrypt_agrees_with_cryptography_fernet(plaintext: bytes, which: int) -> None:
    """The read path's own Fernet decryption takes exactly the tokens ``cryptography``'s
    Fernet takes, under whichever configured key made them, and nothing else."""
    keys = [KEY_A, KEY_B, generate_fernet_key()]
    cipher = MessageCipher(keys[:2])
    token = Fernet(keys[which]).encrypt(plaintext)
    try:
        expected: str | None = plaintext.decode("utf-8")
    except UnicodeDecodeError:
        expected = None
    if which == 2 or expected is None:  # a key not configured, or not text
        with pytest.raises(DecryptionError):
            cipher.decrypt(token)
    else:
        assert cipher.decrypt(token) == expected


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.tuples(st.binary(max_size=200), st.integers(min_value=0, max_value=1)),
                max_size=12))
def test_message_decrypt_many_agrees_with_fernet_token_by_token(
        items: list[tuple[bytes, int]]) -> None:
    """A page's batch decryption (one AES context for every token under a key) gives
    what ``cryptography``'s Fernet gives each token, in order, keys mixed."""
    keys = [KEY_A, KEY_B]
    cipher = MessageCipher(keys)
    texts = [p.decode("utf-8", "replace").encode("utf-8") for p, _ in items]
    tokens = [Fernet(keys[which]).encrypt(text) for text, (_, which) in zip(texts, items, strict=True)]
    assert cipher.decrypt_many(tokens) == [
        Fernet(keys[which]).decrypt(token).decode("utf-8")
        for token, (_, which) in zip(tokens, items, strict=True)]


def test_message_decrypt_many_refuses_the_batch_when_one_token_is_bad() -> None:
    good = [CIPHER.encrypt(f"message {i}") for i in range(5)]
    assert CIPHER.decrypt_many(good) == [f"message {i}" for i in range(5)]
    for bad in (_flip(good[2], 30), Fernet(KEY_B).encrypt(b"other key"),
                _signed_token(b"A" * 15 + b"\x00"), b"not a token"):
        with pytest.raises(DecryptionError):
            CIPHER.decrypt_many([*good[:2], bad, *good[2:]])


def test_message_every_edited_byte_is_rejected() -> None:
    token = CIPHER.encrypt("pay alice 10")
    raw = base64.urlsafe_b64decode(token)
    for index in range(len(raw)):
        edited = bytearray(raw)
        edited[index] ^= 0x01
        with pytest.raises(DecryptionError):
            CIPHER.decrypt(base64.urlsafe_b64encode(bytes(edited)))
    for cut in (1, 16, 32, len(raw) - 57):
        with pytest.raises(DecryptionError):
            CIPHER.decrypt(base64.urlsafe_b64encode(raw[:-cut]))


def _signed_token(plaintext_block: bytes) -> bytes:
    """A token whose HMAC is right (made with KEY_A's signing half) around one AES block
    chosen raw, so its padding or text can be anything."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = base64.urlsafe_b64decode(KEY_A)
    iv = bytes(16)
    encryptor = Cipher(algorithms.AES(key[16:]), modes.CBC(iv)).encryptor()
    body = b"\x80" + bytes(8) + iv + encryptor.update(plaintext_block) + encryptor.finalize()
    return base64.urlsafe_b64encode(body + hmac.digest(key[:16], body, "sha256"))


def test_message_authentic_token_with_bad_padding_or_text_is_rejected() -> None:
    assert CIPHER.decrypt(_signed_token(b"fifteen bytes!!" + b"\x01")) == "fifteen bytes!!"
    for block in (b"A" * 15 + b"\x00", b"A" * 15 + b"\x11", b"A" * 14 + b"\x01\x02",
                  b"\xff" * 15 + b"\x01"):
        with pytest.raises(DecryptionError):
            CIPHER.decrypt(_signed_token(block))


def test_message_key_rotation() -> None:
    old = MessageCipher([KEY_A])
    new = MessageCipher([KEY_B, KEY_A])  # new key first, old key kept for reading
    token = old.encrypt("before rotation")

    assert new.decrypt(token) == "before rotation"
    assert new.needs_rotation(token)

    rotated = new.rotate(token)
    assert not new.needs_rotation(rotated)
    assert MessageCipher([KEY_B]).decrypt(rotated) == "before rotation"
    with pytest.raises(DecryptionError):
        old.decrypt(rotated)
    assert not new.needs_rotation(new.encrypt("fresh"))


def test_message_rotation_of_undecryptable_token_fails_loudly() -> None:
    foreign = MessageCipher([generate_fernet_key()]).encrypt("x")
    with pytest.raises(DecryptionError):
        CIPHER.rotate(foreign)
    with pytest.raises(DecryptionError):
        CIPHER.needs_rotation(foreign)


def test_message_cipher_repr_hides_keys() -> None:
    assert KEY_A not in repr(CIPHER)


# --- SecretBox ------------------------------------------------------------------------


@settings(max_examples=50, deadline=None, database=None)
@given(plaintext=st.binary(max_size=2048), aad=st.binary(max_size=64))
def test_secretbox_round_trip_bytes(plaintext: bytes, aad: bytes) -> None:
    blob = BOX.encrypt(plaintext, aad)
    assert BOX.decrypt(blob, aad) == plaintext


@settings(max_examples=50, deadline=None, database=None)
@given(st.text())
def test_secretbox_round_trip_text(text: str) -> None:
    assert BOX.decrypt_str(BOX.encrypt(text)) == text


def test_secretbox_format_is_versioned_and_names_the_key() -> None:
    blob = BOX.encrypt(b"sk-live-123")
    assert blob.startswith(b"v1:k1:")
    assert blob.isascii()
    assert b"sk-live-123" not in blob
    assert BOX.key_id_of(blob) == "k1"
    # 12-byte nonce + 11-byte plaintext + 16-byte tag, unpadded url-safe base64
    body = blob.split(b":", 2)[2]
    assert len(base64.urlsafe_b64decode(body + b"=" * (-len(body) % 4))) == 12 + 11 + 16


def test_secretbox_nonce_is_fresh_each_time() -> None:
    assert BOX.encrypt(b"same") != BOX.encrypt(b"same")


def test_secretbox_aad_mismatch_is_rejected() -> None:
    aad = b"oauth_tokens:0190c0de-0000-7000-8000-000000000001:access_token"
    blob = BOX.encrypt(b"ya29.token", aad)
    assert BOX.decrypt(blob, aad) == b"ya29.token"
    for other in (b"", b"oauth_tokens:0190c0de-0000-7000-8000-000000000002:access_token"):
        with pytest.raises(DecryptionError):
            BOX.decrypt(blob, other)


def test_secretbox_wrong_key_is_rejected() -> None:
    impostor = SecretBox({"k1": generate_aes_key()}, "k1")  # same id, different key
    with pytest.raises(DecryptionError, match="wrong key"):
        impostor.decrypt(BOX.encrypt(b"secret"))


def test_secretbox_unknown_key_id_is_rejected() -> None:
    other = SecretBox({"k9": AES_2}, "k9")
    with pytest.raises(DecryptionError, match="not configured"):
        BOX.decrypt(other.encrypt(b"secret"))


def test_secretbox_every_single_character_edit_is_detected() -> None:
    blob = BOX.encrypt(b"a provider api key", b"aad")
    header_len = len(b"v1:k1:")
    for index in range(header_len, len(blob)):
        with pytest.raises(DecryptionError):
            BOX.decrypt(_flip(blob, index), b"aad")


def test_secretbox_header_cannot_be_relabelled() -> None:
    both = SecretBox({"k1": AES_1, "k2": AES_1}, "k1")  # same key under two ids
    blob = both.encrypt(b"secret")
    relabelled = blob.replace(b"v1:k1:", b"v1:k2:", 1)
    with pytest.raises(DecryptionError):
        both.decrypt(relabelled)


@pytest.mark.parametrize(
    "blob",
    [b"", b"garbage", b"v2:k1:AAAA", b"v1:k1:", b"v1:k1:AAAA", b"v1:bad id!:AAAA", "v1:k1:é"],
)
def test_secretbox_malformed_input_is_rejected(blob: bytes | str) -> None:
    with pytest.raises(DecryptionError):
        BOX.decrypt(blob)


def test_secretbox_rotation() -> None:
    old = SecretBox({"k1": AES_1}, "k1")
    ring = SecretBox({"k1": AES_1, "k2": AES_2}, "k2")
    aad = b"provider_keys:42:api_key"
    blob = old.encrypt(b"sk-old", aad)

    assert ring.decrypt(blob, aad) == b"sk-old"
    assert ring.needs_rotation(blob)

    rotated = ring.rotate(blob, aad)
    assert ring.key_id_of(rotated) == "k2"
    assert not ring.needs_rotation(rotated)
    assert SecretBox({"k2": AES_2}, "k2").decrypt(rotated, aad) == b"sk-old"
    assert ring.rotate(rotated, aad) == rotated  # already current: untouched
    with pytest.raises(DecryptionError):
        ring.rotate(blob, b"wrong aad")


def test_secretbox_from_keys_derives_stable_ids() -> None:
    first = SecretBox.from_keys(AES_1)
    blob = first.encrypt(b"x")
    assert first.current_key_id == derive_key_id(AES_1)
    rotated_ring = SecretBox.from_keys(AES_2, old=[AES_1])
    assert rotated_ring.key_ids == (derive_key_id(AES_2), derive_key_id(AES_1))
    assert rotated_ring.decrypt(blob) == b"x"
    assert rotated_ring.needs_rotation(blob)


@pytest.mark.parametrize(
    ("keys", "current", "message"),
    [
        ({}, "k1", "at least one key"),
        ({"k1": b"short"}, "k1", "exactly 32 bytes"),
        ({"bad:id": AES_1}, "bad:id", "invalid"),
        ({"k1": AES_1}, "k2", "not in the key ring"),
    ],
)
def test_secretbox_rejects_bad_key_ring(keys: dict[str, bytes], current: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SecretBox(keys, current)


def test_secretbox_repr_and_errors_hide_secrets() -> None:
    assert AES_1.hex() not in repr(BOX)
    blob = BOX.encrypt(b"hunter2-secret", b"row:1")
    with pytest.raises(DecryptionError) as info:
        BOX.decrypt(blob, b"row:2")
    assert "hunter2" not in str(info.value)
    assert "row:" not in str(info.value)


def test_secretbox_decrypt_str_rejects_non_utf8() -> None:
    with pytest.raises(DecryptionError, match="UTF-8"):
        BOX.decrypt_str(BOX.encrypt(b"\xff\xfe"))
