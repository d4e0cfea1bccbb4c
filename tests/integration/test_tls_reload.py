"""A renewed certificate is taken on SIGHUP, without dropping anyone."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal

from chatgate.tls import ensure_certificate
from tests.integration.conftest import PASSWORD
from tests.integration.harness import RawClient, async_test, login, logout


async def certificate_fingerprint(port: int) -> str:
    raw = await RawClient.connect(port)
    await raw.starttls()
    der = raw.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    raw.close()
    return hashlib.sha256(der).hexdigest()


@async_test()
async def test_sighup_reloads_the_certificate_and_keeps_sessions(server, tmp_path):
    alice = await login(server, "alice@example.com/tls", PASSWORD)
    bob = await login(server, "bob@example.com/tls", PASSWORD)
    before = await certificate_fingerprint(server.port)

    ensure_certificate(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), ["renewed.example.com"])
    os.replace(tmp_path / "key.pem", server.folder / "tls/key.pem")
    os.replace(tmp_path / "cert.pem", server.folder / "tls/cert.pem")
    server.process.send_signal(signal.SIGHUP)
    for _ in range(50):
        if "TLS certificate reloaded" in server.log_text():
            break
        await asyncio.sleep(0.1)

    after = await certificate_fingerprint(server.port)
    assert after != before
    alice.send_message(mto="bob@example.com/tls", mbody="still encrypted", mtype="chat")
    assert (await bob.next_message())["body"] == "still encrypted"

    # a broken file is refused with one line and the current certificate stays
    (server.folder / "tls/cert.pem").write_text("not a certificate")
    server.process.send_signal(signal.SIGHUP)
    for _ in range(50):
        if "TLS certificate not reloaded" in server.log_text():
            break
        await asyncio.sleep(0.1)
    assert "holds no PEM certificate" in server.log_text()
    assert await certificate_fingerprint(server.port) == after
    await logout(alice, bob)
