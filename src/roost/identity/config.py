"""What the identity services need from settings and key material, in one value."""

from __future__ import annotations

from dataclasses import dataclass

from roost.config import Settings
from roost.keyfiles import KeyMaterial
from roost.security.crypto import SecretBox
from roost.security.webauthn_helpers import RelyingParty
from roost.system_settings import declare

_DEFAULT_RP = RelyingParty("localhost", "Roost", ("http://localhost:8000",))
# Runtime override (roost settings set open_registration true): read at every sign-up.
OPEN_REGISTRATION = declare("open_registration")


@dataclass(frozen=True)
class IdentityConfig:
    jwt_secret: str
    box: SecretBox
    access_ttl_s: int = 900
    refresh_ttl_s: int = 30 * 86_400
    open_registration: bool = False
    max_failures_per_account: int = 5
    max_failures_per_ip: int = 20
    failure_window_s: int = 900
    lockout_s: int = 900
    rp: RelyingParty = _DEFAULT_RP
    app_role: str = "roost_app"

    def __repr__(self) -> str:  # never print keys
        return "IdentityConfig(<redacted>)"

    @classmethod
    def build(cls, settings: Settings, keys: KeyMaterial) -> IdentityConfig:
        origins = tuple(o.strip() for o in settings.webauthn_origins.split(",") if o.strip())
        return cls(
            jwt_secret=keys.secret_key,
            box=SecretBox.from_keys(keys.secrets_key),
            access_ttl_s=settings.access_token_ttl_s,
            refresh_ttl_s=settings.refresh_token_ttl_s,
            open_registration=settings.open_registration,
            max_failures_per_account=settings.login_max_failures_per_account,
            max_failures_per_ip=settings.login_max_failures_per_ip,
            failure_window_s=settings.login_failure_window_s,
            lockout_s=settings.login_lockout_s,
            rp=RelyingParty(settings.webauthn_rp_id, settings.webauthn_rp_name, origins),
            app_role=settings.db_app_role,
        )
