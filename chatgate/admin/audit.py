"""The audit trail of administration: one log event for each change.

Every change made through the admin API (:mod:`chatgate.web.admin_api`) or
``chatgate-admin`` (:mod:`chatgate.admin.cli`), once it has succeeded, is one
twisted.logger event in the namespace ``chatgate.audit``::

    admin-change operation=user.passwd target=alice@example.com caller=127.0.0.1 via=api

Its fields: ``audit`` (always :data:`EVENT`, the event's stable name),
``operation`` (``<topic>.<action>`` in chatgate-admin's words: domain.add,
domain.enable, domain.disable, user.add, user.passwd, user.remove,
user.import, alias.add, alias.remove, site.add, site.show, site.hide,
site.remove, token.mint; the API's ``PUT /api/sites/<host>`` is site.put;
and history.search, not a change but a reading of people's messages),
``target`` (the address, domain or host changed; for ``user.import`` the CSV
file), ``caller`` (the API caller's client address; for chatgate-admin the
operating-system user) and ``via`` (``api`` or ``cli``). Nothing else is
logged: never a password, a login token or the admin key.

The admin API's events go to the server's log. chatgate-admin cannot reach
that log: it appends its events to :data:`CLI_LOG` in the database's folder
(``var/admin-audit.log`` by default; created 0600), and changes nothing when
it cannot write there.
"""

from __future__ import annotations

import os
import pwd

from twisted.logger import Logger, textFileLogObserver

from chatgate.admin import operations as ops
from chatgate.admin.operations import AdminError
from chatgate.private_files import ensure_private_file

#: the stable name of the event, its ``audit`` field and the first word of its line
EVENT = "admin-change"
#: chatgate-admin's audit log, in the database's folder
CLI_LOG = "admin-audit.log"

log = Logger(namespace="chatgate.audit")


def record(operation: str, target: str, caller: str, via: str, logger: Logger = log) -> None:
    """Log one change: *operation* on *target* by *caller*, made *via* the API or the CLI."""
    logger.info(
        EVENT + " operation={operation} target={target} caller={caller} via={via}",
        audit=EVENT, event=EVENT, operation=operation, target=_printable(target), caller=_printable(caller), via=via,
    )


def target(text: str) -> str:
    """The address or host name *text* as a change stores it (as given if it does not parse)."""
    try:
        if "@" in text:
            return "@".join(ops.address(text))
        return ops.domain_name(text)
    except AdminError:
        return text


def file_logger(path: str) -> Logger:
    """A logger of audit events that appends them to *path* (created 0600 if missing).

    @raise OSError: the file cannot be created or opened.
    """
    ensure_private_file(path)
    return Logger(namespace=log.namespace, observer=textFileLogObserver(open(path, "a", encoding="utf-8")))


def os_user() -> str:
    """The operating-system user running this process (and who used sudo to become root)."""
    uid = os.getuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = f"uid {uid}"
    sudo = os.environ.get("SUDO_USER") if uid == 0 else None
    return f"{name} (sudo from {sudo})" if sudo else name


def _printable(text: str) -> str:
    """*text*, or its escaped form when it holds a line break or another control character."""
    return text if text.isprintable() else ascii(text)
