"""Where uploaded files go and come from: ``[upload] http_path`` (XEP-0363 §5).

``PUT <http_path>/<domain>/<file id>/<name>?<slot>``: the slot's signature
(:mod:`chatgate.auth.slots`) and expiry are checked, and the request must
carry exactly the slot's ``Content-Length`` and ``Content-Type``; the
user's daily quota is checked again (several slots asked at once). A body
longer than ``[upload] max_file_size`` is not even read (the site stops
buffering it). 201 once stored; a slot used twice: 409; a bad or expired
signature: 403; a wrong length: 413 or 400; a wrong type: 415.

``GET``/``HEAD <http_path>/<domain>/<file id>/<name>``: the bytes, served so
that a browser never takes an upload for a page of this origin: images of a
few safe types (PNG, JPEG, GIF, WebP) inline with their own type, everything
else (HTML, SVG, scripts...) as ``application/octet-stream`` and
``attachment``; ``X-Content-Type-Options: nosniff`` and a
``Content-Security-Policy`` that lets nothing run. There is no listing: a
file id holds 128 random bits.

CORS: the pages of ``[http] cors_origins`` may PUT and GET from the browser.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote, unquote

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

    # -- helpers

    def _where(self, request: server.Request) -> tuple[str, str, str] | None:
        """(domain, file id, file name) of the request's path, or None."""
        parts = [unquote(p.decode("ascii", "replace")) for p in request.postpath]
        if len(parts) != 3 or not slots.FILE_ID.fullmatch(parts[1]) or "/" in parts[0]:
            return None
        return parts[0], parts[1], parts[2]

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
        where = self._where(request)
        query = {k.decode(): v[0].decode("utf-8", "replace") for k, v in request.args.items()}
        slot = None if where is None else slots.verify(self.key, *where, query)
        if slot is None:
            return self._answer(request, 403, "No such upload slot")
        if slot.expires < self.clock.seconds():
            return self._answer(request, 403, "This upload slot has expired; ask for another")
        if getattr(request, "oversized", False) or slot.size > self.settings.upload.max_file_size:
            return self._answer(request, 413, "Larger than the slot")
        length = request.getHeader(b"content-length")
        if length is None or not length.isdigit() or int(length) != slot.size:
            return self._answer(request, 400, f"The slot is for exactly {slot.size} bytes")
        content_type = (request.getHeader(b"content-type") or b"application/octet-stream").decode("latin-1")
        if content_type.split(";")[0].strip().lower() != slot.content_type.split(";")[0]:
            return self._answer(request, 415, f"The slot is for {slot.content_type}")
        request.content.seek(0, os.SEEK_END)
        if request.content.tell() != slot.size:
            return self._answer(request, 400, f"The slot is for exactly {slot.size} bytes")
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
        where = self._where(request)
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
        file.render(request)

    def _not_served(self, failure: Any, request: server.Request) -> None:
        log.failure("serving an upload", failure)
        if not request.finished and not request._disconnected:
            request.write(self._answer(request, 500, "The file could not be read"))
            request.finish()
