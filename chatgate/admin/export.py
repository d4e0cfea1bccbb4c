"""``chatgate-admin export``: a user's or a whole domain's data, streamed to a file.

Two formats:

- ``xep0227``: one XEP-0227 document (``<server-data xmlns='urn:xmpp:pie:0'>``)
  another server (or :mod:`chatgate.admin.import_pie`) can import. Per user: the
  SCRAM keys as ``<scram-credentials xmlns='urn:xmpp:pie:0#scram'>`` (chatgate
  keeps no password, so none is written), the roster (chatgate's roster is the
  domain: every other user, subscription both), the stored vCard, the private
  XML kept under the well-known XEP-0049 keys (:data:`PRIVATE_KEYS`; the directory
  cannot list the others), the offline messages and the archive as XEP-0313
  results in ``<archive xmlns='urn:xmpp:pie:0#mam'>``, as Prosody writes them.
- ``transcript``: one UTF-8 text file, a heading per conversation (an owner and a
  contact, sorted by owner, then contact) and one line per message,
  ``[YYYY-MM-DD HH:MM:SS] Name: text`` in UTC
  (line breaks in a message shown as `` ↵ ``). In a domain export a conversation
  between two of its users is written once, from the archive of the first by address.

The archive is read a page at a time (:data:`PAGE`) and written as it is read,
so a domain of millions of messages never sits in memory. The file is written
beside its final name with mode 0600 and renamed into place once complete.
The offline store can only be taken and put back (``IOfflineStore`` has no
read): a user logging in during the export gets their waiting messages at the
next login instead.
"""

from __future__ import annotations

import argparse
import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import IO

from chatgate.admin import operations as ops
from chatgate.admin.operations import AdminError
from chatgate.config import Settings
from chatgate.features.mam import readable
from chatgate.storage import Stores
from chatgate.storage.archive import is_message
from chatgate.storage.interfaces import (
    ArchivedMessage,
    ArchiveError,
    ArchiveQuery,
    IDirectory,
    UnknownDomain,
    User,
)
from chatgate.xml import StreamError, escape_attribute, parse_fragment, serialize

PIE_NS = "urn:xmpp:pie:0"
SCRAM_NS = "urn:xmpp:pie:0#scram"
PIE_MAM_NS = "urn:xmpp:pie:0#mam"
MAM_NS = "urn:xmpp:mam:2"
FORWARD_NS = "urn:xmpp:forward:0"
DELAY_NS = "urn:xmpp:delay"

#: archived messages read per query
PAGE = 500

#: XEP-0049 keys exported ({namespace}name), the ones clients use
PRIVATE_KEYS = (
    "{storage:bookmarks}storage",
    "{storage:rosternotes}storage",
    "{storage:metacontacts}storage",
    "{roster:delimiter}roster",
    "{storage:imprefs}storage",
    "{urn:xmpp:bookmarks-conversion:0}storage",
)

FORMATS = ("xep0227", "transcript")


class ExportError(AdminError):
    """The export cannot be made; the message is one line."""


def add_commands(topics: argparse._SubParsersAction) -> None:
    """``export user JID`` and ``export domain DOMAIN``, each with --format and --out."""
    actions = topics.add_parser("export", help="a user's or a domain's data to a file (XEP-0227 or transcript)")
    kinds = actions.add_subparsers(dest="action", required=True)
    for kind, metavar, text in (("user", "JID", "one user"), ("domain", "DOMAIN", "every user of a domain")):
        command = kinds.add_parser(kind, help=f"export {text}")
        command.add_argument("jid" if kind == "user" else "domain", metavar=metavar)
        command.add_argument("--format", choices=FORMATS, required=True, dest="fmt",
                             help="xep0227: one XEP-0227 XML file; transcript: readable text, UTC")
        command.add_argument("--out", required=True, metavar="FILE", help="the file to write (mode 0600)")
        command.set_defaults(prepare=_prepare)


def _prepare(args: argparse.Namespace, settings: Settings) -> Callable[[IDirectory], Awaitable[None]]:
    if args.action == "user":
        localpart, domain = ops.address(args.jid)
    else:
        localpart, domain = None, ops.domain_name(args.domain)
    out = os.path.abspath(args.out)
    if not os.path.isdir(os.path.dirname(out)):
        raise ExportError(f"cannot write {args.out}: no such folder")

    async def job(directory: IDirectory) -> None:
        from chatgate.admin.cli import _close_history, _open_history  # the same stores user remove opens

        history = await _open_history(settings, directory)
        try:
            print(await export(directory, history, domain, localpart, args.fmt, out))
        except ArchiveError as e:
            raise ExportError(f"cannot read the archive: {e}") from None
        finally:
            await _close_history(history)

    return job


async def export(directory: IDirectory, history: Stores, domain: str, localpart: str | None, fmt: str,
                 out: str) -> str:
    """Write *domain*'s users (only *localpart* when given) to *out* in *fmt*; a one-line summary."""
    try:
        users = await directory.users(domain)
    except UnknownDomain:
        raise ExportError(f"unknown domain: {domain}") from None
    chosen = users if localpart is None else [u for u in users if u.localpart == localpart]
    if not chosen:
        raise ExportError(f"unknown user: {localpart}@{domain}")
    partial = f"{out}.partial"
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)
    except OSError as e:
        raise ExportError(f"cannot write {out}: {e.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            if fmt == "xep0227":
                count = await _pie(directory, history, domain, users, chosen, f)
            else:
                count = await _transcript(history, users, chosen, localpart is None, f)
        os.replace(partial, out)
    except OSError as e:
        _discard(partial)
        raise ExportError(f"cannot write {out}: {e.strerror}") from None
    except BaseException:
        _discard(partial)
        raise
    who = f"{localpart}@{domain}" if localpart else f"{len(chosen)} user{'' if len(chosen) == 1 else 's'} of {domain}"
    return f"exported {who}, {count} message{'' if count == 1 else 's'}, to {out}"


def _discard(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


async def archive_of(history: Stores, owner: str, contact: str | None = None) -> AsyncIterator[ArchivedMessage]:
    """The owner's archive (with *contact* only, when given), oldest first, a page at a time."""
    after: str | None = None
    while True:
        page = await history.archive.query(owner, ArchiveQuery(contact=contact, after=after, max=PAGE))
        for message in page.messages:
            yield message
        if page.complete or not page.messages:
            return
        after = page.messages[-1].id


def utc(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


# -- XEP-0227


def _stamp(at: float) -> str:
    """XEP-0082 DateTime, whole seconds unless the time has a fraction."""
    moment = utc(at)
    return moment.strftime("%Y-%m-%dT%H:%M:%S" + (".%fZ" if moment.microsecond else "Z"))


#: the largest stored element read back (a vCard with a photo, private XML, a message)
MAX_KEPT = 16 * 1024 * 1024


def _kept(xml: str) -> str:
    """A stored element read back through the restricted parser and written by the one
    serializer, so a row a store holds can never break the document; "" (left out) when
    it does not read back as one element. Archived messages go through MAM's own
    ``readable`` instead, which rebuilds one from its fields."""
    try:
        return serialize(parse_fragment(xml, MAX_KEPT))
    except StreamError:
        return ""


def _attr(name: str, value: str) -> str:
    return f" {name}='{escape_attribute(value)}'"


async def _pie(directory: IDirectory, history: Stores, domain: str, users: list[User], chosen: list[User],
               f: IO[str]) -> int:
    count = 0
    f.write(f"<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='{PIE_NS}'>\n")
    f.write(f"<host{_attr('jid', domain)}>\n")
    for user in chosen:
        f.write(f"<user{_attr('name', user.localpart)}>\n")
        for mechanism, keys in sorted((await directory.credentials(domain, user.localpart) or {}).items()):
            f.write(f"<scram-credentials xmlns='{SCRAM_NS}'{_attr('mechanism', mechanism)}>"
                    f"<iter-count>{keys.iterations}</iter-count>"
                    f"<salt>{base64.b64encode(keys.salt).decode()}</salt>"
                    f"<server-key>{base64.b64encode(keys.server_key).decode()}</server-key>"
                    f"<stored-key>{base64.b64encode(keys.stored_key).decode()}</stored-key>"
                    "</scram-credentials>\n")
        f.write("<query xmlns='jabber:iq:roster'>")
        for other in users:
            if other.localpart != user.localpart:
                f.write(f"<item{_attr('jid', other.jid)}{_attr('name', other.display_name)}"
                        " subscription='both'/>")
        f.write("</query>\n")
        vcard = await directory.vcard(domain, user.localpart)
        if vcard and (vcard := _kept(vcard)):
            f.write(vcard + "\n")
        private = [_kept(xml) for key in PRIVATE_KEYS
                   if (xml := await directory.private_xml(domain, user.localpart, key))]
        if private:
            f.write("<query xmlns='jabber:iq:private'>" + "".join(private) + "</query>\n")
        offline = await history.offline.pop(user.jid)
        try:
            if offline:
                f.write("<offline-messages>")
                for waiting in offline:
                    f.write(_with_delay(waiting.stanza, waiting.at))
                f.write("</offline-messages>\n")
        finally:
            for waiting in offline:  # put back, oldest first
                await history.offline.push(user.jid, waiting, None)
        f.write(f"<archive xmlns='{PIE_MAM_NS}'>\n")
        async for message in archive_of(history, user.jid):
            forwarded = serialize(readable(message, MAX_KEPT))  # as MAM gives it: read back, or rebuilt
            f.write(f"<result xmlns='{MAM_NS}'{_attr('id', message.id)}><forwarded xmlns='{FORWARD_NS}'>"
                    f"<delay xmlns='{DELAY_NS}'{_attr('stamp', _stamp(message.at))}/>{forwarded}"
                    "</forwarded></result>\n")
            count += 1
        f.write("</archive>\n</user>\n")
    f.write("</host>\n</server-data>\n")
    return count


def _with_delay(stanza: str, at: float) -> str:
    """An offline message with its XEP-0203 delay (when the server took it) as the last child."""
    close = "</message>"
    stanza = _kept(stanza)
    if not stanza.endswith(close):
        return stanza
    return f"{stanza[:-len(close)]}<delay xmlns='{DELAY_NS}'{_attr('stamp', _stamp(at))}/>{close}"


# -- transcripts


def line(at: float, name: str, text: str) -> str:
    """``[YYYY-MM-DD HH:MM:SS] Name: text``, UTC, the message on one line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\n", " ↵ ")
    return f"[{utc(at).strftime('%Y-%m-%d %H:%M:%S')}] {name}: {text}\n"


async def _transcript(history: Stores, users: list[User], chosen: list[User], whole_domain: bool,
                      f: IO[str]) -> int:
    names = {user.jid: user.display_name for user in users}
    count = 0
    for user in chosen:
        for contact in sorted(await history.archive.contacts(user.jid), key=lambda c: c.contact):
            other = contact.contact
            if whole_domain and other in names and other < user.jid:
                continue  # written from the other user's archive
            heading = f"{user.jid} with {other}"
            wrote_heading = False
            async for message in archive_of(history, user.jid, other):
                if not is_message(message):
                    continue  # receipts and markers
                if not wrote_heading:
                    f.write(f"\n== {heading} ==\n\n" if count else f"== {heading} ==\n\n")
                    wrote_heading = True
                speaker = user.jid if message.outgoing else other
                f.write(line(message.at, names.get(speaker, speaker), message.body))
                count += 1
    return count
