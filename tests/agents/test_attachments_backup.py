"""``roost backup`` and ``roost restore`` keep the attachments' files
(``DATA_DIR/attachments``): a restored attachment row whose file was not carried answered
404 "content missing" on download."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
from sqlalchemy import select

from roost.agents import attachments, mail
from roost.agents.models import Attachment
from roost.config import Settings
from roost.db.engine import Database
from tests.agents.conftest import Headers
from tests.agents.test_mail import address, make_persona, message
from tests.agents.test_mail_threads_and_downloads import deliver
from tests.support.cli import run_roost
from tests.support.pg import PgTestServer, unique_db_name
from tests.support.places import encrypted_backup

PASSPHRASE = "correct horse battery staple"


async def test_a_backup_holds_the_attachments_and_a_restore_puts_them_back(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    test_settings: Settings, pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    owner, headers = user
    persona = await make_persona(database, owner, address())
    to = str(persona.email_address)
    msg = message(to, message_id=f"<{uuid.uuid4().hex}@example.org>")
    msg.add_attachment(b"%PDF-1.4 the quarterly figures", maintype="application",
                       subtype="pdf", filename="q3.pdf")
    [got] = await deliver(database, mail.MailConfig.from_settings(test_settings), msg, [to])
    async with database.transaction() as session:
        stored = (await session.scalars(select(Attachment).where(
            Attachment.email_id == got.email_id))).one()
    out = tmp_path / "backup"
    manifest = await encrypted_backup(pg_server, db_name, test_settings.data_dir, out,
                                      PASSPHRASE)
    assert "attachments.tar.enc" in manifest["files"], sorted(manifest["files"])

    target_db = unique_db_name("attrestore")
    await pg_server.create_database(target_db)
    target = tmp_path / "restored"
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(target_db), "ROOST_DATA_DIR": str(target),
           "ROOST_BACKUP_PASSPHRASE": PASSPHRASE}
    try:
        done = await asyncio.to_thread(run_roost, "restore", str(out), env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        restored = attachments.open_path(target, stored)  # 404 "content missing" before
        assert restored.read_bytes() == b"%PDF-1.4 the quarterly figures"
        # A target holding attachment files is not empty; --force sets them aside.
        again = await asyncio.to_thread(run_roost, "restore", str(out), env=env, timeout=300)
        assert again.returncode != 0 and "holds attachment files" in again.stderr, again.stderr
        forced = await asyncio.to_thread(run_roost, "restore", "--force", str(out), env=env,
                                         timeout=300)
        assert forced.returncode == 0, forced.stderr
        assert [p.name for p in target.iterdir() if p.name.startswith("attachments.replaced-")]
        assert attachments.open_path(target, stored).read_bytes().startswith(b"%PDF-1.4")
        assert not [p for p in target.iterdir() if p.name.startswith(".attachments-restoring-")]
    finally:
        await pg_server.drop_database(target_db)
    downloaded = await client.get(f"/api/v1/attachments/{stored.id}/content", headers=headers)
    assert downloaded.status_code == 200  # the source install is untouched
