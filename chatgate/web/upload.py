"""Where uploaded files go and come from: ``[upload] http_path`` (XEP-0363
§6 Upload, and §8's long random paths).

``PUT <http_path>/<domain>/<file id>/<name>?<slot>``: the slot's signature
(:mod:`chatgate.auth.slots`) and expiry are checked as soon as the request's
headers are in (:meth:`UploadResource.body_limit`, called by the site), so a
body is kept only up to a valid slot's size and not at all without one; the
request must carry exactly the slot's ``Content-Length`` (§6 MUST) and
``Content-Type`` (§6 SHOULD; none given counts as
``application/octet-stream``); the user's daily quota is checked again
(several slots asked at once). 201 once stored; a slot used twice: 409; no
slot, a bad signature or an expired slot: 403; a body longer than the slot:
413; shorter: 400; another type: 415; over the daily quota: 413.

``GET``/``HEAD <http_path>/<domain>/<file id>/<name>``: the bytes, served so
that a browser never takes an upload for a page of this origin: images of a
few safe types (PNG, JPEG, GIF, WebP) inline with their own type, everything
else (HTML, SVG, scripts...) as ``application/octet-stream`` and
``attachment`` (RFC 6266 ``filename*``); ``X-Content-Type-Options: nosniff``
and a ``Content-Security-Policy`` that lets nothing run. There is no
listing: a file id holds 128 random bits, and the URL is the capability
(third-party clients fetch without credentials).

CORS: the pages of ``[http] cors_origins`` may PUT and GET from the browser
(the preflight answered here).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import parse_qs, quote, unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server, static

from chatgate.auth import slots
from chatgate.config import Settings
from chatgate.storage.files import StoredFile
from chatgate.storage.interfaces import IFileStore

#: shown inline with their own type; every other upload is a download of bytes
SAFE_IMAGES = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})

log = Logger()


def _where(segments: list[bytes]) -> tuple[str, str, str] | None:
    """(domain, file id, file name) of a path below ``http_path``, or None."""
    try:
        parts = [unquote(p.decode("ascii"), errors="strict") for p in segments]
    except UnicodeDecodeError:
        return None
    if len(parts) != 3 or not slots.FILE_ID.fullmatch(parts[1]) or "/" in parts[0]:
        return None
    return parts[0], parts[1], parts[2]


class UploadResource(resource.Resource):
    isLeaf = True
    allowedMethods = (b"GET", b"HEAD", b"PUT", b"OPTIONS")

    def __init__(self, settings: Settings, files: IFileStore, key: bytes, clock: Any = None) -> None:
        super().__init__()
        if clock is None:
            from twisted.internet import reactor as clock
        self.settings = settings
        self.files = files
        self.key = key
        self.clock = clock
        self.origins = frozenset(o.encode("ascii").lower() for o in settings.http.cors_origins)
        self.prefix = (settings.upload.http_path.rstrip("/") + "/").encode()

    # -- helpers

    def _where(self, raw: bytes) -> tuple[str, str, str] | None:
        """(domain, file id, file name) of a raw URL (path and query), or None.
        From the raw path, not Twisted's ``postpath``: that is unquoted to
        bytes already, and a name is percent-encoded UTF-8."""
        path = raw.partition(b"?")[0]
        return _where(path[len(self.prefix):].split(b"/")) if path.startswith(self.prefix) else None

    def _slot(self, raw: bytes) -> slots.Slot | None:
        """The slot a raw PUT URL (path and query) names, if its signature holds."""
        where = self._where(raw)
        query = raw.partition(b"?")[2]
        if where is None:
            return None
        fields = {k: v[0] for k, v in parse_qs(query.decode("ascii", "replace")).items()}
        return slots.verify(self.key, *where, fields)

    def body_limit(self, request: server.Request, raw: bytes) -> int:
        """The body a request may bring, decided by the site once its headers
        are in and before any of its body: a PUT's slot size, and nothing
        without a valid, unexpired slot, so nobody makes a node buffer bytes it
        will refuse. The expiry is checked at this moment: an upload begun in
        time is not refused for taking long."""
        request.upload_began = now = self.clock.seconds()
        slot = self._slot(raw)
        return 0 if slot is None or slot.expires < now else slot.size

    def _cors(self, request: server.Request) -> None:
        origin = request.getHeader(b"origin")
        if origin is None or not self.origins:
            return
        request.setHeader(b"vary", b"Origin")
        if b"*" in self.origins or origin.lower() in self.origins:
            request.setHeader(b"access-control-allow-origin", origin if b"*" not in self.origins else b"*")

    def _answer(self, request: server.Request, code: int, text: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"x-content-type-options", b"nosniff")
        return (text + "\n").encode()

    # -- methods

    def render_OPTIONS(self, request: server.Request) -> bytes:
        self._cors(request)
        request.setResponseCode(204)
        request.setHeader(b"allow", b", ".join(self.allowedMethods))
        request.setHeader(b"access-control-allow-methods", b"GET, HEAD, PUT")
        request.setHeader(b"access-control-allow-headers", b"Content-Type")
        request.setHeader(b"access-control-max-age", b"86400")
        return b""

    def render_PUT(self, request: server.Request) -> bytes | int:
        self._cors(request)
        slot = self._slot(request.uri)
        if slot is None:
            log.info("upload refused: no valid slot in the URL")
            return self._answer(request, 403, "No such upload slot")
        jid = f"{slot.localpart}@{slot.domain}"
        if slot.expires < getattr(request, "upload_began", self.clock.seconds()):
            log.info("upload by {jid} refused: slot expired", jid=jid)
            return self._answer(request, 403, "This upload slot has expired; ask for another")
        if getattr(request, "oversized", False) or slot.size > self.settings.upload.max_file_size:
            log.info("upload by {jid} refused: larger than its slot", jid=jid)
            return self._answer(request, 413, f"The slot is for {slot.size} bytes")
        length = request.getHeader(b"content-length")
        request.content.seek(0, os.SEEK_END)
        if length is None or not length.isdigit() or int(length) != slot.size \
                or request.content.tell() != slot.size:
            log.info("upload by {jid} refused: not the slot's size", jid=jid)
            return self._answer(request, 400, f"The slot is for exactly {slot.size} bytes")
        content_type = (request.getHeader(b"content-type") or b"application/octet-stream").decode("latin-1")
        if content_type.split(";")[0].strip().lower() != slot.content_type.split(";")[0]:
            log.info("upload by {jid} refused: not the slot's content type", jid=jid)
            return self._answer(request, 415, f"The slot is for {slot.content_type}")
        defer.ensureDeferred(self._store(request, slot))
        return server.NOT_DONE_YET

    async def _store(self, request: server.Request, slot: slots.Slot) -> None:
        jid = f"{slot.localpart}@{slot.domain}"
        try:
            used, _ = await self.files.usage(slot.domain, slot.localpart, self.clock.seconds())
            if used + slot.size > self.settings.upload.daily_quota:
                log.info("upload by {jid} refused: daily quota", jid=jid)
                body = self._answer(request, 413, "Daily upload quota reached")
            else:
                meta = StoredFile(slot.localpart, slot.filename, slot.size, slot.content_type, self.clock.seconds())
                if await self.files.put(slot.domain, slot.file_id, request.content, meta):
                    log.info("upload by {jid}: {size} bytes stored", jid=jid, size=slot.size)
                    request.setResponseCode(201)
                    body = b""
                else:
                    body = self._answer(request, 409, "This slot was used already")
        except Exception:
            log.failure("storing an upload by {jid}", jid=jid)
            body = self._answer(request, 500, "The file could not be stored")
        if not request.finished and not request._disconnected:
            request.write(body)
            request.finish()

    def render_HEAD(self, request: server.Request) -> int:
        return self.render_GET(request)

    def render_GET(self, request: server.Request) -> bytes | int:
        self._cors(request)
        where = self._where(request.uri)
        if where is None:
            return self._answer(request, 404, "No such file")
        d = self.files.get(where[0], where[1])
        d.addCallback(self._serve, request, where[2])
        d.addErrback(self._not_served, request)
        return server.NOT_DONE_YET

    def _serve(self, found: tuple[StoredFile, str] | None, request: server.Request, name: str) -> None:
        if request.finished or request._disconnected:
            return
        if found is None or found[0].filename != name:
            request.write(self._answer(request, 404, "No such file"))
            request.finish()
            return
        meta, path = found
        inline = meta.content_type in SAFE_IMAGES
        request.setHeader(b"content-type", meta.content_type.encode() if inline else b"application/octet-stream")
        ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in meta.filename)
        disposition = f"{'inline' if inline else 'attachment'}; filename=\"{ascii_name}\"; " \
                      f"filename*=UTF-8''{quote(meta.filename, safe='')}"
        request.setHeader(b"content-disposition", disposition.encode())
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"content-security-policy", b"default-src 'none'; sandbox")
        request.setHeader(b"cache-control", b"private, max-age=31536000, immutable")
        file = static.File(path, defaultType="application/octet-stream")
        file.type = request.responseHeaders.getRawHeaders(b"content-type")[0].decode()
        file.encoding = None
        body = file.render(request)
        if body is not server.NOT_DONE_YET:  # HEAD, a 304 to If-Modified-Since: headers only
            request.write(body)
            request.finish()

    def _not_served(self, failure: Any, request: server.Request) -> None:
        log.failure("serving an upload", failure)
        if not request.finished and not request._disconnected:
            request.write(self._answer(request, 500, "The file could not be read"))
            request.finish()
