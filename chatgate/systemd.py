"""Telling systemd how the service is (sd_notify(3)): ``Type=notify`` units.

systemd names a datagram socket in ``$NOTIFY_SOCKET`` (a path, or ``@name``
in the abstract namespace); the service sends ``READY=1`` once it takes users
and ``STOPPING=1`` when a stop begins. Without the variable nothing is sent.
A failure to send is logged once and never stops the service.
"""

from __future__ import annotations

import os
import socket

from twisted.logger import Logger

log = Logger()


def notify(state: str) -> bool:
    """Send *state* (``READY=1``, ``STOPPING=1``) to systemd if it listens; whether it was sent."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode("utf-8"))
    except OSError as e:
        log.warn("could not tell systemd {state}: {error}", state=state, error=e)
        return False
    return True
