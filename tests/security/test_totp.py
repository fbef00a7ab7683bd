"""TOTP verification with replay protection, and backup codes."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from roost.security.totp import (
    BACKUP_CODE_ALPHABET,
    current_totp_step,
    generate_backup_codes,
    hash_backup_code,
    match_backup_code,
    new_totp_secret,
    normalize_backup_code,
    provisioning_uri,
    totp_code_at,
    verify_totp,
)

NOW = 1_750_000_015.0  # 15 s into a 30 s step
STEP = int(NOW // 30)


def test_secret_is_base32_160_bits() -> None:
    secret = new_totp_secret()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret)
    assert secret != new_totp_secret()


def test_provisioning_uri() -> None:
    secret = new_totp_secret()
    uri = provisioning_uri(secret, "alice@example.org")
    parsed = urlparse(uri)
    assert parsed.scheme == "otpauth" and parsed.netloc == "totp"
    query = parse_qs(parsed.query)
    assert query["secret"] == [secret]
    assert query["issuer"] == ["Roost"]
    assert "alice%40example.org" in parsed.path or "alice@example.org" in parsed.path
    assert parse_qs(urlparse(provisioning_uri(secret, "bob", issuer="Acme")).query)["issuer"] == [
        "Acme"
    ]


def test_codes_match_pyotp_and_rfc_steps() -> None:
    secret = new_totp_secret()
    assert current_totp_step(NOW) == STEP
    assert totp_code_at(secret, STEP) == pyotp.TOTP(secret).at(NOW)


def test_rfc6238_test_vector() -> None:
    # RFC 6238 appendix B, SHA-1 seed "12345678901234567890", T=59 -> 94287082 (8 digits);
    # the 6-digit code is its last six digits.
    secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
    assert verify_totp(secret, "287082", now=59, valid_window=0) == 1


def test_verify_accepts_current_code_and_returns_step() -> None:
    secret = new_totp_secret()
    assert verify_totp(secret, totp_code_at(secret, STEP), now=NOW) == STEP


def test_verify_accepts_spaces() -> None:
    secret = new_totp_secret()
    code = totp_code_at(secret, STEP)
    assert verify_totp(secret, f" {code[:3]} {code[3:]} ", now=NOW) == STEP


def test_clock_drift_window() -> None:
    secret = new_totp_secret()
    assert verify_totp(secret, totp_code_at(secret, STEP - 1), now=NOW) == STEP - 1
    assert verify_totp(secret, totp_code_at(secret, STEP + 1), now=NOW) == STEP + 1
    assert verify_totp(secret, totp_code_at(secret, STEP - 2), now=NOW) is None
    assert verify_totp(secret, totp_code_at(secret, STEP - 1), now=NOW, valid_window=0) is None
    assert verify_totp(secret, totp_code_at(secret, STEP - 2), now=NOW, valid_window=2) == STEP - 2


def test_replay_of_a_used_code_is_refused() -> None:
    secret = new_totp_secret()
    code = totp_code_at(secret, STEP)
    used = verify_totp(secret, code, now=NOW)
    assert used == STEP
    # same code again, same step or a few seconds later: refused
    assert verify_totp(secret, code, now=NOW, last_used_step=used) is None
    assert verify_totp(secret, code, now=NOW + 20, last_used_step=used) is None
    # an older code from inside the window is refused too
    older = totp_code_at(secret, STEP - 1)
    assert verify_totp(secret, older, now=NOW, last_used_step=used) is None
    # the next step's code is fine
    assert verify_totp(
        secret, totp_code_at(secret, STEP + 1), now=NOW + 30, last_used_step=used
    ) == (STEP + 1)


FULL_WIDTH_DIGITS = "\uff11\uff12\uff13\uff14\uff15\uff16"  # str.isdigit() is True for these


@pytest.mark.parametrize("code", ["", "12345", "1234567", "abcdef", FULL_WIDTH_DIGITS, "12 34 5"])
def test_malformed_codes_are_refused(code: str) -> None:
    assert verify_totp(new_totp_secret(), code, now=NOW) is None


def test_wrong_code_is_refused() -> None:
    secret = new_totp_secret()
    right = totp_code_at(secret, STEP)
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    window = {totp_code_at(secret, s) for s in (STEP - 1, STEP, STEP + 1)}
    if wrong not in window:
        assert verify_totp(secret, wrong, now=NOW) is None


def test_negative_window_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        verify_totp(new_totp_secret(), "123456", valid_window=-1)


# --- backup codes -----------------------------------------------------------------------


def test_backup_codes_shape() -> None:
    codes = generate_backup_codes()
    assert len(codes) == 10
    assert len(set(codes)) == 10
    for code in codes:
        assert re.fullmatch(rf"[{BACKUP_CODE_ALPHABET}]{{5}}-[{BACKUP_CODE_ALPHABET}]{{5}}", code)
    assert len(generate_backup_codes(3)) == 3
    with pytest.raises(ValueError):
        generate_backup_codes(0)


def test_backup_code_matching() -> None:
    codes = generate_backup_codes(5)
    hashes: list[str | None] = [hash_backup_code(c) for c in codes]
    assert match_backup_code(codes[3], hashes) == 3
    # people type them in many ways
    assert match_backup_code(codes[2].upper().replace("-", " "), hashes) == 2
    assert match_backup_code(f"  {codes[0].replace('-', '')}\n", hashes) == 0
    # a used code (entry cleared) no longer matches
    hashes[3] = None
    assert match_backup_code(codes[3], hashes) is None
    assert match_backup_code(generate_backup_codes(1)[0], hashes) is None
    assert match_backup_code("", hashes) is None
    assert match_backup_code(codes[0], []) is None


def test_backup_code_lookalikes_are_normalised() -> None:
    assert normalize_backup_code("IO1L0-abcde") == "10110abcde"
    code = "10110-abcde"
    assert match_backup_code("ioiLo-ABCDE", [hash_backup_code(code)]) == 0


def test_backup_code_hash_is_stable_and_not_the_code() -> None:
    code = generate_backup_codes(1)[0]
    digest = hash_backup_code(code)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest == hash_backup_code(code.upper())
    assert code.replace("-", "") not in digest
