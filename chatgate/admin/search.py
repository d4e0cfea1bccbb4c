"""An administrator's search through a domain's history: ``chatgate-admin history search``
and the admin API's ``GET /api/domains/<domain>/history``.

It reads the archives of every user of the domain and of its team rooms
(``<[muc] subdomain>.<domain>``) through :meth:`IArchive.search`: the messages
with every word given (each a word's start, in any case, accents aside: the
rule of the users' own XEP-0431 searches), newest first, each message once
(the sender's copy; a room's message as the room keeps it). ``--user`` reads
one archive (with or without words), ``--with`` keeps the messages with one
party, ``--since``/``--until`` a span of time. A page ends with a cursor for
the next. Every search is in the audit trail (``history.search``), with the
domain or user searched: reading people's messages is an act to account for.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from chatgate.admin import operations as ops
from chatgate.admin.operations import AdminError
from chatgate.config import Settings
from chatgate.stanza import stamp
from chatgate.storage.interfaces import (
    ArchivedMessage,
    ArchiveError,
    HistoryHits,
    HistorySearch,
    IArchive,
    IDirectory,
)

#: hits on a page when none is asked for
DEFAULT_PAGE = 50


def add_commands(topics: argparse._SubParsersAction) -> None:
    """``history search DOMAIN [WORDS...]`` with its filters."""
    actions = topics.add_parser("history", help="search a domain's history (users' chats and team rooms)")
    command = actions.add_subparsers(dest="action", required=True).add_parser(
        "search", help="messages with every word, newest first, each once (audited)")
    command.add_argument("domain", metavar="DOMAIN")
    command.add_argument("words", metavar="WORD", nargs="*", help="each a word's start, any case, accents aside")
    command.add_argument("--user", metavar="JID", help="only this user's (or room's) archive; words optional")
    command.add_argument("--with", dest="contact", metavar="JID", help="only messages with this party")
    command.add_argument("--since", metavar="TIME", help="from this time on (ISO 8601, UTC unless given)")
    command.add_argument("--until", metavar="TIME", help="up to this time (a date: to its end)")
    command.add_argument("--max", type=int, default=DEFAULT_PAGE, metavar="N", help=f"hits (default {DEFAULT_PAGE})")
    command.add_argument("--before", metavar="CURSOR", help="the next page: the cursor the last one ended with")
    command.add_argument("--json", action="store_true", help="one JSON object: hits and the next cursor")
    command.set_defaults(prepare=_prepare)


def parse_time(text: str, field: str, end: bool = False) -> float:
    """POSIX seconds of an ISO 8601 *text* (UTC when it names no zone); a date alone is its
    first moment, or with *end* its last. AdminError naming *field* otherwise."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise AdminError(f"{field} is not a time: {text!r} (ISO 8601, such as 2026-12-01 or"
                         " 2026-12-01T09:30:00Z)", field) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if end and len(text.strip()) == 10:  # a date: all of it
        when += timedelta(days=1, microseconds=-1)
    return when.timestamp()


async def search(archive: IArchive, directory: IDirectory, settings: Settings, domain: str, *,
                 text: str | None = None, user: str | None = None, contact: str | None = None,
                 start: float | None = None, end: float | None = None, before: str | None = None,
                 max: int = DEFAULT_PAGE) -> HistoryHits:
    """One page of a search through *domain*'s history (see the module); AdminError for a
    search that cannot be made, ArchiveError (SearchUnavailable) from the archive."""
    name = ops.domain_name(domain)
    if name not in {d.name for d in await directory.domains()}:
        raise AdminError(f"no domain {name}", "domain", 404)
    hosts = (name, f"{settings.muc.subdomain}.{name}")
    owner = _party(user, "user") if user else None
    if owner is not None and owner.rpartition("@")[2] not in hosts:
        raise AdminError(f"{owner} is not of {name} nor of its rooms", "user")
    if isinstance(max, bool) or not isinstance(max, int):
        raise AdminError("max must be a whole number", "max")
    query = HistorySearch(hosts, text=text.strip() if text and text.strip() else None, owner=owner,
                          contact=_party(contact, "with") if contact else None, start=start, end=end,
                          before=before or None, max=max)
    try:
        return await archive.search(query)
    except ValueError as e:
        raise AdminError(str(e), None) from None


def _party(text: str, field: str) -> str:
    """A bare JID of a user or a room, as the archive keeps it."""
    try:
        return "@".join(ops.address(text, field))
    except AdminError:
        raise AdminError(f"{field} is not an address: {text!r}", field) from None


def hit(message: ArchivedMessage) -> dict[str, Any]:
    """A hit as the API and ``--json`` show it: whose archive, who wrote to whom, when, what."""
    if message.owner == message.contact and not message.outgoing:  # a room's, by the occupant's nickname
        sender, recipient = f"{message.contact}/{message.resource}", message.owner
    elif message.outgoing:
        sender, recipient = message.owner, message.contact
    else:
        sender, recipient = message.contact, message.owner
    return {"id": message.id, "archive": message.owner, "from": sender, "to": recipient, "at": stamp(message.at),
            "body": message.body}


def page_json(hits: HistoryHits) -> dict[str, Any]:
    return {"messages": [hit(m) for m in hits.messages], "next": hits.next}


def line(found: dict[str, Any]) -> str:
    """One hit on one line: control characters (a newline, a terminal escape) shown escaped."""
    body = "".join(c if c.isprintable() else repr(c)[1:-1] for c in found["body"])
    return f"{found['at']}  {found['from']} -> {found['to']}  {body}"


def _prepare(args: argparse.Namespace, settings: Settings) -> Callable[[IDirectory], Awaitable[None]]:
    ops.domain_name(args.domain)
    start = parse_time(args.since, "since") if args.since else None
    end = parse_time(args.until, "until", end=True) if args.until else None
    if not args.words and not args.user:
        raise AdminError("give words to search for, or --user to read one archive", "words")

    async def job(directory: IDirectory) -> None:
        from chatgate.admin.cli import CommandError, _close_history, _open_history

        history = await _open_history(settings, directory)
        try:
            hits = await search(history.archive, directory, settings, args.domain, text=" ".join(args.words),
                                user=args.user, contact=args.contact, start=start, end=end, before=args.before,
                                max=args.max)
        except ArchiveError as e:
            raise CommandError(f"cannot search: {e}") from None
        finally:
            await _close_history(history)
        found = page_json(hits)
        if args.json:
            print(json.dumps(found, ensure_ascii=False))
            return
        for each in found["messages"]:
            print(line(each))
        if found["next"]:
            print(f"more: --before {found['next']}", file=sys.stderr)
        elif not found["messages"]:
            print("no messages found", file=sys.stderr)

    return job
