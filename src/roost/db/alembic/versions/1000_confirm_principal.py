"""confirm_principal: ``roost_confirm_principal(...)``, which checks in the database that a
credential a server process has resolved before still resolves to the same principal
(live credential, active user, same admin flag, groups and rate-limit overrides), records
its use when the last record is older than a minute, and raises SQLSTATE 28000 when
anything differs.  roost.identity.resolver sends it with the request's ``BEGIN`` and
scope, in one round trip, instead of looking the credential up in a statement of its own.

Revision ID: 1000
Revises: 0990
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1000"
down_revision: str | Sequence[str] | None = "0990"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

def upgrade() -> None:
    # The conditions are those of the resolver's lookup statement (_principal_sql), kept
    # here as this revision wrote them: a migration is history and calls no shared code.
    op.execute("""
CREATE FUNCTION roost_confirm_principal(
  p_kind text, p_credential text, p_user_id uuid, p_is_admin boolean, p_group_ids text,
  p_user_rpm integer, p_user_streams integer, p_key_rpm integer, p_key_streams integer
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  credential_id uuid;
  stale boolean;
BEGIN
  IF p_kind = 'api_key' THEN
    SELECT c.id, (c.last_used_at IS NULL OR c.last_used_at < now() - interval '60 seconds')
      INTO credential_id, stale
    FROM api_keys c JOIN users u ON u.id = c.user_id
    WHERE c.key_hash = p_credential AND (c.expires_at IS NULL OR c.expires_at > now())
      AND c.revoked_at IS NULL AND u.status = 'active' AND u.is_active
      AND u.id = p_user_id AND (u.role = 'admin' OR u.is_superuser OR u.is_root) = p_is_admin
      AND u.rate_limit_rpm IS NOT DISTINCT FROM p_user_rpm
      AND u.rate_limit_streams IS NOT DISTINCT FROM p_user_streams
      AND c.rate_limit_rpm IS NOT DISTINCT FROM p_key_rpm
      AND c.rate_limit_streams IS NOT DISTINCT FROM p_key_streams;
  ELSIF p_kind = 'session' THEN
    SELECT c.id, (c.last_used_at IS NULL OR c.last_used_at < now() - interval '60 seconds')
      INTO credential_id, stale
    FROM sessions c JOIN users u ON u.id = c.user_id
    WHERE c.id = p_credential::uuid AND c.user_id = p_user_id AND c.expires_at > now()
      AND c.revoked_at IS NULL AND u.status = 'active' AND u.is_active
      AND (u.role = 'admin' OR u.is_superuser OR u.is_root) = p_is_admin
      AND u.rate_limit_rpm IS NOT DISTINCT FROM p_user_rpm
      AND u.rate_limit_streams IS NOT DISTINCT FROM p_user_streams
      AND p_key_rpm IS NULL AND p_key_streams IS NULL;
  END IF;
  IF credential_id IS NULL
     OR (SELECT coalesce(array_agg(m.group_id ORDER BY m.group_id), '{}')
         FROM user_group_memberships m WHERE m.user_id = p_user_id)
        IS DISTINCT FROM
        (SELECT coalesce(array_agg(g ORDER BY g), '{}')
         FROM unnest(string_to_array(p_group_ids, ',')::uuid[]) g) THEN
    RAISE EXCEPTION 'the credential no longer resolves to the principal remembered for it'
      USING ERRCODE = 'invalid_authorization_specification';
  END IF;
  IF stale THEN  -- at most once a minute per credential; a concurrent toucher wins
    IF p_kind = 'api_key' THEN
      UPDATE api_keys SET last_used_at = now()
      WHERE id = (SELECT id FROM api_keys WHERE id = credential_id FOR UPDATE SKIP LOCKED);
    ELSE
      UPDATE sessions SET last_used_at = now()
      WHERE id = (SELECT id FROM sessions WHERE id = credential_id FOR UPDATE SKIP LOCKED);
    END IF;
  END IF;
END $$;
""")


def downgrade() -> None:
    op.execute("DROP FUNCTION roost_confirm_principal(text, text, uuid, boolean, text, integer, "
               "integer, integer, integer)")
