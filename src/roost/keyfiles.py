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

KEY_DIR_NAME = "keys"


@dataclass(frozen=True)
class KeyMaterial:
    secret_key: str  # HMAC key for JWT access tokens
    message_keys: tuple[str, ...]  # Fernet keys, first encrypts, all decrypt
    secrets_key: bytes  # 32 bytes for AES-256-GCM
    admin_token: str  # bootstrap operator token

    def __repr__(self) -> str:  # never leak keys through a debug print
        return "KeyMaterial(<redacted>)"


def _read_or_create(path: Path, make: str) -> str:
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise PermissionError(
                f"{path} is readable by group or others (mode {mode:o}); run: chmod 600 {path}"
            )
        return path.read_text(encoding="utf-8").strip()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it first: use theirs
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(make + "\n")
    return make


def _fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def load_keys(settings: Settings) -> KeyMaterial:
    """Keys from settings when given, else from ``DATA_DIR/keys/*`` (created on first run)."""
    key_dir = settings.data_dir / KEY_DIR_NAME

    def pick(value: object, name: str, make: str) -> str:
        secret = getattr(value, "get_secret_value", None)
        if secret is not None:
            return str(secret())
        return _read_or_create(key_dir / name, make)

    secret_key = pick(settings.secret_key, "secret_key", secrets.token_urlsafe(48))
    message_raw = pick(settings.message_keys, "message_keys", _fernet_key())
    secrets_raw = pick(
        settings.secrets_key, "secrets_key", base64.b64encode(secrets.token_bytes(32)).decode()
    )
    admin_token = pick(settings.admin_token, "admin_token", "rst_admin_" + secrets.token_urlsafe(32))

    message_keys = tuple(k.strip() for k in message_raw.split(",") if k.strip())
    if not message_keys:
        raise ValueError("ROOST_MESSAGE_KEYS is empty: give at least one Fernet key")
    try:
        secrets_key = base64.b64decode(secrets_raw, validate=True)
    except ValueError as exc:
        raise ValueError("ROOST_SECRETS_KEY is not valid base64") from exc
    if len(secrets_key) != 32:
        raise ValueError("ROOST_SECRETS_KEY must decode to exactly 32 bytes (AES-256)")
    return KeyMaterial(secret_key, message_keys, secrets_key, admin_token)
