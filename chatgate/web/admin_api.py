"""The admin HTTP API: what ``chatgate-admin`` does, as JSON over HTTP.

It listens on its own port (``[admin]``, 127.0.0.1 by default) and answers only
requests bearing ``Authorization: Bearer <[admin] api_key>``, compared in
constant time. Every operation is the command line's own
(:mod:`chatgate.admin.operations`), with the same checks; a refusal is
``{"error": "<one line>", "field": "<the bad field or null>"}`` with 400 (bad
input), 401 (no or wrong key), 404 (unknown), 405, 409 (taken) or 415.

    GET    /api/domains                        [{"name", "chat_enabled"}]
    POST   /api/domains                        {"name"}
    PATCH  /api/domains/<domain>               {"chat_enabled"?: true|false, "retention_days"?: N|null}
    GET    /api/domains/<domain>/holds         [{"target", "by", "at", "reason"}]  (legal holds)
    GET    /api/domains/<domain>/history?q=<words>[&user=<jid>][&with=<jid>][&since=<time>][&until=<time>]
           [&max=<1..500>][&before=<next>]  {"messages": [{"id", "archive", "from", "to", "at", "body"}], "next"}
           (the domain's history searched: chatgate.admin.search; 501 on the Redis archive)
    PUT    /api/holds/<jid or domain>          {"reason"?, "by"?}  -> the hold
    DELETE /api/holds/<jid or domain>
    GET    /api/domains/<domain>/users         [{"jid", "name", "title", "department", "phone"}]
    GET    /api/domains/<domain>/aliases       [{"jid", "name", "members"}]
    POST   /api/users                          {"jid", "password", "name"?, "title"?, "department"?, "phone"?}
    PUT    /api/users/<jid>/password           {"password"}
    DELETE /api/users/<jid>
    GET    /api/aliases/<jid>
    POST   /api/aliases/<jid>/members          {"members": [jid...], "name"?}  (creates the alias if new)
    DELETE /api/aliases/<jid>/members          {"members": [jid...]}
    DELETE /api/aliases/<jid>
    GET    /api/domains/<domain>/rooms         [{"jid", "kind", "enabled", "name"}]  (team rooms)
    PATCH  /api/rooms/<room>                   {"enabled"?, "name"?}  (<room>: everyone@example.com)
    GET    /api/sites                          [{"host", "owner", "show_chat_link"}]
    PUT    /api/sites/<host>                   {"owner"?, "show_chat_link"?}
    DELETE /api/sites/<host>
    GET    /api/sites/<host>/chat?user=<jid>   {"show", "reason"}
    POST   /api/tokens                         {"user", "lifetime"?}  -> {"token", "expires"}
    POST   /api/drain                          202 {"draining": true}: this node stops gracefully

Each change that succeeds is one ``admin-change`` event in the server's log
(:mod:`chatgate.admin.audit`): its operation, target and the caller's client
address. A call with a missing or wrong key is logged with the caller's address.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from chatgate.admin import audit, search
from chatgate.admin import operations as ops
from chatgate.admin.operations import AdminError
from chatgate.config import Settings
from chatgate.storage import Stores
from chatgate.storage.interfaces import (
    Alias,
    ArchiveError,
    DirectoryError,
    IDirectory,
    RoomRecord,
    SearchUnavailable,
    Site,
    User,
)

log = Logger()

MAX_BODY = 65536

Handler = Callable[..., Awaitable[tuple[int, Any]]]


def _user_json(user: User) -> dict[str, str]:
    return {"jid": user.jid, "name": user.name, "title": user.title, "department": user.department,
            "phone": user.phone}


def _alias_json(alias: Alias) -> dict[str, Any]:
    return {"jid": alias.jid, "name": alias.name, "members": [f"{m}@{alias.domain}" for m in alias.members]}


def _site_json(site: Site) -> dict[str, Any]:
    return {"host": site.host, "owner": site.owner, "show_chat_link": site.show_chat_link}


def _field(body: dict[str, Any], name: str, kind: type, required: bool = True, default: Any = None) -> Any:
    if name not in body:
        if required:
            raise AdminError(f"missing field {name!r}", name)
        return default
    value = body[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise AdminError(f"field {name!r} must be {'a list' if kind is list else kind.__name__}", name)
    return value


def _caller(request: server.Request) -> str:
    return str(getattr(request.getClientAddress(), "host", "?"))


class AdminAPI(resource.Resource):
    """One resource for the whole API: routes by method and path."""

    isLeaf = True

    def __init__(self, directory: IDirectory, settings: Settings,
                 drain: Callable[[], None] | None = None, history: Stores | None = None) -> None:
        super().__init__()
        #: the archive, offline and upload stores a removed user's history is erased from
        self.history = history
        #: stops this node gracefully (POST /api/drain)
        self.drain_node = drain
        self.directory = directory
        self.settings = settings
        self.key = settings.admin.api_key.encode()
        # (method, path pattern) -> handler; "*" matches one path segment, passed as an argument
        self.routes: dict[tuple[bytes, tuple[str, ...]], Handler] = {
            (b"GET", ("domains",)): self.domains,
            (b"POST", ("domains",)): self.add_domain,
            (b"PATCH", ("domains", "*")): self.patch_domain,
            (b"GET", ("domains", "*", "users")): self.users,
            (b"GET", ("domains", "*", "aliases")): self.aliases,
            (b"GET", ("domains", "*", "rooms")): self.rooms,
            (b"PATCH", ("rooms", "*")): self.patch_room,
            (b"POST", ("users",)): self.add_user,
            (b"PUT", ("users", "*", "password")): self.set_password,
            (b"DELETE", ("users", "*")): self.remove_user,
            (b"GET", ("aliases", "*")): self.alias,
            (b"POST", ("aliases", "*", "members")): self.add_members,
            (b"DELETE", ("aliases", "*", "members")): self.remove_members,
            (b"DELETE", ("aliases", "*")): self.remove_alias,
            (b"GET", ("sites",)): self.sites,
            (b"PUT", ("sites", "*")): self.put_site,
            (b"DELETE", ("sites", "*")): self.remove_site,
            (b"GET", ("sites", "*", "chat")): self.chat_link,
            (b"POST", ("tokens",)): self.token,
            (b"POST", ("drain",)): self.drain,
            (b"GET", ("domains", "*", "holds")): self.holds,
            (b"PUT", ("holds", "*")): self.put_hold,
            (b"DELETE", ("holds", "*")): self.remove_hold,
            (b"GET", ("domains", "*", "history")): self.search_history,
        }
        #: the handlers that change something -> (path arguments, body) -> (audit operation, target)
        self.changes: dict[Handler, Callable[[list[str], dict[str, Any]], tuple[str, str]]] = {
            self.add_domain: lambda args, body: ("domain.add", body["name"]),
            self.patch_domain: lambda args, body: (
                ("domain.enable" if body["chat_enabled"] else "domain.disable") if "chat_enabled" in body
                else "domain.set", args[0]),
            self.add_user: lambda args, body: ("user.add", body["jid"]),
            self.set_password: lambda args, body: ("user.passwd", args[0]),
            self.remove_user: lambda args, body: ("user.remove", args[0]),
            self.add_members: lambda args, body: ("alias.add", args[0]),
            self.remove_members: lambda args, body: ("alias.remove", args[0]),
            self.remove_alias: lambda args, body: ("alias.remove", args[0]),
            self.patch_room: lambda args, body: ("room.set", args[0]),
            self.put_site: lambda args, body: ("site.put", args[0]),
            self.remove_site: lambda args, body: ("site.remove", args[0]),
            self.token: lambda args, body: ("token.mint", body["user"]),
            self.drain: lambda args, body: ("node.drain", "-"),
            self.put_hold: lambda args, body: ("hold.add", args[0]),
            self.remove_hold: lambda args, body: ("hold.remove", args[0]),
            # not a change, but reading people's messages is accounted for the same way
            self.search_history: lambda args, body: ("history.search", body.get("user") or args[0]),
        }

    # -- HTTP plumbing

    def render(self, request: server.Request) -> bytes | int:
        request.setHeader(b"content-type", b"application/json; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        d = defer.ensureDeferred(self._answer(request))
        d.addCallback(self._write, request)
        d.addErrback(self._crashed, request)
        return server.NOT_DONE_YET

    async def _answer(self, request: server.Request) -> tuple[int, Any]:
        try:
            if not self._authorized(request):
                log.info("refused admin API call {method} {path} from {caller}: missing or wrong key",
                         method=request.method.decode("ascii", "replace"),
                         path=request.path.decode("ascii", "replace"), caller=_caller(request))
                request.setHeader(b"www-authenticate", b'Bearer realm="chatgate admin"')
                raise AdminError("missing or wrong admin key (Authorization: Bearer ...)", None, 401)
            handler, args = self._route(request)
            body = self._body(request)
            answer = await handler(*args, body)
            if handler in self.changes and answer[0] < 300:
                operation, target = self.changes[handler](args, body)
                audit.record(operation, audit.target(target), _caller(request), "api")
            return answer
        except AdminError as e:
            return e.status, {"error": str(e), "field": e.field}
        except DirectoryError as e:
            error = ops.refused(e)
            return error.status, {"error": str(error), "field": error.field}

    def _authorized(self, request: server.Request) -> bool:
        given = request.getHeader(b"authorization") or b""
        scheme, _, key = given.partition(b" ")
        # compare_digest over equal-length digests: constant time whatever is sent
        return bool(self.key) and scheme.lower() == b"bearer" and hmac.compare_digest(
            hmac.new(b"k", key.strip(), "sha256").digest(), hmac.new(b"k", self.key, "sha256").digest()
        )

    def _route(self, request: server.Request) -> tuple[Handler, list[str]]:
        parts = [unquote(p.decode("utf-8", "replace")) for p in request.path.split(b"/") if p]
        if parts[:1] != ["api"]:
            raise AdminError("no such endpoint", None, 404)
        parts = parts[1:]
        known_path = False
        for (method, pattern), handler in self.routes.items():
            if len(pattern) == len(parts) and all(p in ("*", v) for p, v in zip(pattern, parts, strict=True)):
                known_path = True
                if method == request.method:
                    return handler, [v for p, v in zip(pattern, parts, strict=True) if p == "*"]
        if known_path:
            raise AdminError(f"method {request.method.decode()} not allowed here", None, 405)
        raise AdminError("no such endpoint", None, 404)

    def _body(self, request: server.Request) -> dict[str, Any]:
        """The JSON object sent; for a GET, the query string's arguments."""
        if request.method == b"GET":
            return {k.decode("utf-8", "replace"): v[0].decode("utf-8", "replace") for k, v in request.args.items()}
        data = request.content.read(MAX_BODY + 1)
        if request.method == b"DELETE" and not data:
            return {}
        if len(data) > MAX_BODY:
            raise AdminError(f"the body is over {MAX_BODY} bytes", None, 413)
        kind = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
        if kind != b"application/json":
            raise AdminError("send JSON (Content-Type: application/json)", None, 415)
        try:
            body = json.loads(data or b"{}")
        except ValueError as e:
            raise AdminError(f"the body is not JSON: {e}") from None
        if not isinstance(body, dict):
            raise AdminError("the body must be a JSON object")
        return body

    def _write(self, answer: tuple[int, Any], request: server.Request) -> None:
        status, payload = answer
        request.setResponseCode(status)
        if status != 204:
            request.write(json.dumps(payload).encode() + b"\n")
        request.finish()

    def _crashed(self, failure: Any, request: server.Request) -> None:
        log.failure("admin API {method} {path}", failure, method=request.method, path=request.path)
        self._write((500, {"error": "internal error; see the server log", "field": None}), request)

    # -- domains and users

    async def domains(self, body: dict[str, Any]) -> tuple[int, Any]:
        return 200, [{"name": d.name, "chat_enabled": d.chat_enabled} for d in await self.directory.domains()]

    async def add_domain(self, body: dict[str, Any]) -> tuple[int, Any]:
        domain = await ops.add_domain(self.directory, _field(body, "name", str))
        return 201, {"name": domain.name, "chat_enabled": domain.chat_enabled}

    async def patch_domain(self, name: str, body: dict[str, Any]) -> tuple[int, Any]:
        if "chat_enabled" not in body and "retention_days" not in body:
            raise AdminError("give chat_enabled or retention_days", "chat_enabled")
        answer: dict[str, Any] = {"name": ops.domain_name(name)}
        if "retention_days" in body:
            await ops.set_retention(self.directory, name, body["retention_days"])
            answer["retention_days"] = body["retention_days"]
        if "chat_enabled" in body:
            answer["chat_enabled"] = _field(body, "chat_enabled", bool)
            await ops.set_chat(self.directory, name, answer["chat_enabled"])
        return 200, answer

    async def holds(self, domain: str, body: dict[str, Any]) -> tuple[int, Any]:
        return 200, [{"target": h.target, "by": h.by, "at": h.at, "reason": h.reason}
                     for h in await self.directory.holds(ops.domain_name(domain))]

    async def put_hold(self, target: str, body: dict[str, Any]) -> tuple[int, Any]:
        reason = body.get("reason", "")
        if not isinstance(reason, str):
            raise AdminError("field 'reason' must be a str", "reason")
        by = body.get("by", "api")
        if not isinstance(by, str) or not by.strip():
            raise AdminError("field 'by' must name who sets the hold", "by")
        hold = await ops.put_hold(self.directory, target, by.strip(), reason, time.time())
        return 200, {"target": hold.target, "by": hold.by, "at": hold.at, "reason": hold.reason}

    async def remove_hold(self, target: str, body: dict[str, Any]) -> tuple[int, Any]:
        done = await ops.remove_hold(self.directory, target, self.history)
        log.info("legal hold on {target} {done}", target=target, done=done)
        return 204, None

    async def search_history(self, domain: str, body: dict[str, Any]) -> tuple[int, Any]:
        if self.history is None:
            raise AdminError("this node has no history to search", None, 503)
        if not body.get("q", "").strip() and not body.get("user"):
            raise AdminError("give q (words to search for), or user to read one archive", "q")
        try:
            limit = int(body.get("max", search.DEFAULT_PAGE))
        except ValueError:
            raise AdminError("max must be a whole number", "max") from None
        try:
            hits = await search.search(
                self.history.archive, self.directory, self.settings, domain, text=body.get("q"),
                user=body.get("user"), contact=body.get("with"),
                start=search.parse_time(body["since"], "since") if body.get("since") else None,
                end=search.parse_time(body["until"], "until", end=True) if body.get("until") else None,
                before=body.get("before"), max=limit)
        except SearchUnavailable as e:
            raise AdminError(str(e), "q", 501) from None
        except ArchiveError as e:
            raise AdminError(f"cannot search: {e}", None, 503) from None
        return 200, search.page_json(hits)

    async def users(self, domain: str, body: dict[str, Any]) -> tuple[int, Any]:
        return 200, [_user_json(u) for u in await self.directory.users(ops.domain_name(domain))]

    async def aliases(self, domain: str, body: dict[str, Any]) -> tuple[int, Any]:
        return 200, [_alias_json(a) for a in await self.directory.aliases(ops.domain_name(domain))]

    async def rooms(self, domain: str, body: dict[str, Any]) -> tuple[int, Any]:
        listed = await ops.rooms(self.directory, self.settings, domain)
        return 200, [self._room_json(room, kind) for room, kind in listed]

    async def patch_room(self, jid: str, body: dict[str, Any]) -> tuple[int, Any]:
        enabled, name = _field(body, "enabled", bool, False), _field(body, "name", str, False)
        room = await ops.put_room(self.directory, self.settings, jid, enabled, name)
        return 200, self._room_json(room, "alias" if room.localpart != self.settings.muc.domain_room else "domain")

    def _room_json(self, room: RoomRecord, kind: str) -> dict[str, Any]:
        return {"jid": f"{room.localpart}@{self.settings.muc.subdomain}.{room.domain}", "kind": kind,
                "enabled": room.enabled, "name": room.name}

    async def add_user(self, body: dict[str, Any]) -> tuple[int, Any]:
        localpart, domain = ops.address(_field(body, "jid", str))
        details = {k: _field(body, k, str, False, "") for k in ("name", "title", "department", "phone")}
        user = ops.user_record(localpart, domain, **details)
        credentials = await ops.credentials_off_thread(_field(body, "password", str), self.settings)
        await ops.check_address_free(self.directory, domain, localpart)
        await self.directory.add_user(user, credentials)
        return 201, _user_json(user)

    async def set_password(self, jid: str, body: dict[str, Any]) -> tuple[int, Any]:
        localpart, domain = ops.address(jid)
        credentials = await ops.credentials_off_thread(_field(body, "password", str), self.settings)
        await self.directory.set_credentials(domain, localpart, credentials)
        return 204, None

    async def remove_user(self, jid: str, body: dict[str, Any]) -> tuple[int, Any]:
        localpart, domain = ops.address(jid)
        done = await ops.remove_user(self.directory, domain, localpart, self.history)
        log.info("removed user {jid}: {done}", jid=f"{localpart}@{domain}", done=done)
        return 204, None

    # -- aliases

    async def alias(self, jid: str, body: dict[str, Any]) -> tuple[int, Any]:
        return 200, _alias_json(await ops.alias(self.directory, jid))

    async def add_members(self, jid: str, body: dict[str, Any]) -> tuple[int, Any]:
        members = _field(body, "members", list)
        if not all(isinstance(m, str) for m in members):
            raise AdminError("field 'members' must be a list of addresses", "members")
        alias = await ops.add_alias_members(self.directory, jid, members, _field(body, "name", str, False))
        return 200, _alias_json(alias)

    async def remove_members(self, jid: str, body: dict[str, Any]) -> tuple[int, Any]:
        members = _field(body, "members", list)
        if not members or not all(isinstance(m, str) for m in members):
            raise AdminError("field 'members' must be a non-empty list of addresses", "members")
        return 200, _alias_json(await ops.remove_alias_members(self.directory, jid, members))

    async def remove_alias(self, jid: str, body: dict[str, Any]) -> tuple[int, Any]:
        await ops.remove_alias_members(self.directory, jid, [])
        return 204, None

    # -- sites and tokens

    async def sites(self, body: dict[str, Any]) -> tuple[int, Any]:
        return 200, [_site_json(s) for s in await self.directory.sites()]

    async def put_site(self, host: str, body: dict[str, Any]) -> tuple[int, Any]:
        site = await ops.put_site(self.directory, host, _field(body, "owner", str, False),
                                  _field(body, "show_chat_link", bool, False))
        return 200, _site_json(site)

    async def remove_site(self, host: str, body: dict[str, Any]) -> tuple[int, Any]:
        await self.directory.remove_site(ops.domain_name(host, "host"))
        return 204, None

    async def chat_link(self, host: str, body: dict[str, Any]) -> tuple[int, Any]:
        show, reason = await ops.chat_link(self.directory, host, _field(body, "user", str))
        return 200, {"show": show, "reason": reason}

    async def drain(self, body: dict[str, Any]) -> tuple[int, Any]:
        if self.drain_node is None:
            raise AdminError("this node cannot be drained from here", None, 409)
        self.drain_node()
        return 202, {"draining": True}

    async def token(self, body: dict[str, Any]) -> tuple[int, Any]:
        lifetime = body.get("lifetime")
        if lifetime is not None and (not isinstance(lifetime, (int, float)) or isinstance(lifetime, bool)):
            raise AdminError("field 'lifetime' must be a number of seconds", "lifetime")
        token, expires = await ops.token(self.directory, self.settings, _field(body, "user", str), lifetime)
        return 201, {"token": token, "expires": expires}
