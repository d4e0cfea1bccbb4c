"""What every archive backend shares: archive ids, RSM paging, conversations.

Archive ids (XEP-0359 stanza-ids, XEP-0313 archive UIDs) are
``<14 hex digits: microseconds since the epoch>-<10 random hex digits>``. They
sort like the times they were made, so every backend orders an archive by id
alone (XEP-0313 §3.1), turns a time filter into an id range (``start`` is
"ids >= the time's prefix"), and Redis pages through a sorted set by lexical
range. The random part makes them unpredictable (XEP-0313 §3, XEP-0359 §4);
the time part tells no more than the <delay/> stamp MAM sends with each
message anyway.

Paging follows XEP-0059 §2: a result set is the filtered archive in id order;
``after``/``before``/``index`` choose a page of at most ``max`` items; the
answer carries the set's ``count``, the page's first index and whether the
page reaches the end in its direction (XEP-0313 <fin complete/>).
:func:`paginate` does it over a sorted list (the memory backend, ``ids``
queries); SQLite and Redis do the same with their indexes, and one interface
test suite holds all three to the same answers.

A conversation (the webmail's view: one contact, split at silences longer
than a gap) is paged too: :func:`conversation_page` reads it through
``IArchive.between``, one bounded read by the contact's index per page, with
archive ids for cursors, so appends never move a page. Only its newest page
has to find where the conversation ends: it walks forward from the first
message :data:`WALK_STEP` messages a read, keeping no more than the page.

Receipts, markers and corrections are archived entries too, and one rule
here says what they are to a conversation, for every backend and for the
history the webmail shows (``web/history.py``):

- a XEP-0184 receipt or XEP-0333 marker has an empty body (:func:`is_message`
  is false): never counted, previewed, split on or started with; :func:`fold`
  turns it into the state of the message it names;
- a XEP-0308 correction is a message whose ``<replace id/>`` names an earlier
  message of the same sender (:func:`replaced_id`): :func:`fold` gives that
  message its latest text, so the correction is not counted and the preview
  shows the latest text. One naming a message its sender did not send (a
  forgery, or an original too far back) stays a message of its own.
"""

from __future__ import annotations

import bisect
import html
import re
import secrets
import unicodedata
from collections import deque
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from twisted.internet.defer import Deferred
from twisted.words.xish import domish

from chatgate.stanza import CORRECT_NS, MARKERS_NS, acknowledgement
from chatgate.storage.interfaces import (
    ArchivedMessage,
    ArchivePage,
    ArchiveQuery,
    BadCursor,
    Conversation,
    ConversationPage,
    HistorySearch,
    UnknownMessage,
)
from chatgate.xml import StreamError, parse_document

#: characters of a conversation's preview
PREVIEW_LENGTH = 100
#: messages read per step while grouping conversations
SCAN_PAGE = 200
#: messages read per step while walking a conversation to its end (its newest page)
WALK_STEP = 500

_ID = re.compile(r"^[0-9a-f]{14}-[0-9a-f]{10}$")


def micros(at: float) -> int:
    """POSIX seconds as whole microseconds (the archive's resolution)."""
    return round(at * 1_000_000)


#: above every archive id (they are lowercase hex): ``id < ERASE_ALL`` is every message
ERASE_ALL = "~"


#: words a search uses at most
MAX_TERMS = 16


def _folded(text: str) -> str:
    """Lowercase without accents: how both sides of a search compare."""
    return "".join(c for c in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(c))


def search_terms(text: str) -> list[str]:
    """The words of a full-text search (XEP-0431), folded; ValueError for none or too many."""
    terms = re.findall(r"\w+", _folded(text))
    if not terms:
        raise ValueError("the search has no word to look for")
    if len(terms) > MAX_TERMS:
        raise ValueError(f"a search takes at most {MAX_TERMS} words")
    return terms


def search_words(body: str) -> str:
    """*body*'s words, folded, one space apart: what PostgreSQL's full-text index is made of, so that
    its words are the ones :func:`text_matches` sees."""
    return " ".join(re.findall(r"\w+", _folded(body)))


def text_matches(body: str, terms: list[str]) -> bool:
    """Whether each term starts a word of *body* (what the SQLite and PostgreSQL indexes answer too)."""
    words = re.findall(r"\w+", _folded(body))
    return all(any(word.startswith(term) for word in words) for term in terms)


def swept(owner: str, domain: str | None, spare: Collection[str]) -> bool:
    """Whether a retention sweep of *domain* (None: every domain) takes *owner*'s old messages."""
    return (domain is None or owner.endswith("@" + domain)) and owner not in spare


#: the most hits on one page of an administrator's search
MAX_SEARCH_PAGE = 500


def check_search(search: HistorySearch) -> list[str] | None:
    """The words of an administrator's search (None: it has none); ValueError, with a one-line
    message, for a search no backend answers."""
    if not search.hosts:
        raise ValueError("name the domain whose history to search")
    if not 1 <= search.max <= MAX_SEARCH_PAGE:
        raise ValueError(f"a page holds 1 to {MAX_SEARCH_PAGE} hits")
    if search.before is not None:
        search_position(search.before)
    if search.text is None:
        if search.owner is None:
            raise ValueError("give words to search for, or the user whose history to read")
        return None
    return search_terms(search.text)


def search_cursor(message: ArchivedMessage) -> str:
    """The cursor of the page after *message* in a search's order (newest first, then by owner)."""
    return f"{message.id}/{message.owner}"


def search_position(cursor: str) -> tuple[str, str]:
    """(id, owner) of a cursor made by :func:`search_cursor`; ValueError for anything else."""
    archive_id, _, owner = cursor.partition("/")
    try:
        time_of(archive_id)
    except ValueError:
        raise ValueError("not a cursor of this search") from None
    if "@" not in owner:
        raise ValueError("not a cursor of this search")
    return archive_id, owner


def in_hosts(jid: str, hosts: Collection[str]) -> bool:
    """Whether the bare JID *jid* is of one of *hosts*."""
    return jid.rpartition("@")[2] in hosts


def search_hit(message: ArchivedMessage, search: HistorySearch) -> bool:
    """Whether *message* answers *search* (its filters and cursor; not which copy is shown)."""
    if not message.body or not in_hosts(message.owner, search.hosts):
        return False
    if search.owner is not None and message.owner != search.owner:
        return False
    if search.before is not None and (message.id, message.owner) >= search_position(search.before):
        return False
    return matches(message, ArchiveQuery(contact=search.contact, start=search.start, end=search.end,
                                         text=search.text))


def same_moment(one: str, other: str) -> bool:
    """Whether two archive ids were made together (:meth:`ArchiveIds.twin`: one message's copies)."""
    return one[:14] == other[:14]


def id_floor(at: float) -> str:
    """The lowest possible id made at or after *at*: ``id >= id_floor(t)`` means "at or after t"."""
    return f"{max(micros(at), 0):014x}"


def id_ceiling(at: float) -> str:
    """``id < id_ceiling(t)`` means "at or before t" (the end of a range is inclusive)."""
    return f"{max(micros(at) + 1, 0):014x}"


def time_of(archive_id: str) -> float:
    """When the id was made (POSIX seconds); ValueError for something that is not an archive id."""
    if not _ID.match(archive_id):
        raise ValueError(f"not an archive id: {archive_id!r}")
    return int(archive_id[:14], 16) / 1_000_000


class _RandomHex:
    """Random hex from the OS's CSPRNG, drawn 4 KiB at a time: one getrandom()
    call per message cost more than the rest of making its archive entry."""

    def __init__(self) -> None:
        self._pool = b""
        self._used = 0

    def hex(self, nbytes: int) -> str:
        if self._used + nbytes > len(self._pool):
            self._pool, self._used = secrets.token_bytes(4096), 0
        start, self._used = self._used, self._used + nbytes
        return self._pool[start:self._used].hex()


_random = _RandomHex()


class ArchiveIds:
    """Makes archive ids, strictly increasing within this process even when
    the clock stands still or steps back."""

    def __init__(self) -> None:
        self._last = 0

    def make(self, now: float) -> tuple[str, float]:
        """A new id and the time it stands for (*now*, or just after the last id's)."""
        stamp = max(micros(now), self._last + 1)
        self._last = stamp
        return f"{stamp:014x}-{_random.hex(5)}", stamp / 1_000_000

    @staticmethod
    def twin(archive_id: str) -> str:
        """Another id for the same moment, for another archive (both parties'
        copies of one message keep the same time)."""
        return f"{archive_id[:14]}-{_random.hex(5)}"


def check_query(query: ArchiveQuery) -> None:
    """ValueError for a query no backend can answer (the protocol layer checks first)."""
    if query.max < 0:
        raise ValueError("max must not be negative")
    if sum(x is not None for x in (query.after, query.before, query.index)) > 1:
        raise ValueError("after, before and index exclude each other")
    if query.index is not None and query.index < 0:
        raise ValueError("index must not be negative")
    if query.resource is not None and query.contact is None:
        raise ValueError("a resource needs a contact")
    if query.text is not None:
        search_terms(query.text)


def named_ids(query: ArchiveQuery) -> list[str]:
    """Every id the query names; each has to be in the archive."""
    named = [x for x in (query.after_id, query.before_id, query.after, query.before) if x]
    return named + list(query.ids or ())


def matches(message: ArchivedMessage, query: ArchiveQuery) -> bool:
    """Whether *message* is in the query's result set (its filters, not its page)."""
    if query.contact is not None and message.contact != query.contact:
        return False
    if query.resource is not None and message.resource != query.resource:
        return False
    if query.start is not None and message.id < id_floor(query.start):
        return False
    if query.end is not None and message.id >= id_ceiling(query.end):
        return False
    if query.after_id is not None and message.id <= query.after_id:
        return False
    if query.before_id is not None and message.id >= query.before_id:
        return False
    if query.ids is not None and message.id not in query.ids:
        return False
    return query.text is None or text_matches(message.body, search_terms(query.text))


def paginate(result_set: Sequence[ArchivedMessage], query: ArchiveQuery) -> ArchivePage:
    """The RSM page of *result_set* (sorted by id, already filtered) that *query* asks for."""
    ids = [m.id for m in result_set]
    count = len(ids)
    if query.before is not None:
        end = bisect.bisect_left(ids, query.before) if query.before else count
        begin = max(0, end - query.max)
        complete = begin == 0
    else:
        if query.after is not None:
            begin = bisect.bisect_right(ids, query.after)
        else:
            begin = min(query.index or 0, count)
        end = min(count, begin + query.max)
        complete = end == count
    page = list(result_set[begin:end])
    return ArchivePage(page, count, begin if page else None, complete)


def is_message(message: ArchivedMessage) -> bool:
    """A message someone wrote, not a XEP-0184 receipt or XEP-0333 marker:
    those are archived with an empty body (their XML says what they are), so
    conversations never count, preview or split on them."""
    return message.body != ""


# Stored XML is chatgate's serializer's: '<' is escaped in text and attribute values, and ' and > in
# attribute values, so these are only ever found as the markup they look like.
_REPLACE = f"<replace xmlns='{CORRECT_NS}'"
_MESSAGE_ID = re.compile(r"<message\b[^>]*?\sid='([^']*)'")


def client_id(message: ArchivedMessage) -> str | None:
    """The ``id`` the sending client gave the stored message (what receipts,
    markers and corrections name), read from its opening tag without parsing."""
    match = _MESSAGE_ID.match(message.stanza)
    return html.unescape(match.group(1)) if match else None


def stanza_of(message: ArchivedMessage) -> domish.Element | None:
    """The stored stanza parsed back, None if it cannot be."""
    data = message.stanza.encode("utf-8")
    try:
        return parse_document(data, len(data) + 1)
    except StreamError:
        return None


def replaced_id(message: ArchivedMessage) -> str | None:
    """For a XEP-0308 correction, the id its ``<replace/>`` names; None for
    anything else (parsed only when its text has a <replace/>)."""
    if _REPLACE not in message.stanza:
        return None
    stanza = stanza_of(message)
    replace = next(stanza.elements(CORRECT_NS, "replace"), None) if stanza is not None else None
    return (replace.getAttribute("id") or None) if replace is not None else None


_STATES = {"sent": 0, "delivered": 1, "read": 2}


@dataclass
class Shown:
    """One message as history shows it: its latest text and what became of it."""

    message: ArchivedMessage
    body: str
    edited: bool = False
    #: for an outgoing message: sent, delivered (a receipt or a received marker) or read
    state: str = "sent"


def fold(entries: Sequence[ArchivedMessage]) -> list[Shown]:
    """The messages of *entries* (oldest first) with the receipts, markers and
    corrections among them applied, each only by the party that may: a receipt
    (XEP-0184 §7) or marker (XEP-0333 §6) by the message's recipient, a
    correction (XEP-0308 §4) by its sender. A receipt is about the message it
    names; a marker about every message up to and including it (§6). A
    correction of a correction corrects the original, and a receipt of a
    correction is one of the original; a correction takes the original back
    to ``sent`` (its new text is yet to be delivered and read), as the pane does."""
    shown: list[Shown] = []
    #: (sent by the owner?, the client's message id) -> the message it is, or corrects
    by_id: dict[tuple[bool, str], Shown] = {}
    place: dict[int, int] = {}  # id(a view) -> its place in *shown*
    for entry in entries:
        if not is_message(entry):
            stanza = stanza_of(entry)
            ack = acknowledgement(stanza) if stanza is not None else None
            target = by_id.get((not entry.outgoing, ack[1])) if ack else None
            if ack is None or target is None:
                continue
            marker = target.message.outgoing and next(stanza.elements(MARKERS_NS), None) is not None
            for view in shown[: place[id(target)] + 1] if marker else [target]:
                if view.message.outgoing == target.message.outgoing and _STATES[ack[0]] > _STATES[view.state]:
                    view.state = ack[0]
            continue
        own, replaces = client_id(entry), replaced_id(entry)
        original = by_id.get((entry.outgoing, replaces)) if replaces else None
        if original is not None:
            # the new text has been neither delivered nor read yet: what acknowledges it comes after
            original.body, original.edited, original.state = entry.body, True, "sent"
            if own:
                by_id[(entry.outgoing, own)] = original
            continue
        view = Shown(entry, entry.body)
        place[id(view)] = len(shown)
        shown.append(view)
        if own:
            by_id[(entry.outgoing, own)] = view
    return shown


def preview(body: str) -> str:
    """The start of a body on one line."""
    text = " ".join(body.split())
    return text if len(text) <= PREVIEW_LENGTH else text[: PREVIEW_LENGTH - 1] + "…"


def _summary(messages: list[ArchivedMessage]) -> Conversation:
    """A conversation from its messages, oldest first: corrections folded onto
    what they correct (searched for only when there is one)."""
    first, last = messages[0], messages[-1]
    if not any(_REPLACE in m.stanza for m in messages):
        return Conversation(first.id, first.contact, first.at, last.at, len(messages), preview(first.body))
    shown = fold(messages)
    return Conversation(first.id, first.contact, first.at, last.at, len(shown), preview(shown[0].body))


QueryFunction = Callable[[str, ArchiveQuery], "Deferred[ArchivePage]"]


async def conversations(
    query: QueryFunction, owner: str, contact: str, gap: float, before: str | None, limit: int
) -> list[Conversation]:
    """Walk the archive backwards from *before* (a conversation id) or the
    newest message, splitting at silences longer than *gap* seconds."""
    found: list[Conversation] = []
    current: list[ArchivedMessage] = []  # newest first
    cursor = before or ""
    while len(found) < limit:
        page = await query(owner, ArchiveQuery(contact=contact, before=cursor, max=SCAN_PAGE))
        for message in reversed(page.messages):
            if not is_message(message):
                continue
            if current and current[-1].at - message.at > gap:
                found.append(_summary(current[::-1]))
                current = []
                if len(found) == limit:
                    return found
            current.append(message)
        if page.complete or not page.messages:
            break
        cursor = page.messages[0].id
    if current and len(found) < limit:
        found.append(_summary(current[::-1]))
    return found


BetweenFunction = Callable[..., "Deferred[list[ArchivedMessage]]"]


async def conversation_page(
    query: QueryFunction, between: BetweenFunction, owner: str, conversation_id: str, gap: float,
    before: str | None = None, after: str | None = None, limit: int = 20,
) -> ConversationPage:
    """IArchive.conversation over the backend's *query* and *between*: each
    read is bounded by *limit* (the newest page's walk by :data:`WALK_STEP`)."""
    if before is not None and after is not None:
        raise ValueError("before and after exclude each other")
    if limit < 1:
        raise ValueError("limit must be positive")
    first = (await query(owner, ArchiveQuery(ids=(conversation_id,), max=1))).messages[0]
    cursor_id = after if after is not None else before
    if cursor_id is None:
        return await _newest_page(between, owner, first, gap, limit)
    try:
        cursor = (await query(owner, ArchiveQuery(ids=(cursor_id,), max=1))).messages[0]
    except UnknownMessage:
        raise BadCursor(f"{cursor_id}: no message of this conversation") from None
    if cursor.contact != first.contact or cursor.id < first.id:
        raise BadCursor(f"{cursor_id}: no message of this conversation")
    if after is not None:
        run, last = [cursor], cursor.at
        for message in await between(owner, first.contact, after=cursor.id, limit=limit + 1):
            if is_message(message):
                if message.at - last > gap:
                    break
                last = message.at
            run.append(message)
        return ConversationPage(first.contact, first.at, run[1:limit + 1], True, len(run) > limit + 1)
    found = await between(owner, first.contact, after=first.id, before=cursor.id, limit=limit + 1, newest=True)
    if len(found) <= limit and cursor.id > first.id:
        found.insert(0, first)
    if any(b.at - a.at > gap for a, b in pairwise([m for m in found if is_message(m)] + [cursor])):
        raise BadCursor(f"{cursor_id}: no message of this conversation")
    return ConversationPage(first.contact, first.at, found[-limit:], len(found) > limit, True)


async def _newest_page(
    between: BetweenFunction, owner: str, first: ArchivedMessage, gap: float, limit: int
) -> ConversationPage:
    """The conversation's last *limit* messages and its size: walk it from *first* to the first silence
    longer than *gap*, keeping only the last page in memory."""
    page: deque[ArchivedMessage] = deque([first], maxlen=limit)
    # messages as fold() shows them (no receipt, no correction of a message of this conversation),
    # the last one's time, entries read
    count, last, read = 1, first.at, 1
    ids = {(first.outgoing, client_id(first))}  # what a correction may name: as fold() keys them
    while True:
        step = await between(owner, first.contact, after=page[-1].id, limit=WALK_STEP)
        for message in step:
            if is_message(message):
                if message.at - last > gap:
                    return ConversationPage(first.contact, first.at, list(page), read > len(page), False, count)
                last = message.at
                replaces = replaced_id(message)
                if replaces is None or (message.outgoing, replaces) not in ids:
                    count += 1
                ids.add((message.outgoing, client_id(message)))
            page.append(message)
            read += 1
        if len(step) < WALK_STEP:
            return ConversationPage(first.contact, first.at, list(page), read > len(page), False, count)


class ConversationsMixin:
    """IArchive.conversations and .conversation for a backend that has ``query`` and ``between``."""

    query: Any
    between: Any

    def conversations(
        self, owner: str, contact: str, gap: float, before: str | None = None, limit: int = 20
    ) -> Deferred[list[Conversation]]:
        return Deferred.fromCoroutine(conversations(self.query, owner, contact, gap, before, limit))

    def conversation(
        self, owner: str, conversation_id: str, gap: float, before: str | None = None, after: str | None = None,
        limit: int = 20,
    ) -> Deferred[ConversationPage]:
        return Deferred.fromCoroutine(
            conversation_page(self.query, self.between, owner, conversation_id, gap, before, after, limit))


def unknown(archive_id: str) -> UnknownMessage:
    return UnknownMessage(f"no message {archive_id} in the archive")
