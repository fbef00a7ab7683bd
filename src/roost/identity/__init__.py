"""Identity, access and tenancy: users, sessions, API keys, 2FA, passkeys, devices,
OAuth tokens, profiles, groups and row-level security.

Deliberately imports nothing: importing one module of the domain (``tenancy``, say)
must not pull in the rest.
"""
