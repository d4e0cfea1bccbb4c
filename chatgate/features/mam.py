"""Message Archive Management (XEP-0313, ``urn:xmpp:mam:2``) over the user's archive.

A user queries their own archive, at their bare JID (§3.3.1), and a room's
at the room's JID (§5.1.2: a service such as ``features/muc/`` says who may,
through ``Router.archive_readers``); anyone else's is <forbidden/>.
Filters come in a XEP-0004 data form (§4.1): ``with`` (bare
JID: every resource; full JID: that resource), ``start``/``end`` (XEP-0082,
inclusive), and the extended ``before-id``/``after-id``/``ids`` (§4.1.3, with
``<flip-page/>`` and ``<metadata/>``, hence ``urn:xmpp:mam:2#extended``), and
XEP-0431 full-text search, ``{urn:xmpp:fulltext:0}fulltext``: each word must
start a word of the body, in any case (offered where the archive backend keeps
an index of words: SQLite's FTS5; on Redis the field is not offered and a
query with it is <feature-not-implemented/>).
Paging is XEP-0059 RSM both ways (``after``, ``before``, empty ``before`` for
the last page, ``index``); the results come as forwarded messages with their
delay stamps (§4.2), then the IQ result with ``<fin>``, its RSM
first/last/count and ``complete='true'`` on the last page in the paging
direction (§4.3.2).

Errors (§4): a form field chatgate does not know is <feature-not-implemented/>;
a malformed form, JID, date or RSM set is <bad-request/>; an id that is not
in the archive is <item-not-found/>. Preferences (§6) answer ``always``: a
request to archive less is <not-allowed/>, since history cannot be switched
off. tx_xmpp's data form, RSM and MAM form pieces do the parsing and the
rendering; the router dispatches.

Each archived stanza is read back through the restricted parser before it is
forwarded (§4.2), never spliced in as text: whatever a store holds (rows
written by an older chatgate, or by hand), the client gets one well-formed
``<message/>`` written by chatgate's serializer. A row that does not read back
as one message is rebuilt from the archive's own fields (peer, direction,
body), so history loses nothing a user wrote.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Coroutine
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish
from tx_xmpp import data_form, rsm
from tx_xmpp import mam as tx_mam

from chatgate.config import Settings
from chatgate.router import Handler, Router
from chatgate.session import Session
from chatgate.stanza import CLIENT_NS, DELAY_NS, FORWARD_NS, StanzaError, iq_result, parse_stamp, stamp
from chatgate.storage import Stores
from chatgate.storage.archive import search_terms
from chatgate.storage.interfaces import (
    ArchivedMessage,
    ArchivePage,
    ArchiveQuery,
    IArchive,
    SearchUnavailable,
    UnknownMessage,
)
from chatgate.xml import Element, StreamError, parse_document

NS = "urn:xmpp:mam:2"
EXTENDED = "urn:xmpp:mam:2#extended"
XDATA_NS = "jabber:x:data"
VALIDATE_NS = "http://jabber.org/protocol/xdata-validate"

#: results per page when the client names no RSM max, and the most it may ask for (§4.3.1)
DEFAULT_PAGE = 50
MAX_PAGE = 250
#: values an 'ids' field may carry
MAX_IDS = MAX_PAGE

#: XEP-0431's field: full-text search
FULLTEXT_NS = "urn:xmpp:fulltext:0"
FULLTEXT = f"{{{FULLTEXT_NS}}}fulltext"
_FIELDS = ("with", "start", "end", "before-id", "after-id", "ids", FULLTEXT)
_ids = itertools.count(1)

log = Logger()


def readable(message: ArchivedMessage, max_size: int) -> domish.Element:
    """The archived <message/> as a parsed element, or rebuilt from the
    archive's fields when its text is not exactly one message."""
    try:
        stanza = parse_document(message.stanza.encode("utf-8"), max_size)
    except StreamError as error:
        log.warn("archived message {id} of {owner} does not read back ({error}); rebuilt from its fields",
                 id=message.id, owner=message.owner, error=error)
    else:
        if stanza.uri == CLIENT_NS and stanza.name == "message":
            return stanza
        log.warn("archived message {id} of {owner} is not a message; rebuilt from its fields",
                 id=message.id, owner=message.owner)
    rebuilt = Element((CLIENT_NS, "message"))
    peer = f"{message.contact}/{message.resource}" if message.resource else message.contact
    rebuilt["from"], rebuilt["to"] = (message.owner, peer) if message.outgoing else (peer, message.owner)
    rebuilt["type"] = "chat"
    rebuilt.addElement("body", content=message.body)
    return rebuilt


def _form(query: domish.Element) -> dict[str, list[str]]:
    """The submitted form's fields and values (§4.1); StanzaError when it is not a valid MAM form."""
    forms = list(query.elements(XDATA_NS, "x"))
    if not forms:
        return {}
    if len(forms) > 1:
        raise StanzaError("bad-request", "one data form at most")
    try:
        form = data_form.Form.fromElement(forms[0])
    except data_form.Error as e:
        raise StanzaError("bad-request", f"bad data form: {e}") from None
    if form.formType != "submit":
        raise StanzaError("bad-request", "the data form's type must be submit")
    fields = dict(form.fields)
    namespace = form.formNamespace
    if namespace is None and "FORM_TYPE" in fields:  # FORM_TYPE without type='hidden'
        namespace = fields.pop("FORM_TYPE").value
    if namespace != NS:
        raise StanzaError("bad-request", f"the data form's FORM_TYPE must be {NS}")
    for name in fields:
        if name not in _FIELDS:
            raise StanzaError("feature-not-implemented", f"unknown field {name}")
    values = {name: [str(v).strip() for v in field.values if str(v).strip()] for name, field in fields.items()}
    for name, given in values.items():
        if name != "ids" and len(given) > 1:
            raise StanzaError("bad-request", f"{name}: one value at most")
    return {name: given for name, given in values.items() if given}


def _rsm(query: domish.Element) -> rsm.RSMRequest:
    """The RSM request (XEP-0059 §2), max defaulted and capped."""
    set_element = next(query.elements(rsm.NS_RSM, "set"), None)
    if set_element is None:
        return rsm.RSMRequest(DEFAULT_PAGE)
    if next(set_element.elements(rsm.NS_RSM, "max"), None) is None:
        set_element.addElement("max", content=str(DEFAULT_PAGE))  # optional (§2.1); tx_xmpp wants it
    try:
        request = rsm.RSMRequest.fromElement(set_element)
    except rsm.RSMError as e:
        raise StanzaError("bad-request", e.text or "bad RSM set") from None
    except (AssertionError, ValueError):
        raise StanzaError("bad-request", "index excludes after and before") from None
    if request.after is not None and request.before is not None:
        raise StanzaError("bad-request", "RSM after and before together: use after-id and before-id")
    if request.index is not None and (request.after is not None or request.before is not None):
        raise StanzaError("bad-request", "index excludes after and before")
    if request.max < 0 or (request.index is not None and request.index < 0):
        raise StanzaError("bad-request", "max and index must not be negative")
    request.max = min(request.max, MAX_PAGE)
    return request


def parse_query(query: domish.Element) -> ArchiveQuery:
    """A <query/> (its form and RSM set) as an ArchiveQuery; StanzaError for a bad one."""
    fields = _form(query)
    contact = resource = None
    if "with" in fields:
        try:
            jid = JID(fields["with"][0])
        except InvalidFormat:
            raise StanzaError("bad-request", f"with: not a JID: {fields['with'][0]}") from None
        contact, resource = jid.userhost(), jid.resource
    times: dict[str, float] = {}
    for name in ("start", "end"):
        if name in fields:
            try:
                times[name] = parse_stamp(fields[name][0])
            except ValueError as e:
                raise StanzaError("bad-request", f"{name}: {e}") from None
    text = fields.get(FULLTEXT, [None])[0]
    if text is not None:
        try:
            search_terms(text)
        except ValueError as e:
            raise StanzaError("bad-request", f"fulltext: {e}") from None
    ids = fields.get("ids")
    if ids is not None and len(ids) > MAX_IDS:
        raise StanzaError("policy-violation", f"ids: at most {MAX_IDS}")
    page = _rsm(query)
    return ArchiveQuery(
        contact=contact,
        resource=resource,
        start=times.get("start"),
        end=times.get("end"),
        after_id=fields.get("after-id", [None])[0],
        before_id=fields.get("before-id", [None])[0],
        ids=tuple(ids) if ids is not None else None,
        text=text,
        after=page.after,
        before=page.before,
        index=page.index,
        max=page.max,
    )


def _result(page: ArchivePage) -> rsm.RSMResponse:
    if not page.messages:
        return rsm.RSMResponse(count=page.count)
    return rsm.RSMResponse(page.messages[0].id, page.messages[-1].id, page.first_index, page.count)


class ArchiveQueries:
    """Answers MAM requests to a user's own bare JID."""

    def __init__(self, router: Router, archive: IArchive, max_size: int) -> None:
        self.router = router
        self.archive = archive
        #: XEP-0431 offered: the backend keeps an index of words
        self.searchable = getattr(archive, "searchable", True)
        #: the largest archived stanza read back: a stanza within the limit plus what the server added
        self.max_size = max_size

    def _own(self, sender: Session, to: JID) -> str:
        owner = to.userhost()
        if not self.router.may_read_archive(sender.bare, owner):
            raise StanzaError("forbidden", "only your own archive, or a room's you are a member of, can be queried")
        return owner

    async def query(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """§4: send the matching messages, then the result with <fin/>."""
        owner = self._own(sender, to)
        query = stanza.firstChildElement()
        request = parse_query(query)
        try:
            page = await self.archive.query(owner, request)
        except UnknownMessage as e:
            raise StanzaError("item-not-found", str(e)) from None
        except SearchUnavailable as e:
            raise StanzaError("feature-not-implemented", str(e)) from None
        query_id = query.getAttribute("queryid")
        messages = page.messages[::-1] if next(query.elements(NS, "flip-page"), None) is not None else page.messages
        for message in messages:
            wrapper = Element((CLIENT_NS, "message"))
            wrapper["to"], wrapper["from"], wrapper["id"] = sender.full, owner, f"mam{next(_ids)}"
            result = wrapper.addElement((NS, "result"))
            if query_id is not None:
                result["queryid"] = query_id
            result["id"] = message.id
            forwarded = result.addElement((FORWARD_NS, "forwarded"))
            forwarded.addElement((DELAY_NS, "delay"))["stamp"] = stamp(message.at)
            forwarded.addChild(readable(message, self.max_size))
            sender.send(wrapper)
        reply = iq_result(stanza)
        fin = reply.addElement((NS, "fin"))
        if page.complete:
            fin["complete"] = "true"
        fin.addChild(_result(page).toElement())
        sender.send(reply)

    def fields(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """§4.1.5: the form fields a query may use."""
        self._own(sender, to)
        ids = data_form.Field("list-multi", var="ids")
        extra = [data_form.Field("text-single", var="before-id"), data_form.Field("text-single", var="after-id"), ids]
        if self.searchable:
            extra.append(data_form.Field("text-single", var=FULLTEXT, label="Search the messages"))
        form = tx_mam.buildForm(formType="form", extra_fields=extra).toElement()
        for field in form.elements(XDATA_NS, "field"):
            if field.getAttribute("var") == "ids":  # any values, not a list to choose from (XEP-0122)
                validate = field.addElement((VALIDATE_NS, "validate"))
                validate["datatype"] = "xs:string"
                validate.addElement("open")
        reply = iq_result(stanza)
        reply.addElement((NS, "query")).addChild(form)
        sender.send(reply)

    async def metadata(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """§5: the first and the last message of the archive."""
        owner = self._own(sender, to)
        first = await self.archive.query(owner, ArchiveQuery(max=1))
        last = await self.archive.query(owner, ArchiveQuery(before="", max=1))
        reply = iq_result(stanza)
        metadata = reply.addElement((NS, "metadata"))
        for name, page in (("start", first), ("end", last)):
            if page.messages:
                element = metadata.addElement(name)
                element["id"], element["timestamp"] = page.messages[0].id, stamp(page.messages[0].at)
        sender.send(reply)

    def prefs(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """§6: history is always kept; anything else is refused."""
        self._own(sender, to)
        if stanza.getAttribute("type") == "set":
            prefs = stanza.firstChildElement()
            never = next(prefs.elements(NS, "never"), None)
            if prefs.getAttribute("default") != "always" or (never is not None and any(never.elements())):
                raise StanzaError("not-allowed", "History cannot be switched off: the only preference is always")
        reply = iq_result(stanza)
        answer = reply.addElement((NS, "prefs"))
        answer["default"] = "always"
        answer.addElement("always")
        answer.addElement("never")
        sender.send(reply)


def _deferred(handler: Callable[[domish.Element, Session, JID], Coroutine[Any, Any, None]]) -> Handler:
    """An async handler as the router takes them: returning a Deferred."""
    return lambda stanza, sender, to: Deferred.fromCoroutine(handler(stanza, sender, to))


def register(router: Router, settings: Settings, stores: Stores) -> None:
    mam = ArchiveQueries(router, stores.archive, settings.limits.max_stanza_size + 4096)
    router.account_features.update((NS, EXTENDED))
    if mam.searchable:
        router.account_features.add(FULLTEXT_NS)
    # a user's own archive, and the archives of the entities of the domain's services (a room's,
    # XEP-0313 §5.1.2), which the service opens to whom it chooses (Router.archive_readers)
    for addressing in ("bare", *(f"{name}-bare" for name in router.subdomains.values())):
        router.handle(f"iq-set/{addressing}/{NS}:query", _deferred(mam.query))
        router.handle(f"iq-get/{addressing}/{NS}:query", mam.fields)
        router.handle(f"iq-get/{addressing}/{NS}:metadata", _deferred(mam.metadata))
    router.handle(f"iq-get/bare/{NS}:prefs", mam.prefs)
    router.handle(f"iq-set/bare/{NS}:prefs", mam.prefs)
