"""Identity, access and tenancy: users, sessions, API keys, 2FA, passkeys, devices,
OAuth tokens, profiles, groups and row-level security.

Deliberately imports nothing: ``roost.http.auth`` imports ``roost.identity.tenancy``
and must not pull in the rest of the domain.
"""
