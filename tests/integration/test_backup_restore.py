"""``chatgate-admin backup`` while users chat, and ``restore`` into a new place: the
restored store has the users and the history as they were at the backup, a
restore is refused while a node runs on the store, and bad files get one line."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server, async_test, login, logout
from tests.integration.test_history import mam


def bodies(page) -> list[str]:
    return [m.xml.findtext(".//{jabber:client}body") for m in page.results]


@async_test(timeout=120)
async def test_a_backup_taken_while_users_chat_restores_the_same_history(tmp_path: Path):
    (tmp_path / "live").mkdir()
    live = Server(tmp_path / "live")
    provision(live)
    live.start()
    try:
        alice = await login(live, "alice@example.com/desk", PASSWORD)
        bob = await login(live, "bob@example.com/desk", PASSWORD)
        for n in range(20):
            alice.send_message(mto="bob@example.com", mbody=f"before {n}", mtype="chat")
            await bob.next_message()
        backup = tmp_path / "chatgate-backup.sqlite"
        # chat goes on during the backup
        for n in range(5):
            bob.send_message(mto="alice@example.com", mbody=f"during {n}", mtype="chat")
        made = live.admin("backup", str(backup))
        assert "backed up" in made.stdout
        assert stat.S_IMODE(os.stat(backup).st_mode) == 0o600
        for _ in range(5):
            await alice.next_message()
        at_backup = bodies(await mam(bob, with_jid="alice@example.com"))
        users_at_backup = live.admin("user", "list", "example.com").stdout
        assert "alice@example.com" in users_at_backup and "bob@example.com" in users_at_backup
        again = live.admin("backup", str(backup), check=False)
        assert again.returncode == 1 and "exists" in again.stderr
        refused = live.admin("restore", str(backup), check=False)
        assert refused.returncode == 1 and "running" in refused.stderr
        await logout(alice, bob)
    finally:
        live.stop()

    (tmp_path / "restored").mkdir()
    restored = Server(tmp_path / "restored")
    done = restored.admin("restore", str(backup))
    assert "restored" in done.stdout
    assert restored.admin("user", "list", "example.com").stdout == users_at_backup
    restored.start()
    try:
        bob = await login(restored, "bob@example.com/desk", PASSWORD)
        history = bodies(await mam(bob, with_jid="alice@example.com"))
        assert [b for b in history if b.startswith("before")] == [f"before {n}" for n in range(20)]
        assert set(history) <= set(at_backup)  # what was committed by then; nothing made up
        await logout(bob)
    finally:
        restored.stop()

    not_a_store = tmp_path / "notes.txt"
    not_a_store.write_text("hello")
    bad = restored.admin("restore", str(not_a_store), check=False)
    assert bad.returncode == 1 and "not a chatgate store" in bad.stderr
    missing = restored.admin("restore", str(tmp_path / "nothing.sqlite"), check=False)
    assert missing.returncode == 1 and "no such file" in missing.stderr
