"""The HTTP site of the web listener (twisted.web).

What is served where is decided in :func:`make_site`, and only there: today
the BOSH endpoint at ``[http] bosh_path``; the webmail pane, the admin API and
metrics are mounted beside it the same way.

Around every dynamic endpoint, :class:`Endpoint` adds what HTTP asks of it:
answers are never cached, and pages of the configured webmail origins may
call it from the browser (CORS, with the preflight answered). The site
refuses to buffer a request body beyond its limit and writes no access log
(the reverse proxy in front keeps one; a long-polling client would add a line
every few seconds).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from twisted.web import resource, server

from chatgate.config import HTTPSettings

_NO_CACHE = {
    b"cache-control": b"no-cache, no-store, must-revalidate",
    b"pragma": b"no-cache",
    b"expires": b"0",
    b"x-content-type-options": b"nosniff",
    b"server": b"chatgate",
}


#: the body limit of a request decided from the request and its raw path
BodyLimit = Callable[[server.Request, bytes], int]


class Request(server.Request):
    """A request whose body is dropped, not stored, once it is longer than the
    site's ``max_body_size``; ``oversized`` then tells the resource."""

    oversized = False
    #: the most body bytes kept, decided once the headers are in
    body_limit = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # No endpoint takes HTML form posts; skipping Twisted's form parsing
        # spares every BOSH request a Content-Type parse by the email package.
        self._parsePOSTFormSubmission = False

    def _limit(self) -> int:
        site = self.channel.site
        # the request line and headers are parsed (the channel has the path) before the body comes
        path = getattr(self.channel, "_path", b"") or b""
        for prefix, limit in site.body_limits:
            if path.startswith(prefix):
                return limit if isinstance(limit, int) else limit(self, path)
        return site.max_body_size

    def gotLength(self, length: int | None) -> None:
        self.body_limit = self._limit()
        if length is not None and length > self.body_limit:
            self.oversized = True
            self.content = io.BytesIO()
        else:
            super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self.oversized:
            return
        if self.content.tell() + len(data) > self.body_limit:
            self.oversized = True
            self.content.close()
            self.content = io.BytesIO()
            return
        super().handleContentChunk(data)


class Endpoint(resource.Resource):
    """A dynamic endpoint at one path: never cached, callable from the pages
    of *origins* (``*`` for any) with CORS; answers the CORS preflight
    (OPTIONS) itself and hands every other request to *wrapped*."""

    isLeaf = True

    def __init__(self, wrapped: resource.Resource, origins: Sequence[str]) -> None:
        super().__init__()
        self.wrapped = wrapped
        self.origins = frozenset(o.encode("ascii") for o in origins)
        methods = (*getattr(wrapped, "allowedMethods", (b"GET",)), b"OPTIONS")
        self.methods = b", ".join(methods)

    def render(self, request: server.Request) -> bytes | int:
        if request.postpath not in ([], [b""]):
            return resource.NoResource().render(request)
        for name, value in _NO_CACHE.items():
            request.setHeader(name, value)
        allowed = self._allowed(request)
        if request.method == b"OPTIONS":
            request.setResponseCode(204)
            request.setHeader(b"allow", self.methods)
            if allowed:
                request.setHeader(b"access-control-allow-methods", self.methods)
                # Authorization: the history API and the chat link take the user's credentials
                request.setHeader(b"access-control-allow-headers", b"Authorization, Content-Type")
                request.setHeader(b"access-control-max-age", b"86400")
            return b""
        return self.wrapped.render(request)

    def _allowed(self, request: server.Request) -> bool:
        """Set the CORS answer headers when the request's Origin may call us."""
        origin = request.getHeader(b"origin")
        if origin is None or not self.origins:
            return False
        request.setHeader(b"vary", b"Origin")
        if b"*" in self.origins:
            request.setHeader(b"access-control-allow-origin", b"*")
            return True
        if origin.lower() in self.origins:
            request.setHeader(b"access-control-allow-origin", origin)
            return True
        return False


class Folder(resource.Resource):
    """A path segment under which things are mounted; itself not found."""

    def render(self, request: server.Request) -> bytes:
        return resource.NoResource().render(request)

    def mount(self, path: str, child: resource.Resource) -> None:
        """Serve *child* at *path* (``/a/b``) below this folder."""
        *folders, last = path.strip("/").split("/")
        parent: resource.Resource = self
        for name in folders:
            key = name.encode()
            below = parent.children.get(key)
            if below is None:
                below = Folder()
                parent.putChild(key, below)
            parent = below
        parent.putChild(last.encode(), child)


class Site(server.Site):
    """The web listener's site: size-limited requests, no tracebacks, no access log."""

    requestFactory = Request
    displayTracebacks = False
    noisy = False

    def __init__(self, root: resource.Resource, max_body_size: int) -> None:
        super().__init__(root)
        self.max_body_size = max_body_size
        #: (path prefix, its own limit): uploads are larger than any BOSH body. A
        #: limit may be a function of the request and its raw path (with the
        #: query), called once its headers are in and before any of its body.
        self.body_limits: list[tuple[bytes, int | BodyLimit]] = []

    def log(self, request: server.Request) -> None:
        """No access log (see the module's docstring)."""


class Mountable(Protocol):
    """Something that serves itself below the site's root (the chat pane)."""

    def mount(self, root: Folder) -> None: ...


def make_site(http: HTTPSettings, bosh: resource.Resource, pane: Mountable | None = None,
              websocket: resource.Resource | None = None,
              upload: tuple[str, int | BodyLimit, resource.Resource] | None = None) -> Site:
    """The site of ``[http]``: *bosh* (XEP-0124/0206) at ``bosh_path``;
    *websocket* (RFC 7395) at ``websocket_path`` when set; the webmail chat
    pane (:mod:`chatgate.web.pane`: ``/chat/``, ``/api/sites/…/chat``); *upload*
    (its path, its largest body or the function deciding it per request, the
    resource: XEP-0363's PUT and GET)."""
    root = Folder()
    root.mount(http.bosh_path, Endpoint(bosh, http.cors_origins))
    if websocket is not None and http.websocket_path:
        root.mount(http.websocket_path, websocket)
    if pane is not None:
        pane.mount(root)
    site = Site(root, max_body_size=http.bosh_max_body_size)
    if upload is not None:
        path, largest, files = upload
        root.mount(path, files)
        site.body_limits.append(((path + "/").encode(), largest))
    return site
