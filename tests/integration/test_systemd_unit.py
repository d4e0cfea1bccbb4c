"""Installing chatgate as a system service: the unit systemd checks, and ``Type=notify``:
chatgate tells systemd READY=1 once it takes users and STOPPING=1 when a stop begins."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import REPO, Server, async_test, login, logout

UNIT = REPO / "contrib" / "systemd" / "chatgate.service"


def test_the_unit_passes_systemd_analyze_verify(tmp_path: Path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (no systemd)")
    text = UNIT.read_text()
    assert "Type=notify" in text and "NoNewPrivileges=yes" in text and "ProtectSystem=strict" in text
    assert "StateDirectoryMode=0700" in text and "User=chatgate" in text
    # the unit names /opt/chatgate; verify it against this checkout's twistd
    unit = tmp_path / "chatgate.service"
    unit.write_text(text.replace("/opt/chatgate/.venv/bin/twistd", str(REPO / ".venv" / "bin" / "twistd")))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "chatgate.service" not in result.stderr, result.stderr  # nothing said about the unit itself


@async_test(timeout=60)
async def test_chatgate_tells_systemd_when_it_is_ready_and_when_it_stops(tmp_path: Path):
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify.sock")
    listener.bind(path)
    listener.settimeout(20)
    (tmp_path / "node").mkdir()
    server = Server(tmp_path / "node")
    provision(server)
    os.environ["NOTIFY_SOCKET"] = path
    try:
        server.start()
    finally:
        del os.environ["NOTIFY_SOCKET"]
    try:
        assert listener.recv(256) == b"READY=1"
        client = await login(server, "alice@example.com/desk", PASSWORD)  # it takes users
        await logout(client)
        server.stop()
        assert listener.recv(256) == b"STOPPING=1"
    finally:
        server.stop()
        listener.close()
