"""Key material Roost needs, from the environment or generated once into the data dir.

Generated files are created with mode 0600 via ``os.open`` (never world-readable, even
for an instant) and their contents are never printed or logged.
"""

from __future__ import annotations

import base64
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from roost.config import Settings
from roost.security.crypto import decode_aes_key, validate_fernet_key
from roost.security.tokens import MIN_JWT_SECRET_BYTES

KEY_DIR_NAME = "keys"
# The operator token has admin rights: an empty or truncated one would let anyone in.
MIN_ADMIN_TOKEN_CHARS = 32


class KeyConfigError(ValueError):
    """A key Roost cannot use (a setting, or a key file of the data dir): the message
    names the variable or the file, never the value; the CLI prints it as one line
    ("invalid configuration: ...", exit 2)."""


@dataclass(frozen=True)
class KeyMaterial:
    secret_key: str  # HMAC key for JWT access tokens
    message_keys: tuple[str, ...]  # Fernet keys, first encrypts, all decrypt
    secrets_key: bytes  # 32 bytes for AES-256-GCM
    admin_token: str  # bootstrap operator token

    def __repr__(self) -> str:  # never leak keys through a debug print
        return "KeyMaterial(<redacted>)"


class MissingKeyFile(KeyConfigError):
    """A key file :func:`load_keys` was told not to create (``create=False``) is missing."""


def _read_or_create(path: Path, make: str, *, create: bool = True) -> str:
    if path.parent.exists() and not path.parent.is_dir():  # (else a raw "[Errno 17]")
        raise KeyConfigError(f"{path.parent} is a file, not a directory")
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise KeyConfigError(
                f"{path} is readable by group or others (mode {mode:o}); run: chmod 600 {path}"
            )
        return _read_key(path)
    if not create:
        raise MissingKeyFile(f"{path} does not exist")
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return _read_key(path)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(make + "\n")
    return make


def _read_key(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError:  # a corrupted file: never a new key over it (data is lost)
        raise KeyConfigError(f"{path} is not a key (not UTF-8 text): restore it from a "
                             "backup") from None


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def load_keys(settings: Settings, *, create: bool = True) -> KeyMaterial:
    """Keys from settings when given, else from ``DATA_DIR/keys/*`` (created on first run;
    ``create=False``: a missing file is a :class:`MissingKeyFile`, for a check that must
    change nothing)."""
    key_dir = settings.data_dir / KEY_DIR_NAME

    def pick(value: object, name: str, make: str) -> tuple[str, str]:
        """The key and where it came from (for a message: the variable, or the file)."""
        secret = getattr(value, "get_secret_value", None)
        if secret is not None:
            return str(secret()), f"ROOST_{name.upper()}"
        return _read_or_create(key_dir / name, make, create=create), str(key_dir / name)

    # Checked here, at start: a bad key would otherwise fail later, in the middle of the
    # work (every sign-in a 500 with a short JWT secret, the app's start with a bad Fernet
    # key).
    secret_key, where = pick(settings.secret_key, "secret_key", secrets.token_urlsafe(48))
    if len(secret_key.encode("utf-8")) < MIN_JWT_SECRET_BYTES:
        raise KeyConfigError(f"{where} is too short: at least {MIN_JWT_SECRET_BYTES} bytes "
                             "(e.g. python -c \"import secrets; print(secrets.token_urlsafe(48))\")")
    message_raw, where = pick(settings.message_keys, "message_keys", _fernet_key())
    message_keys = tuple(k.strip() for k in message_raw.split(",") if k.strip())
    if not message_keys:
        raise KeyConfigError(f"{where} is empty: give at least one Fernet key")
    secrets_raw, secrets_where = pick(
        settings.secrets_key, "secrets_key", base64.b64encode(secrets.token_bytes(32)).decode()
    )
    admin_token, admin_where = pick(settings.admin_token, "admin_token",
                                    "rst_admin_" + secrets.token_urlsafe(32))
    if len(admin_token) < MIN_ADMIN_TOKEN_CHARS:
        raise KeyConfigError(f"{admin_where} is too short: at least {MIN_ADMIN_TOKEN_CHARS} "
                             "characters (e.g. python -c \"import secrets; "
                             "print('rst_admin_' + secrets.token_urlsafe(32))\")")
    try:
        for position, key in enumerate(message_keys, start=1):
            validate_fernet_key(key, position=position, setting=where)
        secrets_key = decode_aes_key(secrets_raw, setting=secrets_where)
    except ValueError as exc:
        raise KeyConfigError(str(exc)) from None
    return KeyMaterial(secret_key, message_keys, secrets_key, admin_token)
