"""argon2id hashing, bcrypt compatibility, rehash decisions and the password policy."""

from __future__ import annotations

import unicodedata

import bcrypt
import pytest
from argon2 import PasswordHasher

from roost.errors import Unprocessable
from roost.security import passwords
from roost.security.passwords import (
    MAX_PASSWORD_LENGTH,
    PasswordCheck,
    check_password,
    check_password_policy,
    dummy_verify,
    hash_password,
    is_bcrypt_hash,
    needs_rehash,
    verify_password,
)

GOOD = "violet harbour kettle 73"


def test_hash_is_argon2id_with_owasp_parameters() -> None:
    stored = hash_password(GOOD)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert GOOD not in stored
    assert hash_password(GOOD) != stored  # salted


def test_verify_argon2() -> None:
    stored = hash_password(GOOD)
    assert verify_password(stored, GOOD)
    assert not verify_password(stored, GOOD + "x")
    assert not verify_password(stored, "")
    assert not needs_rehash(stored)


@pytest.mark.parametrize("variant", [b"$2a$", b"$2b$", b"$2y$"])
def test_bcrypt_hashes_from_imported_accounts_verify(variant: bytes) -> None:
    stored = bcrypt.hashpw(b"legacy password", bcrypt.gensalt(rounds=4))
    stored = variant + stored[4:]
    text = stored.decode()
    assert is_bcrypt_hash(text)
    assert verify_password(text, "legacy password")
    assert not verify_password(text, "legacy passwor")
    assert needs_rehash(text)


def test_bcrypt_verification_matches_legacy_72_byte_truncation() -> None:
    # bcrypt>=5 refuses long input; legacy systems hashed only the first 72 bytes.
    long_password = "x" * 72
    stored = bcrypt.hashpw(long_password.encode(), bcrypt.gensalt(rounds=4)).decode()
    assert verify_password(stored, long_password + "ignored tail")


def test_outdated_argon2_parameters_need_rehash() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(GOOD)
    assert verify_password(weak, GOOD)  # still logs in ...
    assert needs_rehash(weak)  # ... and gets upgraded


@pytest.mark.parametrize("stored", ["", "plaintext", "$argon2id$broken", "$2b$04$short", "$1$md5"])
def test_unknown_or_malformed_hashes_never_verify(stored: str) -> None:
    assert not verify_password(stored, "anything")
    assert needs_rehash(stored)


def test_overlong_password_is_refused_without_hashing() -> None:
    stored = hash_password(GOOD)
    assert not verify_password(stored, "a" * (MAX_PASSWORD_LENGTH + 1))


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The stored hashes argon2 is asked to verify against, in order (a spy on the hasher)."""
    calls: list[str] = []
    real = passwords._hasher

    class Spy:
        def hash(self, password: str) -> str:
            return real.hash(password)

        def verify(self, stored: str, password: str) -> bool:
            calls.append(stored)
            return real.verify(stored, password)

    monkeypatch.setattr(passwords, "_hasher", Spy())
    return calls


def test_dummy_verify_burns_a_real_argon2_verification(verifications: list[str]) -> None:
    calls = verifications
    dummy_verify()
    dummy_verify()
    assert len(calls) == 2
    assert calls[0].startswith("$argon2id$v=19$m=19456,t=2,p=1$")


COMPOSED = unicodedata.normalize("NFC", "crème brûlée kettle 73")
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)


def test_unicode_spellings_of_one_password_are_one_password() -> None:
    assert COMPOSED != DECOMPOSED
    for typed in (COMPOSED, DECOMPOSED):
        stored = hash_password(typed)
        assert check_password(stored, COMPOSED) == PasswordCheck(True)
        assert check_password(stored, DECOMPOSED) == PasswordCheck(True)
    # NFKC: compatibility forms too (a fullwidth capital A is an "A").
    assert verify_password(hash_password("\uff21lpine kettle 73"), "Alpine kettle 73")


def test_a_hash_of_the_password_as_typed_verifies_and_asks_for_a_rehash() -> None:
    old = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1).hash(DECOMPOSED)
    assert check_password(old, DECOMPOSED) == PasswordCheck(True, rehash=True)
    assert not check_password(old, "violet harbour kettle 74").ok
    legacy = bcrypt.hashpw(DECOMPOSED.encode(), bcrypt.gensalt(rounds=4)).decode()
    assert check_password(legacy, DECOMPOSED).ok


def test_a_wrong_password_and_an_unknown_name_cost_the_same(verifications: list[str]) -> None:
    """Two verifications for text whose normalised form differs (both forms are tried),
    one otherwise: dummy_verify spends exactly what check_password does."""
    calls = verifications
    stored = hash_password(GOOD)
    for typed in (DECOMPOSED, "violet harbour kettle 74"):
        calls.clear()
        assert not check_password(stored, typed).ok
        spent = len(calls)
        calls.clear()
        dummy_verify(typed)
        assert len(calls) == spent == (2 if typed == DECOMPOSED else 1)


# --- policy -----------------------------------------------------------------------------


def _rule(password: str, **kwargs: object) -> str:
    with pytest.raises(Unprocessable) as info:
        check_password_policy(password, **kwargs)  # type: ignore[arg-type]
    assert info.value.status == 422
    assert password not in info.value.detail  # never echo the password
    rule = info.value.extra["rule"]
    assert info.value.extra["field"] == "password"
    assert isinstance(rule, str)
    return rule


@pytest.mark.parametrize(
    "password",
    [
        GOOD,
        "correct-horse-staple-orbit",
        "Tr0ub4dor&3-x9Lq",
        "ünïcödé pässwörd ñ",
        "a" * 5 + "bcdefghij" + "Z" * 10,
    ],
)
def test_acceptable_passwords_pass(password: str) -> None:
    check_password_policy(password, username="alice", email="alice@example.org")


def test_too_short() -> None:
    assert _rule("Sh0rt!pw") == "min_length"
    check_password_policy("eight ch", min_length=8)  # the floor is configurable
    with pytest.raises(Unprocessable, match="at least 16 characters"):
        check_password_policy(GOOD[:15], min_length=16)


def test_too_long() -> None:
    assert _rule("x" * 1025) == "max_length"
    check_password_policy("plumb kettle " * 78 + "a")  # 1015 characters is fine


def test_containing_username_or_email() -> None:
    assert _rule("marguerite-rocks-2024", username="Marguerite") == "contains_username"
    assert _rule("its me jdoe99 again!", email="JDoe99@example.com") == "contains_email"
    assert _rule("jdoe99@example.com", email="jdoe99@example.com") == "contains_email"
    # two-letter names are too short to block on
    check_password_policy(GOOD, username="vi")


@pytest.mark.parametrize(
    "password",
    [
        "password1234",
        "Password1234!",
        "P@ssw0rd2024!",
        "qwerty123456",
        "iloveyou2024!!",
        "correcthorsebatterystaple",
        "Correct Horse Battery Staple",
        "2024!!letmein!!",
        "administrator",
    ],
)
def test_common_passwords_are_rejected(password: str) -> None:
    assert _rule(password) == "common"


@pytest.mark.parametrize(
    "password", ["abcdefghijklm", "123456789012", "0987654321098", "zyxwvutsrqpo", "asdfghjkl;'z"]
)
def test_sequences_are_rejected(password: str) -> None:
    assert _rule(password) in {"sequence", "common"}


def test_repetitive_passwords_are_rejected() -> None:
    assert _rule("aaaaaaaaaaaaaaaa") == "repetitive"
    assert _rule("abababababababab") in {"repetitive", "sequence"}
    assert _rule("xyzzxyzzxyzzxyzz") == "repetitive"


def test_a_name_typed_in_fullwidth_letters_is_found_in_the_password() -> None:
    """The password is judged in its NFKC form, and so are the names it must not hold: an
    e-mail whose local part is "moonbeam" typed in fullwidth letters (stored as typed)
    refuses "moonbeam-Quartz-river-7", as the ASCII address does (it was accepted)."""
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in "moonbeam")
    assert _rule("moonbeam-Quartz-river-7", email=f"{fullwidth}@example.test") == "contains_email"
    assert _rule("ﬁnch-Quartz-river-7", username="finch") == "contains_username"  # a ligature
    assert _rule("finch-Quartz-river-7", username="ﬁnch") == "contains_username"
