"""How a call's conversation is stored: compressed when that is smaller, then encrypted."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from roost.llm.records import decrypt_json, encrypt_json
from roost.security.crypto import DecryptionError, MessageCipher


@pytest.fixture
def cipher() -> MessageCipher:
    return MessageCipher([Fernet.generate_key().decode()])


def test_a_long_conversation_is_compressed_before_it_is_encrypted(cipher: MessageCipher) -> None:
    conversation = [{"role": "user", "content": f"step {i}: what time is it in Lisbon?"}
                    for i in range(40)]
    token = encrypt_json(cipher, conversation)
    assert cipher.decrypt_bytes(token).startswith(b"\x00")  # the compressed form
    plain_token = cipher.encrypt(str(conversation))
    assert len(token) * 3 < len(plain_token)
    assert decrypt_json(cipher, token) == conversation


def test_short_values_and_rows_stored_before_compression_read_back(cipher: MessageCipher) -> None:
    short = [{"role": "user", "content": "hi"}]
    assert not cipher.decrypt_bytes(encrypt_json(cipher, short)).startswith(b"\x00")
    assert decrypt_json(cipher, encrypt_json(cipher, short)) == short
    # What earlier versions wrote: the JSON text encrypted as it is.
    legacy = cipher.encrypt('[{"role":"user","content":"' + "long " * 200 + '"}]')
    assert decrypt_json(cipher, legacy)[0]["content"].startswith("long long")


def test_a_token_under_another_key_is_refused(cipher: MessageCipher) -> None:
    other = MessageCipher([Fernet.generate_key().decode()])
    with pytest.raises(DecryptionError):
        decrypt_json(cipher, encrypt_json(other, [{"role": "user", "content": "x" * 600}]))
