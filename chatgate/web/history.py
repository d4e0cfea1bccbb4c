"""The webmail's history: a user's conversations as JSON on the web listener.

Four GET endpoints under :data:`PATH`, each answering for the authenticated
user's own archive only:

- ``contacts``: everyone the user has history with, most recent first::

    {"contacts": [{"jid": "bob@example.com", "name": "Bob Baker", "last": "2026-…Z"}]}

- ``conversations?with=<bare JID>[&before=<conversation id>][&limit=<1..100>]``:
  conversations with one contact, newest first — messages split wherever
  more than ``[archive] conversation_gap`` seconds passed — and whether older
  ones exist (ask again with ``before`` = the last id)::

    {"with": "bob@…", "conversations": [{"id": "…", "start": "…", "end": "…",
     "count": 12, "preview": "the first line…"}], "more": true}

- ``conversation?id=<conversation id>[&before=<message id>|&after=<message id>][&limit=<1..100>]``:
  one page of a conversation, oldest first: its newest ``limit`` entries,
  or those just before (after) the entry named — ask again with ``before``
  = ``first`` for earlier ones, ``after`` = ``last`` for later ones (XEP-0059
  style: archive ids for cursors, so appends never move a page; the ids of
  the page's first and last entries, which may be receipts or corrections
  not listed, so a page may list fewer than ``limit`` messages, even none);
  ``count`` (the conversation's messages) only on the newest page::

    {"id": "…", "with": "bob@…", "start": "…", "messages": [{"id": "…", "at": "…",
     "from": "bob@…", "outgoing": false, "body": "…", "edited": false}], "earlier": true,
     "later": false, "first": "…", "last": "…", "count": 240}

  Receipts (XEP-0184) and chat markers (XEP-0333) are archived as
  entries with an empty body; they are never listed or counted as messages
  but folded onto the message they name (by its ``id`` attribute): an
  outgoing message has ``"state"``: ``sent``, ``delivered`` (a receipt or a
  ``received`` marker) or ``read`` (``displayed``/``acknowledged``). A
  correction (XEP-0308: ``<replace id/>``) from the original message's
  sender gives that message its latest text and ``"edited": true``, and is
  not listed itself (on a page of its own, it is read with up to
  :data:`MAX_LIMIT` entries before the page and after it, so that what a
  page's first and last messages became is known); a correction naming a
  message its sender did not send changes nothing and is listed as the
  message it is. The rule is ``storage/archive.fold``: the conversations'
  counts and previews follow it too.

  A cursor that is no message of the conversation, or a limit out of range,
  is 400.

- ``search?q=<words>[&with=<bare JID>|&room=<room JID>][&before=<message id>][&limit=<1..100>]``:
  the user's messages with every word (each a word's start, in any case,
  accents aside: XEP-0431's rule), newest first, each with the conversation
  it is in (open it with ``conversation?id=``); ``more`` and ``last`` (the
  oldest listed: ask again with ``before`` = it). 501 where the archive cannot
  search (Redis)::

    {"q": "budget", "messages": [{"id": "…", "at": "…", "with": "bob@…", "from": "…",
     "outgoing": true, "body": "…", "conversation": "…"}], "more": false, "last": "…"}

A team room's history (its archive, open to its members): ``conversations``
and ``conversation`` with ``room=<room JID>`` instead of ``with``; each
message's ``from`` is ``room/nickname``, with ``"nick"``, and ``outgoing`` is
true for the user's own (the room names every sender's address in its
messages); corrections and receipts are not folded there (a room's
occupants may not edit one another's words). Someone not a member gets 403.

Times are XEP-0082 UTC stamps; message ids are the archive ids MAM uses.

Authentication, until the pane's own session token exists: HTTP Basic with
the user's address and password, checked exactly as an XMPP SASL PLAIN login
(the same throttling and decoy, the password hash computed on a thread, never
on the reactor). A wrong password or unknown user is 401, a disabled domain
403, too many failures 429. Serve it over HTTPS only (``[http] tls``, or a
TLS proxy in front): the password travels in every request.
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.web import resource, server
from twisted.words.protocols.jabber.jid import JID, InvalidFormat

from chatgate.auth.sasl import Authenticator, SASLFailure
from chatgate.config import Network
from chatgate.features.muc.model import USER_NS as MUC_USER_NS
from chatgate.mirror import DirectoryMirror
from chatgate.stanza import stamp
from chatgate.storage.archive import Shown, fold, is_message, time_of
from chatgate.storage.interfaces import (
    ArchivedMessage,
    ArchiveQuery,
    BadCursor,
    IArchive,
    SearchUnavailable,
    UnknownMessage,
)
from chatgate.transports.bosh import Peer, peer_of
from chatgate.web.site import Endpoint, Folder
from chatgate.xml import StreamError, parse_document

#: where the endpoints are mounted on the web listener
PATH = "/history"
MAX_LIMIT = 100
#: pages of 100 entries a search result's conversation start is looked for in, at most
SEARCH_WALK = 50
DEFAULT_LIMIT = 20

log = Logger()

Answer = dict[str, Any]
Handler = Callable[[str, dict[bytes, list[bytes]]], Awaitable[Answer]]


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def basic_credentials(request: server.Request) -> tuple[str, str]:
    """(user, password) of the request's HTTP Basic credentials (RFC 7617), or HTTPError 401."""
    header = request.getHeader(b"authorization") or b""
    scheme, _, token = header.partition(b" ")
    if scheme.lower() != b"basic":
        raise HTTPError(401, "authentication required")
    try:
        user, _, password = b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, ValueError):
        raise HTTPError(401, "malformed credentials") from None
    return user, password


_SASL_STATUS = {"temporary-auth-failure": 429, "account-disabled": 403}


def _refused(request: server.Request, peer: Peer, domain: str, condition: str) -> None:
    """Log a failed sign-in in the words of a failed XMPP login (chatgate.transports.stream),
    the client named as BOSH names it."""
    domain = domain[:255]  # the address a stranger typed: bounded, and escaped unless printable
    log.info("refused login to {domain} from {peer} ({transport}): {condition}",
             domain=domain if domain.isprintable() else ascii(domain), peer=peer.label,
             transport="http " + request.path.decode("ascii", "replace"), condition=condition,
             event="login-refused")


class HistoryAPI:
    """The three endpoints over one archive, authenticated by *authenticator*."""

    def __init__(self, authenticator: Authenticator, domains: DirectoryMirror, archive: IArchive,
                 gap: float, trusted_proxies: Sequence[Network],
                 may_read: Callable[[str, str], bool] = lambda reader, owner: reader == owner) -> None:
        self.authenticator = authenticator
        #: whether a user (bare JID) may read an archive (a room's: Router.may_read_archive)
        self.may_read = may_read
        self.domains = domains
        self.archive = archive
        self.gap = gap
        self.trusted_proxies = trusted_proxies

    def mount(self, root: Folder, origins: Sequence[str]) -> None:
        """Serve the endpoints below :data:`PATH` of *root*."""
        for name, handler in (("contacts", self.contacts), ("conversations", self.conversations),
                              ("conversation", self.conversation), ("search", self.search)):
            root.mount(f"{PATH}/{name}", Endpoint(_JSONResource(self, handler), origins))

    # -- authentication

    async def authenticate(self, request: server.Request) -> str:
        """The bare JID of the user the request's Basic credentials prove, or
        HTTPError; throttled by the client's address as BOSH sees it (:func:`peer_of`)."""
        user, password = basic_credentials(request)
        peer = peer_of(request, self.trusted_proxies)
        localpart, _, domain = user.rpartition("@")
        domain = domain.lower()
        if not localpart or not self.domains.is_hosted(domain):
            _refused(request, peer, domain, "not-authorized")
            raise HTTPError(401, "wrong address or password")
        exchange = self.authenticator.exchange("PLAIN", domain, True, True, peer.address)
        try:
            await exchange.step(f"\0{localpart}\0{password}".encode())
        except SASLFailure as failure:
            _refused(request, peer, domain, failure.condition)
            raise HTTPError(_SASL_STATUS.get(failure.condition, 401),
                            failure.text or "wrong address or password") from None
        return f"{exchange.localpart}@{domain}"

    # -- the endpoints

    async def contacts(self, owner: str, args: dict[bytes, list[bytes]]) -> Answer:
        domain = owner.partition("@")[2]
        found = []
        for contact in await self.archive.contacts(owner):
            localpart, _, host = contact.contact.rpartition("@")
            user = self.domains.user(host, localpart) if host == domain else None
            found.append({"jid": contact.contact, "name": user.display_name if user else contact.contact,
                          "last": stamp(contact.last_at)})
        return {"contacts": found}

    def _archive(self, user: str, args: dict[bytes, list[bytes]]) -> tuple[str, str | None]:
        """(the archive to read, the room it is or None): the user's own, or a room's with ``room=``."""
        room = _arg(args, "room")
        if not room:
            return user, None
        room = _bare(room)
        if not self.may_read(user, room):
            raise HTTPError(403, f"{room}: not a room you are a member of")
        return room, room

    async def conversations(self, owner: str, args: dict[bytes, list[bytes]]) -> Answer:
        owner, room = self._archive(owner, args)
        contact = room or _bare(_arg(args, "with", required=True))
        before = _arg(args, "before")
        limit = _limit(_arg(args, "limit"))
        try:
            found = await self.archive.conversations(owner, contact, self.gap, before or None, limit + 1)
        except UnknownMessage:
            raise HTTPError(404, f"no conversation {before}") from None
        return {
            "with": contact,
            "conversations": [{"id": c.id, "start": stamp(c.start), "end": stamp(c.end), "count": c.count,
                               "preview": c.preview} for c in found[:limit]],
            "more": len(found) > limit,
        }

    async def conversation(self, owner: str, args: dict[bytes, list[bytes]]) -> Answer:
        user = owner
        owner, room = self._archive(owner, args)
        conversation_id = _arg(args, "id", required=True)
        before, after = _cursor(args, "before"), _cursor(args, "after")
        if before and after:
            raise HTTPError(400, "before and after: give one of them")
        limit = _limit(_arg(args, "limit"))
        try:
            page = await self.archive.conversation(owner, conversation_id, self.gap, before, after, limit)
        except UnknownMessage:
            raise HTTPError(404, f"no conversation {conversation_id}") from None
        except BadCursor:
            name, value = ("before", before) if before else ("after", after)
            raise HTTPError(400, f"{name}: {value} is no message of this conversation") from None
        contact = page.contact
        entries = list(page.messages)
        if page.earlier and entries:
            # a correction on this page of a message on the one before is shown there, not here
            preceding = await self.archive.conversation(owner, conversation_id, self.gap, entries[0].id, None,
                                                        MAX_LIMIT)
            entries[:0] = preceding.messages
        if page.later and entries:
            # receipts and corrections of this page's last messages come after it
            following = await self.archive.conversation(owner, conversation_id, self.gap, None, entries[-1].id,
                                                        MAX_LIMIT)
            entries += following.messages
        shown = {m.id for m in page.messages}
        if room is not None:
            messages = [_room_message(m, room, user) for m in page.messages if is_message(m)]
        else:
            messages = [{"id": v.message.id, "at": stamp(v.message.at),
                         "from": owner if v.message.outgoing else contact, "outgoing": v.message.outgoing,
                         "body": v.body, "edited": v.edited, **({"state": v.state} if v.message.outgoing else {})}
                        for v in _shown(fold(entries), shown)]
        answer: Answer = {
            "id": conversation_id,
            "with": contact,
            "start": stamp(page.start),
            "messages": messages,
            "earlier": page.earlier,
            "later": page.later,
            # the cursors: the page's first and last entries, which may be receipts or corrections not listed
            "first": page.messages[0].id if page.messages else None,
            "last": page.messages[-1].id if page.messages else None,
        }
        if page.count is not None:
            answer["count"] = page.count
        return answer


    async def search(self, owner: str, args: dict[bytes, list[bytes]]) -> Answer:
        user = owner
        owner, room = self._archive(owner, args)
        text = _arg(args, "q", required=True)
        contact = room or (_bare(_arg(args, "with")) if _arg(args, "with") else None)
        before = _cursor(args, "before")
        limit = _limit(_arg(args, "limit"))
        query = ArchiveQuery(contact=contact if room is None else None, text=text, before=before or "", max=limit)
        try:
            page = await self.archive.query(owner, query)
        except SearchUnavailable as e:
            raise HTTPError(501, str(e)) from None
        except UnknownMessage:
            raise HTTPError(400, f"before: {before} is no message of yours") from None
        except ValueError as e:
            raise HTTPError(400, f"q: {e}") from None
        found = []
        #: contact -> the start of the conversation of the last hit with them (hits come newest first:
        #: an older hit at or after that start is in the same conversation, found without reading again)
        starts: dict[str, ArchivedMessage] = {}
        for message in reversed(page.messages):  # newest first
            shown = _room_message(message, room, user) if room is not None else {
                "id": message.id, "at": stamp(message.at), "with": message.contact,
                "from": owner if message.outgoing else message.contact, "outgoing": message.outgoing,
                "body": message.body}
            start = starts.get(message.contact)
            if start is None or message.id < start.id:
                start = starts[message.contact] = await self._conversation_of(owner, message)
            shown["conversation"] = start.id
            found.append(shown)
        return {"q": text, "messages": found, "more": bool(page.messages) and page.first_index > 0,
                "last": page.messages[0].id if page.messages else None}

    async def _conversation_of(self, owner: str, message: ArchivedMessage) -> ArchivedMessage:
        """The first message of the conversation *message* is in (back to the last silence longer
        than the gap), read back page by page, bounded."""
        start = message
        for _ in range(SEARCH_WALK):
            earlier = await self.archive.between(owner, message.contact, before=start.id, limit=100, newest=True)
            for candidate in reversed(earlier):
                if not is_message(candidate):
                    continue
                if start.at - candidate.at > self.gap:
                    return start
                start = candidate
            if len(earlier) < 100:
                break
        return start


def _room_message(message: ArchivedMessage, room: str, user: str) -> dict[str, Any]:
    """One message of a room's archive as the history lists it: its sender's nickname, and
    whether *user* sent it (the address the room put in it)."""
    sender = None
    try:
        stanza = parse_document(message.stanza.encode("utf-8"), len(message.stanza) + 1)
    except StreamError:
        stanza = None
    if stanza is not None:
        for x in stanza.elements(MUC_USER_NS, "x"):
            for item in x.elements(MUC_USER_NS, "item"):
                sender = item.getAttribute("jid")
    return {"id": message.id, "at": stamp(message.at), "from": f"{room}/{message.resource}",
            "nick": message.resource, "outgoing": sender == user, "body": message.body, "edited": False}


def _shown(views: list[Shown], ids: set[str]) -> list[Shown]:
    """The views of the page's own messages (:func:`fold` folded those around it in too)."""
    return [v for v in views if v.message.id in ids]


def _arg(args: dict[bytes, list[bytes]], name: str, required: bool = False) -> str:
    values = args.get(name.encode(), [])
    if not values or not values[0]:
        if required:
            raise HTTPError(400, f"{name}: missing")
        return ""
    try:
        return values[0].decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, f"{name}: not UTF-8") from None


def _cursor(args: dict[bytes, list[bytes]], name: str) -> str | None:
    """A paging cursor: an archive id, or None when not given."""
    value = _arg(args, name)
    if not value:
        return None
    try:
        time_of(value)
    except ValueError:
        raise HTTPError(400, f"{name}: not a message id") from None
    return value


def _bare(value: str) -> str:
    try:
        jid = JID(value)
    except InvalidFormat:
        raise HTTPError(400, f"with: not a JID: {value}") from None
    if jid.user is None or jid.resource:
        raise HTTPError(400, f"with: not a bare JID: {value}")
    return jid.userhost()


def _limit(value: str) -> int:
    if not value:
        return DEFAULT_LIMIT
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise HTTPError(400, f"limit: a whole number from 1 to {MAX_LIMIT}")
    return int(value)


class _JSONResource(resource.Resource):
    """One GET endpoint: authenticate, run the handler, answer JSON."""

    isLeaf = True
    allowedMethods = (b"GET",)

    def __init__(self, api: HistoryAPI, handler: Handler) -> None:
        super().__init__()
        self.api = api
        self.handler = handler

    def render_GET(self, request: server.Request) -> int:
        Deferred.fromCoroutine(self._answer(request))
        return server.NOT_DONE_YET

    async def _answer(self, request: server.Request) -> None:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))
        try:
            owner = await self.api.authenticate(request)
            status, body = 200, await self.handler(owner, request.args or {})
        except HTTPError as e:
            status, body = e.status, {"error": e.message}
            if e.status == 401:
                request.setHeader(b"www-authenticate", b'Basic realm="chatgate", charset="UTF-8"')
        except Exception:
            log.failure("history request {path}", path=request.path)
            status, body = 500, {"error": "internal error"}
        if gone:
            return
        request.setResponseCode(status)
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.write(json.dumps(body, ensure_ascii=False).encode("utf-8"))
        request.finish()
