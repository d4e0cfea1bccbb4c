"""The webmail chat pane on the web listener, and what its pages ask of the server.

Mounted by :func:`chatgate.web.site.make_site`, beside BOSH and the history
API (one origin for all three, so the pane needs no CORS):

- ``/chat/``: the pane's static files, shipped as package data
  (``chatgate/web/static/``): ``index.html`` (the pane),
  ``conversation.html?id=…`` (one conversation, a page of its own),
  ``loader.js`` (the script a webmail includes to show the chat link), the
  UI's ES modules and ``vendor/strophe.esm.js`` (Strophe.js from npm, copied
  in by ``make pane``, never committed). No directory listings; the pages get
  a Content-Security-Policy that allows this origin only.
- ``GET /chat/config.json``: what the pages need to know (BOSH path; the
  WebSocket path, ``[http] websocket_path``, or null when it is off: the pane
  makes it ws:// or wss:// on its own page's origin, tries it first and falls
  back to BOSH when it cannot be opened; whether login tokens are on, their
  lifetime, where uploads are: ``[upload] http_path`` and ``base_url``, or
  null when uploads are off).
- ``POST /chat/token``: a fresh login token (``{"token", "expires"}``) for the
  user whose HTTP Basic credentials (address and password, or a login token
  still valid) the request carries, checked exactly as the history API checks
  them. The pane trades a typed password for a token at once and forgets the
  password, and renews its token before it expires, so a reconnect hours later
  still signs in. A token renewed from a token keeps its sign-in time and
  expires at the latest ``[webmail] token_max_age`` after it; from then on (or
  once the user's password changed) it is refused with 401 and the user signs
  in again. 409 when tokens are off (``[webmail] token_secret`` empty),
  403 over an unencrypted connection when ``[xmpp] require_encryption``.
- ``GET /api/sites/<host>/chat?user=<jid>``: whether the site shows that user
  the chat link, ``{"show": true|false}``. Asked without credentials, the
  answer is the site's own setting: the same status, body and headers whether
  *user* is a chat user, an unknown address or an address of a domain without
  chat, so that it tells a stranger nothing about addresses. Asked with the
  user's credentials (HTTP Basic with their address and a login token or
  password, checked as for ``POST /chat/token``), it is the admin API's
  per-user decision (:func:`chatgate.admin.operations.chat_link`) without its
  reason; a refused credential gets that endpoint's 401/403/429. The loader
  sends the webmail's token for its user, so a user whose domain has chat off
  gets no link. Callable from the configured webmail origins (CORS).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server, static

from chatgate.admin import operations as ops
from chatgate.admin.operations import AdminError
from chatgate.auth.tokens import TokenError, looks_like_token, mint, renew, verify
from chatgate.config import Settings
from chatgate.storage.interfaces import DirectoryError, IDirectory
from chatgate.transports.bosh import peer_of
from chatgate.web.history import HTTPError, basic_credentials
from chatgate.web.site import Endpoint, Folder

#: where the pane is served on the web listener
PATH = "/chat"
#: the pane's files, inside the package
STATIC = Path(__file__).resolve().parent / "static"
#: Strophe.js, put there by `make pane`
VENDOR = STATIC / "vendor" / "strophe.esm.js"

log = Logger()

Authenticate = Callable[[server.Request], Awaitable[str]]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".map": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
    ".webmanifest": "application/manifest+json",
}


def content_security_policy(origins: Sequence[str]) -> bytes:
    """The pages' CSP: everything from this origin only; framed by this
    origin and the configured webmail origins."""
    ancestors = "*" if "*" in origins else " ".join(["'self'", *origins])
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        f"frame-ancestors {ancestors}"
    ).encode("ascii")


class PaneFiles(static.File):
    """The pane's static files: known content types, revalidated on every
    use (Last-Modified), no directory listings, security headers."""

    contentTypes = _TYPES
    policy = b"default-src 'none'"

    def directoryListing(self) -> resource.Resource:
        return resource.NoResource()

    def createSimilarFile(self, path: str) -> PaneFiles:
        similar: PaneFiles = super().createSimilarFile(path)
        similar.policy = self.policy
        return similar

    def render_GET(self, request: server.Request) -> bytes | int:
        request.setHeader(b"cache-control", b"no-cache")
        request.setHeader(b"x-content-type-options", b"nosniff")
        request.setHeader(b"referrer-policy", b"no-referrer")
        request.setHeader(b"content-security-policy", self.policy)
        request.setHeader(b"server", b"chatgate")
        return super().render_GET(request)


def _json(request: server.Request, status: int, body: dict[str, Any]) -> None:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json; charset=utf-8")
    request.write(json.dumps(body, ensure_ascii=False).encode("utf-8"))
    request.finish()


class _Async(resource.Resource):
    """A JSON endpoint whose answer comes from a coroutine; a client that
    went away gets nothing written."""

    isLeaf = True

    def answer(self, request: server.Request, work: Awaitable[tuple[int, dict[str, Any]]]) -> int:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        async def run() -> None:
            try:
                status, body = await work
            except Exception:
                log.failure("chat pane request {path}", path=request.path)
                status, body = 500, {"error": "internal error"}
            if not gone:
                _json(request, status, body)

        defer.ensureDeferred(run())
        return server.NOT_DONE_YET


class PaneConfig(resource.Resource):
    """``GET /chat/config.json``."""

    isLeaf = True
    allowedMethods = (b"GET",)

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.body = json.dumps({
            "bosh": settings.http.bosh_path,
            # XMPP over WebSocket (RFC 7395) on this origin, preferred to BOSH when it opens
            "websocket": settings.http.websocket_path or None,
            "history": "/history",
            "tokens": bool(settings.webmail.token_secret),
            "token_lifetime": settings.webmail.token_lifetime,
            # where the pane's attachments go and which URLs are this server's files (XEP-0363)
            "upload": {"path": settings.upload.http_path, "base": settings.upload.base_url}
            if settings.upload.enabled else None,
        }).encode()

    def render_GET(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        return self.body


class TokenRenewal(_Async):
    """``POST /chat/token``: a new login token for the authenticated user."""

    allowedMethods = (b"POST",)

    def __init__(self, settings: Settings, authenticate: Authenticate) -> None:
        super().__init__()
        self.settings = settings
        self.authenticate = authenticate

    def render_POST(self, request: server.Request) -> int:
        return self.answer(request, self._renew(request))

    async def _renew(self, request: server.Request) -> tuple[int, dict[str, Any]]:
        webmail = self.settings.webmail
        try:
            user = await signed_in(self.settings, self.authenticate, request)
        except HTTPError as e:
            return e.status, {"error": e.message}
        if not webmail.token_secret:
            return 409, {"error": "login tokens are off ([webmail] token_secret)"}
        secret = webmail.token_secret.encode()
        _, password = basic_credentials(request)
        try:
            if looks_like_token(password):  # accepted just now: only its sign-in time is read here
                claims = verify(secret, password, user)
                token, expires = renew(secret, claims, webmail.token_lifetime, webmail.token_max_age)
            else:  # a password: a fresh sign-in
                token, expires = mint(secret, user, webmail.token_lifetime)
        except TokenError as e:
            return 401, {"error": str(e)}
        log.debug("chat pane token for {user}", user=user)
        return 200, {"token": token, "expires": expires}


async def signed_in(settings: Settings, authenticate: Authenticate, request: server.Request) -> str:
    """The user whose HTTP Basic credentials the request carries (*authenticate*:
    the history API's check, throttled by the client's address), or HTTPError;
    403 over an unencrypted connection when ``[xmpp] require_encryption``."""
    if settings.xmpp.require_encryption and not peer_of(request, settings.http.trusted_proxies).secure:
        raise HTTPError(403, "use HTTPS")
    return await authenticate(request)


class ChatLink(_Async):
    """``GET /api/sites/<host>/chat?user=<jid>``: the site's setting to
    anyone; the per-user decision to the user's own credentials."""

    allowedMethods = (b"GET",)

    def __init__(self, settings: Settings, directory: IDirectory, authenticate: Authenticate, host: str) -> None:
        super().__init__()
        self.settings = settings
        self.directory = directory
        self.authenticate = authenticate
        self.host = host

    def render_GET(self, request: server.Request) -> int:
        return self.answer(request, self._ask(request))

    async def _ask(self, request: server.Request) -> tuple[int, dict[str, Any]]:
        users = (request.args or {}).get(b"user", [])
        try:
            if not users or not users[0]:
                raise AdminError("missing field 'user'", "user")
            site = await ops.site(self.directory, self.host)
            localpart, domain = ops.address(users[0].decode("utf-8", "replace"), "user")
            if request.getHeader(b"authorization") is None:  # a stranger: nothing about the address
                return 200, {"show": site.show_chat_link}
            user = await signed_in(self.settings, self.authenticate, request)
            if user != f"{localpart}@{domain}":
                raise AdminError("user: not the signed-in user", "user", 403)
            show, _ = await ops.chat_link(self.directory, site.host, user)
        except HTTPError as e:
            return e.status, {"error": e.message}
        except AdminError as e:
            return e.status, {"error": str(e), "field": e.field}
        except DirectoryError as e:
            error = ops.refused(e)
            return error.status, {"error": str(error), "field": error.field}
        return 200, {"show": show}


class _Sites(resource.Resource):
    """``/api/sites/<host>/chat`` and nothing else below ``/api/sites``."""

    def __init__(self, pane: ChatPane) -> None:
        super().__init__()
        self.pane = pane

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        site = Folder()
        if path:
            pane = self.pane
            link = ChatLink(pane.settings, pane.directory, pane.authenticate, path.decode("utf-8", "replace"))
            site.putChild(b"chat", Endpoint(link, pane.settings.http.cors_origins))
        return site

    def render(self, request: server.Request) -> bytes:
        return resource.NoResource().render(request)


class ChatPane:
    """Everything the pane's pages reach on the web listener."""

    def __init__(self, settings: Settings, directory: IDirectory, authenticate: Authenticate,
                 static_folder: Path = STATIC) -> None:
        self.settings = settings
        self.directory = directory
        self.authenticate = authenticate
        self.static_folder = static_folder

    def mount(self, root: Folder) -> None:
        """Serve the pane at :data:`PATH` and the chat-link answer below ``/api/sites``."""
        origins = self.settings.http.cors_origins
        if not VENDOR.exists() and self.static_folder == STATIC:
            log.warn("the chat pane has no Strophe.js ({path}): run `make pane`", path=str(VENDOR))
        files = PaneFiles(str(self.static_folder))
        files.policy = content_security_policy(origins)
        files.putChild(b"config.json", Endpoint(PaneConfig(self.settings), ()))
        files.putChild(b"token", Endpoint(TokenRenewal(self.settings, self.authenticate), ()))
        root.mount(PATH, files)
        root.mount("/api/sites", _Sites(self))
