"""What every layer says about stanzas: shared namespaces, errors, replies, dates.

- Stanza errors (RFC 6120 §8.3): :class:`StanzaError`, raised by a handler,
  and :func:`error_reply`, the error stanza with the addresses swapped and the
  condition's type (§8.3.3).
- IQ results (RFC 6120 §8.2.3): :func:`iq_result`.
- XEP-0082 DateTime (§3.3), as XEP-0203 delays and XEP-0313 results carry
  them: :func:`stamp` and :func:`parse_stamp`.
- The namespaces more than one feature or layer names. A namespace only one
  feature speaks stays in that feature's module.

Transports, the router, features and the web listener import these from here;
none of them imports another feature for a helper.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime

from twisted.words.xish import domish

from chatgate.xml import CLIENT_NS, Element

__all__ = [
    "ADDRESS_NS", "CHATSTATES_NS", "CLIENT_NS", "CORRECT_NS", "DELAY_NS", "FORWARD_NS", "HINTS_NS", "MARKERS_NS",
    "RECEIPTS_NS", "SID_NS", "STANZAS_NS", "StanzaError", "acknowledgement", "body_of", "chat_state_only",
    "error_reply", "first_child", "iq_result", "parse_stamp", "stamp",
]

STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
#: XEP-0033 extended addressing (the alias's ofrom)
ADDRESS_NS = "http://jabber.org/protocol/address"
#: XEP-0359 stanza ids
SID_NS = "urn:xmpp:sid:0"
#: XEP-0203 delayed delivery
DELAY_NS = "urn:xmpp:delay"
#: XEP-0297 forwarding (carbons, MAM results)
FORWARD_NS = "urn:xmpp:forward:0"
#: XEP-0334 processing hints
HINTS_NS = "urn:xmpp:hints"
#: XEP-0085 chat states
CHATSTATES_NS = "http://jabber.org/protocol/chatstates"
#: XEP-0184 message delivery receipts
RECEIPTS_NS = "urn:xmpp:receipts"
#: XEP-0333 chat markers
MARKERS_NS = "urn:xmpp:chat-markers:0"
#: XEP-0308 last message correction
CORRECT_NS = "urn:xmpp:message-correct:0"

#: XEP-0333 markers, and what each says of the message it names
_MARKERS = {"received": "delivered", "displayed": "read", "acknowledged": "read"}

# RFC 6120 §8.3.3: the error type each condition goes with.
#: xml:lang as the parser keys it
_XML_LANG = ("http://www.w3.org/XML/1998/namespace", "lang")

_ERROR_TYPES = {
    "bad-request": "modify",
    "conflict": "cancel",
    "feature-not-implemented": "cancel",
    "forbidden": "auth",
    "internal-server-error": "cancel",
    "item-not-found": "cancel",
    "jid-malformed": "modify",
    "not-acceptable": "modify",
    "not-allowed": "cancel",
    "not-authorized": "auth",
    "policy-violation": "modify",
    "recipient-unavailable": "wait",
    "resource-constraint": "wait",
    "service-unavailable": "cancel",
    "undefined-condition": "cancel",
    "unexpected-request": "wait",
}

# XEP-0082 §3.3 DateTime: CCYY-MM-DDThh:mm:ss[.sss]TZD
_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


class StanzaError(Exception):
    """Raised by a handler to answer the stanza with an RFC 6120 §8.3 error."""

    def __init__(self, condition: str, text: str | None = None,
                 application: domish.Element | None = None) -> None:
        super().__init__(condition)
        self.condition = condition
        self.text = text
        #: the §8.3.4 application-specific condition, if any
        self.application = application


def error_reply(stanza: domish.Element, condition: str, text: str | None = None,
                application: domish.Element | None = None) -> domish.Element:
    """The error stanza answering *stanza* (RFC 6120 §8.3.1): addresses swapped,
    with the §8.3.4 *application*-specific condition element if given."""
    reply = Element((CLIENT_NS, stanza.name))
    for attr in ("id", _XML_LANG):
        if stanza.hasAttribute(attr):
            reply[attr] = stanza[attr]
    if stanza.hasAttribute("from"):
        reply["to"] = stanza["from"]
    if stanza.hasAttribute("to"):
        reply["from"] = stanza["to"]
    reply["type"] = "error"
    error = reply.addElement("error")
    error["type"] = _ERROR_TYPES.get(condition, "cancel")
    error.addElement((STANZAS_NS, condition))
    if text:
        error.addElement((STANZAS_NS, "text"), content=text)
    if application is not None:
        error.addChild(application)
    return reply


def iq_result(iq: domish.Element) -> domish.Element:
    """An empty result for *iq*, from whom it was sent to."""
    reply = Element((CLIENT_NS, "iq"))
    reply["type"] = "result"
    reply["id"] = iq.getAttribute("id", "")
    if iq.hasAttribute("from"):
        reply["to"] = iq["from"]
    if iq.hasAttribute("to"):
        reply["from"] = iq["to"]
    return reply


def unavailable(full: str) -> domish.Element:
    """A resource's unavailable presence, from its full JID (RFC 6121 §4.5)."""
    presence = Element((CLIENT_NS, "presence"))
    presence["from"], presence["type"] = full, "unavailable"
    return presence


def first_child(stanza: domish.Element) -> domish.Element | None:
    """The first child element (an IQ's payload), or None."""
    for child in stanza.elements():
        return child
    return None


def acknowledgement(stanza: domish.Element) -> tuple[str, str] | None:
    """("delivered" | "read", id of the message it is about) for a XEP-0184
    ``<received id/>`` receipt (§7) or a XEP-0333 marker (§6: received,
    displayed, acknowledged), None for anything else."""
    for child in stanza.elements():
        if child.uri == RECEIPTS_NS and child.name == "received" and child.getAttribute("id"):
            return "delivered", child["id"]
        if child.uri == MARKERS_NS and child.name in _MARKERS and child.getAttribute("id"):
            return _MARKERS[child.name], child["id"]
    return None


def chat_state_only(stanza: domish.Element) -> bool:
    """A message without a body carrying nothing but XEP-0085 chat states (and
    XEP-0334 hints, XEP-0359 ids, a thread): nothing a user reads. A receipt, a
    marker or any other payload beside a chat state makes it more than that."""
    if body_of(stanza) is not None:
        return False
    for child in stanza.elements():
        if child.uri not in (CHATSTATES_NS, HINTS_NS, SID_NS) and not (child.uri == CLIENT_NS
                                                                         and child.name == "thread"):
            return False
    return True


def body_of(stanza: domish.Element) -> str | None:
    """The text of a message's first <body/>, or None when it has none."""
    for body in stanza.elements(CLIENT_NS, "body"):
        return str(body)
    return None


def stamp(at: float) -> str:
    """*at* (POSIX seconds) as a XEP-0082 DateTime in UTC, to the microsecond."""
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_stamp(text: str) -> float:
    """A XEP-0082 DateTime as POSIX seconds; ValueError if it is not one."""
    text = text.strip()
    if not _DATETIME.match(text):
        raise ValueError(f"not a XEP-0082 date and time: {text!r}")
    return datetime.fromisoformat(text).timestamp()


# -- entity capabilities (XEP-0115 §5): what a disco#info answer hashes to

_XDATA_NS = "jabber:x:data"


def caps_hash(name: str, text: str) -> str | None:
    """base64 of the *name* hash (IANA names: sha-1, sha-256, ...) of *text*, None if unknown."""
    try:
        digest = hashlib.new(name.replace("-", "").lower(), text.encode("utf-8")).digest()
    except ValueError:
        return None
    return base64.b64encode(digest).decode("ascii")


def caps_verification(query: domish.Element) -> str | None:
    """§5.1's verification string of a disco#info answer; None when §5.4 says not to trust it."""
    info = "http://jabber.org/protocol/disco#info"
    identities = sorted(
        (i.getAttribute("category", ""), i.getAttribute("type", ""),
         i.getAttribute(_XML_LANG, "") or i.getAttribute("xml:lang", ""),
         i.getAttribute("name", ""))
        for i in query.elements(info, "identity"))
    features = sorted(f.getAttribute("var", "") for f in query.elements(info, "feature"))
    if len(set(identities)) != len(identities) or len(set(features)) != len(features):
        return None
    forms: list[tuple[str, list[tuple[str, list[str]]]]] = []
    for form in query.elements(_XDATA_NS, "x"):
        form_type, fields = None, []
        for field in form.elements(_XDATA_NS, "field"):
            values = sorted(str(v) for v in field.elements(_XDATA_NS, "value"))
            if field.getAttribute("var") == "FORM_TYPE":
                if form_type is not None or len(values) != 1:
                    return None
                form_type = values[0]
            else:
                fields.append((field.getAttribute("var", ""), values))
        if form_type is None:
            continue  # §5.4 3.6: a form without FORM_TYPE is left out
        forms.append((form_type, sorted(fields)))
    if len({t for t, _ in forms}) != len(forms):
        return None
    text = "".join(f"{c}/{t}/{lang}/{name}<" for c, t, lang, name in identities)
    text += "".join(f"{f}<" for f in features)
    for form_type, fields in sorted(forms):
        text += f"{form_type}<"
        for var, values in fields:
            text += f"{var}<" + "".join(f"{v}<" for v in values)
    return text
