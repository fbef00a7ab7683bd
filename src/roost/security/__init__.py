"""Pure security primitives (no database): encryption at rest, passwords, tokens, TOTP.

* :mod:`roost.security.crypto` -- ``MessageCipher`` (Fernet, chat messages) and
  ``SecretBox`` (AES-256-GCM with key ids and associated data, secrets at rest).
* :mod:`roost.security.passwords` -- argon2id hashing, bcrypt verification for
  imported accounts, password policy.
* :mod:`roost.security.tokens` -- API keys, refresh tokens, JWT access tokens.
* :mod:`roost.security.totp` -- TOTP verification with replay protection, backup codes.
* :mod:`roost.security.webauthn_helpers` -- passkey ceremonies mapped to Roost errors.

Import from the submodules; this package deliberately re-exports nothing so that
importing one primitive does not load the others' dependencies.
"""
