"""HTTP File Upload (XEP-0363, version 1.2.0): slots for files users share.

Implements §3 Discovering Support (the user's own domain is the upload
service: identity ``store/file`` and the ``urn:xmpp:http:upload:0`` feature in
its disco#info, with the XEP-0128 form giving ``max-file-size``: slixmpp's
``find_upload_service`` looks for that identity and feature, Conversations for
the feature on the server's own entry and the form's field), §4 Requesting a
slot (``<request filename size content-type/>`` answered with the PUT and GET
URLs, no ``<header/>`` needed: the PUT URL carries its signature), and §5
Error conditions: a file over ``[upload] max_file_size`` gets
``not-acceptable`` with ``<file-too-large><max-file-size/></file-too-large>``,
a user over ``[upload] daily_quota`` in the last 24 hours
``resource-constraint`` with ``<retry stamp/>`` (when room comes back), a
request without a usable file name or size ``bad-request``. §7's short PUT
validity is ``[upload] slot_lifetime``; §8's long random paths are the 128
random bits of every file id. Domains are sealed as for everything else: the
router never lets a user ask another hosted domain.

Slots are signed URLs (:mod:`chatgate.auth.slots`): nothing is kept per
slot, any node of a cluster takes the PUT and serves the GET
(:mod:`chatgate.web.upload`, §6 Upload). Files older than ``[archive]
retention_days`` (if set) are removed with the history, a batch at a time
(the ``upload-expiry`` service).
"""

from __future__ import annotations

import unicodedata

from twisted.application.internet import TimerService
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.auth import slots
from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import StanzaError, error_reply, iq_result, stamp
from chatgate.storage import Stores
from chatgate.xml import Element

NS = "urn:xmpp:http:upload:0"
DATA_NS = "jabber:x:data"
#: seconds between two expiry sweeps, and files removed per sweep
EXPIRE_EVERY = 3600.0
EXPIRE_BATCH = 500
#: the longest file name kept (bytes of UTF-8)
MAX_NAME = 200

log = Logger()


def clean_name(raw: str) -> str | None:
    """A file name safe in a URL path and a Content-Disposition: its last path
    segment, without control characters, at most MAX_NAME bytes; None if nothing is left."""
    name = raw.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in unicodedata.normalize("NFC", name) if unicodedata.category(c)[0] != "C").strip()
    if name in ("", ".", ".."):
        return None
    while len(name.encode()) > MAX_NAME:
        name = name[:-1]
    return name


def clean_type(raw: str) -> str:
    """The content type as given when it looks like one (``type/subtype``), else octet-stream."""
    value = raw.strip().lower()
    kind, _, sub = value.partition("/")
    token = set("abcdefghijklmnopqrstuvwxyz0123456789!#$&^_.+-")
    if kind and sub and len(value) <= 100 and set(kind) <= token and set(sub) <= token:
        return value
    return "application/octet-stream"


class Upload:
    def __init__(self, router: Router, settings: Settings, stores: Stores, key: bytes) -> None:
        self.router = router
        self.settings = settings
        self.files = stores.files
        self.key = key
        u = settings.upload
        self.max_size, self.quota, self.lifetime = u.max_file_size, u.daily_quota, u.slot_lifetime

    def base_url(self, domain: str) -> str:
        if self.settings.upload.base_url:
            return self.settings.upload.base_url
        h = self.settings.http
        return f"{'https' if h.tls else 'http'}://{domain}:{h.port}{self.settings.upload.http_path}"

    def request(self, stanza: domish.Element, sender: Session, to: JID) -> Deferred[None] | None:
        """§4: a slot, or the §5 error."""
        request = stanza.firstChildElement()
        filename = clean_name(request.getAttribute("filename", ""))
        size_text = request.getAttribute("size", "")
        if filename is None or not size_text.isdigit() or int(size_text) <= 0:
            raise StanzaError("bad-request", "A slot needs a file name and a size in bytes")
        size = int(size_text)
        if size > self.max_size:
            too_large = Element((NS, "file-too-large"))
            too_large.addElement("max-file-size", content=str(self.max_size))
            sender.send(error_reply(stanza, "not-acceptable", f"Files may be up to {self.max_size} bytes",
                                    too_large))
            return None
        localpart = sender.jid.user
        now = self.router.clock.seconds()
        d = self.files.usage(sender.domain, localpart, now)
        d.addCallback(self._slot, stanza, sender, filename, size, clean_type(request.getAttribute("content-type", "")))
        return d

    def _slot(self, usage: tuple[int, float | None], stanza: domish.Element, sender: Session, filename: str,
              size: int, content_type: str) -> None:
        used, room_at = usage
        if used + size > self.quota:
            retry = Element((NS, "retry"))
            retry["stamp"] = stamp(room_at or self.router.clock.seconds() + 86400)
            log.info("upload slot refused to {jid}: daily quota ({used} + {size} bytes)", jid=sender.full,
                     used=used, size=size)
            sender.send(error_reply(stanza, "resource-constraint",
                                    f"You may upload {self.quota} bytes a day", retry))
            return
        slot = slots.Slot(sender.domain, slots.new_file_id(), filename, sender.jid.user, size, content_type,
                          int(self.router.clock.seconds() + self.lifetime))
        url = f"{self.base_url(sender.domain)}/{slot.path}"
        reply = iq_result(stanza)
        answer = reply.addElement((NS, "slot"))
        answer.addElement("put")["url"] = f"{url}?{slots.put_query(self.key, slot)}"
        answer.addElement("get")["url"] = url
        sender.send(reply)

    def expire(self) -> Deferred[None] | None:
        days = self.settings.archive.retention_days
        if days is None:
            return None
        d = self.files.expire(self.router.clock.seconds() - days * 86400, EXPIRE_BATCH)
        d.addCallback(lambda n: n and log.info("retention: removed {n} uploaded files older than {days} days",
                                               n=n, days=days))
        d.addErrback(lambda f: log.failure("retention: removing old uploads failed", f))
        return d


def form(max_size: int) -> domish.Element:
    """The §3 service form (XEP-0128): the largest file."""
    x = Element((DATA_NS, "x"))
    x["type"] = "result"
    hidden = x.addElement("field")
    hidden["var"], hidden["type"] = "FORM_TYPE", "hidden"
    hidden.addElement("value", content=NS)
    field = x.addElement("field")
    field["var"] = "max-file-size"
    field.addElement("value", content=str(max_size))
    return x


def register(router: Router, settings: Settings, stores: Stores) -> TimerService | None:
    if not settings.upload.enabled or stores.files is None:
        return None
    upload = Upload(router, settings, stores, slots.upload_key(settings))
    router.server_features.add(NS)
    router.server_identities.append(("store", "file", "HTTP File Upload"))
    router.server_forms.append(form(settings.upload.max_file_size))
    router.handle(f"iq-get/host/{NS}:request", upload.request)
    if settings.archive.retention_days is None:
        return None
    expiry = TimerService(EXPIRE_EVERY, upload.expire)
    expiry.clock = router.clock
    expiry.setName("upload-expiry")
    return expiry
