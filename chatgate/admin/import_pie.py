"""``chatgate-admin import FILE``: a XEP-0227 document into chatgate's stores.

The file is read twice, a chunk at a time, by expat with no DOCTYPE, entity
declaration, comment or processing instruction allowed (the rules of
:mod:`chatgate.xml`: no entity can be expanded, a billion-laughs file is
refused at its DOCTYPE), so a file of millions of messages never sits in
memory. The first reading checks the whole file and names every host and user
in it: nothing is written unless every user can be (a valid address, credentials,
not an existing user or alias unless ``--merge``, no legal hold on the address).
The second writes, per user:

- the account: the SCRAM keys of ``<scram-credentials xmlns='urn:xmpp:pie:0#scram'>``
  for the mechanisms chatgate offers, else keys derived from a ``password``
  attribute (with ``--merge`` an existing user keeps their own);
- the vCard (``vcard-temp``) and the private XML (``jabber:iq:private``, one key
  per child element);
- the offline messages (``<offline-messages>``), dated by their XEP-0203 delay;
- the archive (``<archive xmlns='urn:xmpp:pie:0#mam'>``, XEP-0313 results):
  into this user's archive only, each with its time (the forwarded delay) and
  its id when it is a chatgate archive id of that time, else a new id of that
  time (a microsecond apart for messages of the same time, so they keep the
  file's order: Prosody dates to the second); the message's stanza-id is chatgate's. Archive ids are unique per owner,
  so importing the same file again (``--merge``) adds no second copy of a message
  that kept its id.

The roster is not imported: a chatgate roster is the domain's users.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import pyexpat
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

from twisted.words.protocols.jabber.jid import InvalidFormat
from twisted.words.xish import domish

from chatgate.admin import operations as ops
from chatgate.admin.export import DELAY_NS, FORWARD_NS, MAM_NS, PIE_MAM_NS, PIE_NS, SCRAM_NS
from chatgate.admin.operations import AdminError
from chatgate.auth.credentials import MECHANISMS
from chatgate.config import Settings
from chatgate.features.private_storage import MAX_ELEMENTS
from chatgate.jid import jid_of
from chatgate.stanza import CLIENT_NS, body_of, parse_stamp
from chatgate.storage import Stores
from chatgate.storage.archive import micros, time_of
from chatgate.storage.interfaces import (
    ArchivedMessage,
    ArchiveError,
    Credentials,
    IDirectory,
    OfflineMessage,
    ScramKeys,
    User,
)
from chatgate.xml import Element, serialize

SID_NS = "urn:xmpp:sid:0"
#: bytes read at a time
CHUNK = 1 << 16
#: archived messages written at a time
BATCH = 500
_SEPARATOR = "\x1f"


class PieImportError(AdminError):
    """The file cannot be imported; the message is one line."""


def add_commands(topics: argparse._SubParsersAction) -> None:
    command = topics.add_parser("import", help="domains, users and their history from a XEP-0227 file")
    command.add_argument("file", metavar="FILE.xml")
    command.add_argument("--merge", action="store_true",
                         help="add the file's data to users that exist (their password is kept)")
    command.set_defaults(prepare=_prepare, action="import")


def _prepare(args: argparse.Namespace, settings: Settings) -> Callable[[IDirectory], Awaitable[None]]:
    path = args.file
    plan = survey(path)  # the whole file checked before the store is opened

    async def job(directory: IDirectory) -> None:
        from chatgate.admin.cli import _close_history, _open_history  # the same stores user remove opens

        await check(directory, plan, args.merge, path)
        history = await _open_history(settings, directory)
        try:
            print(await write(directory, history, settings, path, args.merge))
        except ArchiveError as e:
            raise PieImportError(f"{path}: cannot write the archive: {e}") from None
        finally:
            await _close_history(history)

    return job


# -- reading: expat, restricted, element by element


class _Reader:
    """Builds the elements of a XEP-0227 file and hands out, as they end, each child
    of a <user> (and each archived result and offline message on its own), so that
    only one of them is in memory at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.events: list[tuple] = []
        self._open: list[domish.Element] = []
        parser = pyexpat.ParserCreate("UTF-8", _SEPARATOR)
        parser.SetParamEntityParsing(pyexpat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.buffer_text = True
        for handler, what in (("StartDoctypeDeclHandler", "a DOCTYPE"),
                              ("EntityDeclHandler", "an entity declaration"),
                              ("ProcessingInstructionHandler", "a processing instruction"),
                              ("ExternalEntityRefHandler", "an external entity")):
            setattr(parser, handler, self._forbid(what))
        parser.XmlDeclHandler = self._declaration
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._text
        self._parser = parser

    def _forbid(self, what: str) -> Callable[..., None]:
        def refuse(*args: object) -> None:
            raise PieImportError(f"{self.path}: {what} is not allowed in an import file (line "
                               f"{self._parser.CurrentLineNumber})")
        return refuse

    def _declaration(self, version: str, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.lower() != "utf-8":
            raise PieImportError(f"{self.path}: encoding {encoding}: only UTF-8 is read")

    def _start(self, name: str, attributes: dict[str, str]) -> None:
        uri, _, local = name.rpartition(_SEPARATOR)
        attrs = {}
        for key, value in attributes.items():
            a_uri, _, a_local = key.rpartition(_SEPARATOR)
            attrs[(a_uri, a_local) if a_uri else a_local] = value
        depth = len(self._open)
        if depth > 64:
            raise PieImportError(f"{self.path}: elements nested deeper than 64 (line {self._parser.CurrentLineNumber})")
        element = Element((uri, local), uri, attrs)
        if depth == 0:
            if (uri, local) != (PIE_NS, "server-data"):
                raise PieImportError(f"{self.path}: not a XEP-0227 file "
                                     f"(the root is not <server-data xmlns='{PIE_NS}'>)")
        elif depth == 1:
            if (uri, local) == (PIE_NS, "host"):
                self.events.append(("host", attrs.get("jid", ""), self._parser.CurrentLineNumber))
        elif depth == 2 and (uri, local) == (PIE_NS, "user"):
            self.events.append(("user", attrs.get("name", ""), attrs.get("password"), self._parser.CurrentLineNumber))
        elif depth >= 5 or (depth == 4 and not self._container()):
            self._open[-1].addChild(element)  # user children, archived results and offline messages: alone
        self._open.append(element)

    def _end(self, name: str) -> None:
        element = self._open.pop()
        depth = len(self._open)
        if depth == 2 and element.name == "user":
            self.events.append(("end",))
        elif depth == 3 and element.uri != PIE_MAM_NS and element.name != "offline-messages":
            self.events.append(("child", element))
        elif depth == 4 and self._open[3].uri == PIE_MAM_NS:
            self.events.append(("archived", element, self._parser.CurrentLineNumber))
        elif depth == 4 and self._open[3].name == "offline-messages":
            self.events.append(("offline", element, self._parser.CurrentLineNumber))
        elif depth == 4:
            return

    def _container(self) -> bool:
        """The user child open is the archive or the offline messages (handed out one by one)."""
        child = self._open[3]
        return child.uri == PIE_MAM_NS or child.name == "offline-messages"

    def _text(self, data: str) -> None:
        if len(self._open) >= 5 or (len(self._open) == 4 and not self._container()):
            self._open[-1].addContent(data)

    def read(self) -> Iterator[list[tuple]]:
        """The events of each chunk of the file."""
        try:
            with open(self.path, "rb") as f:
                while chunk := f.read(CHUNK):
                    self._parser.Parse(chunk, False)
                    yield self._take()
                self._parser.Parse(b"", True)
                yield self._take()
        except OSError as e:
            raise PieImportError(f"{self.path}: cannot read the file: {e.strerror}") from None
        except pyexpat.ExpatError as e:
            raise PieImportError(f"{self.path}: not well-formed XML: {e}") from None

    def _take(self) -> list[tuple]:
        events, self.events = self.events, []
        return events


@dataclass
class Plan:
    """What the first reading found: every host and its users' addresses, with credentials or not."""

    hosts: dict[str, dict[str, int]] = field(default_factory=dict)  # domain -> localpart -> line
    users: int = 0


def survey(path: str) -> Plan:
    """Read the whole file once: well-formed, restricted, every address valid and with credentials."""
    plan = Plan()
    domain = ""
    user: tuple[str, int] | None = None
    credentialed = False
    for events in _Reader(path).read():
        for event in events:
            if event[0] == "host":
                domain = _domain(path, event[1], event[2])
                plan.hosts.setdefault(domain, {})
            elif event[0] == "user":
                if not domain:
                    raise PieImportError(f"{path} line {event[3]}: a <user> outside a <host>")
                localpart = _localpart(path, event[1], domain, event[3])
                if localpart in plan.hosts[domain]:
                    raise PieImportError(f"{path} line {event[3]}: {localpart}@{domain} is in the file twice")
                plan.hosts[domain][localpart] = event[3]
                user, credentialed = (localpart, event[3]), bool(event[2])
            elif event[0] == "child":
                element = event[1]
                if (element.uri, element.name) == (SCRAM_NS, "scram-credentials"):
                    credentialed = credentialed or scram_keys(path, element) is not None
            elif event[0] == "archived":
                archived(path, "x@y", event[1], event[2])  # well-formed result, checked early
            elif event[0] == "end":
                if user is not None and not credentialed:
                    raise PieImportError(f"{path} line {user[1]}: {user[0]}@{domain} has no password nor "
                                       f"SCRAM keys for {' or '.join(MECHANISMS)}")
                plan.users += 1
                user = None
    if not plan.users:
        raise PieImportError(f"{path}: no users in the file")
    return plan


def _domain(path: str, text: str, line: int) -> str:
    try:
        return ops.domain_name(text)
    except AdminError as e:
        raise PieImportError(f"{path} line {line}: host: {e}") from None


def _localpart(path: str, name: str, domain: str, line: int) -> str:
    try:
        return ops.address(f"{name}@{domain}")[0]
    except AdminError as e:
        raise PieImportError(f"{path} line {line}: user {name!r}: {e}") from None


def _text_of(element: domish.Element, name: str) -> str:
    for child in element.elements():
        if child.name == name:
            return str(child).strip()
    return ""


def scram_keys(path: str, element: domish.Element) -> tuple[str, ScramKeys] | None:
    """(mechanism, keys) of a <scram-credentials/>, None for a mechanism chatgate does not offer."""
    mechanism = element.getAttribute("mechanism", "")
    if mechanism not in MECHANISMS:
        return None
    try:
        keys = ScramKeys(base64.b64decode(_text_of(element, "salt"), validate=True),
                         base64.b64decode(_text_of(element, "stored-key"), validate=True),
                         base64.b64decode(_text_of(element, "server-key"), validate=True),
                         int(_text_of(element, "iter-count")))
    except (binascii.Error, ValueError):
        raise PieImportError(f"{path}: bad {mechanism} keys in a <scram-credentials>") from None
    if not keys.salt or not keys.stored_key or not keys.server_key or keys.iterations < 1:
        raise PieImportError(f"{path}: bad {mechanism} keys in a <scram-credentials>")
    return mechanism, keys


def archived(path: str, owner: str, result: domish.Element, line: int,
             last: list[int] | None = None) -> ArchivedMessage:
    """One XEP-0313 result of *owner*'s archive as chatgate keeps it.

    *last* is ``[time, n]`` of the previous new id (microseconds): messages of one
    time (a server that dates to the second) get new ids a microsecond apart, in the
    file's order, so they keep it."""
    if (result.uri, result.name) != (MAM_NS, "result"):
        raise PieImportError(f"{path} line {line}: an archive holds only <result xmlns='{MAM_NS}'>")
    forwarded = next(result.elements(FORWARD_NS, "forwarded"), None)
    delay = next(forwarded.elements(DELAY_NS, "delay"), None) if forwarded is not None else None
    message = next(forwarded.elements(CLIENT_NS, "message"), None) if forwarded is not None else None
    if delay is None or message is None:
        raise PieImportError(f"{path} line {line}: an archived result without its delay or message")
    try:
        at = parse_stamp(delay.getAttribute("stamp", ""))
        sender, addressee = jid_of(message.getAttribute("from", "")), jid_of(message.getAttribute("to", ""))
    except (ValueError, InvalidFormat, RuntimeError):
        raise PieImportError(f"{path} line {line}: an archived message without a valid stamp, from and to") from None
    outgoing = sender.userhost() == owner
    other = addressee if outgoing else sender
    archive_id = result.getAttribute("id", "")
    try:
        valid = abs(time_of(archive_id) - at) < 1
    except ValueError:
        valid = False
    if not valid:
        moment = micros(at)
        if last is not None:
            last[:] = [moment, last[1] + 1] if moment == last[0] else [moment, 0]
            moment += last[1]
        archive_id = f"{moment:014x}-{secrets.token_hex(5)}"
    for old in [c for c in message.elements() if (c.uri, c.name) == (SID_NS, "stanza-id")]:
        message.children.remove(old)  # the old server's ids
    mark = Element((SID_NS, "stanza-id"))
    mark["by"], mark["id"] = owner, archive_id
    message.addChild(mark)
    message.parent = None
    return ArchivedMessage(owner, archive_id, other.userhost(), other.resource or "", outgoing,
                           time_of(archive_id), body_of(message) or "",
                           serialize(message))


async def check(directory: IDirectory, plan: Plan, merge: bool, path: str) -> None:
    """Refuse, before anything is written, users that exist (unless *merge*) or addresses not free."""
    known = {domain.name for domain in await directory.domains()}
    for domain, users in plan.hosts.items():
        if domain not in known:
            continue
        for localpart, line in users.items():
            if await directory.user(domain, localpart) is not None:
                if not merge:
                    raise PieImportError(f"{path} line {line}: user already exists: {localpart}@{domain} "
                                       "(--merge adds the file's data to it)")
                continue
            try:
                await ops.check_address_free(directory, domain, localpart)
            except AdminError as e:
                raise PieImportError(f"{path} line {line}: {e}") from None


# -- writing


@dataclass
class _User:
    domain: str
    localpart: str
    password: str | None
    credentials: Credentials = field(default_factory=dict)
    exists: bool = False
    made: bool = False

    @property
    def jid(self) -> str:
        return f"{self.localpart}@{self.domain}"


async def write(directory: IDirectory, history: Stores, settings: Settings, path: str, merge: bool) -> str:
    known = {domain.name for domain in await directory.domains()}
    domain = ""
    user: _User | None = None
    counts = {"users": 0, "messages": 0, "offline": 0}
    batch: list[ArchivedMessage] = []
    last = [-1, 0]

    async def made(u: _User) -> None:
        """The account, once its credentials are known (before its first message)."""
        if u.made:
            return
        u.made = True
        if u.exists:
            return
        if not u.credentials:
            u.credentials = await ops.credentials_off_thread(u.password or "", settings)
        await directory.add_user(User(u.localpart, u.domain), u.credentials)

    for events in _Reader(path).read():
        for event in events:
            kind = event[0]
            if kind == "host":
                domain = ops.domain_name(event[1])
                if domain not in known:
                    await directory.add_domain(domain)
                    known.add(domain)
            elif kind == "user":
                localpart = ops.address(f"{event[1]}@{domain}")[0]
                user = _User(domain, localpart, event[2])
                last = [-1, 0]
                user.exists = merge and await directory.user(domain, localpart) is not None
            elif kind == "child" and user is not None:
                await _child(directory, user, event[1], path, made)
            elif kind == "archived" and user is not None:
                await made(user)
                batch.append(archived(path, user.jid, event[1], event[2], last))
                if len(batch) >= BATCH:
                    await history.archive.append(batch)
                    counts["messages"] += len(batch)
                    batch = []
            elif kind == "offline" and user is not None:
                await made(user)
                await history.offline.push(user.jid, _offline(event[1]), None)
                counts["offline"] += 1
            elif kind == "end" and user is not None:
                await made(user)
                counts["users"] += 1
                user = None
        if batch:
            await history.archive.append(batch)
            counts["messages"] += len(batch)
            batch = []
    n = counts["users"]
    return (f"imported {n} user{'' if n == 1 else 's'}, {counts['messages']} archived and "
            f"{counts['offline']} offline messages from {path}")


async def _child(directory: IDirectory, user: _User, element: domish.Element, path: str,
                 made: Callable[[_User], Awaitable[None]]) -> None:
    key = (element.uri, element.name)
    if key == (SCRAM_NS, "scram-credentials"):
        found = scram_keys(path, element)
        if found is not None and not user.exists:
            user.credentials[found[0]] = found[1]
            if user.made:  # keys after the archive: set them now
                await directory.set_credentials(user.domain, user.localpart, user.credentials)
        return
    if key == ("vcard-temp", "vCard"):
        await made(user)
        element.parent = None
        await directory.set_vcard(user.domain, user.localpart, serialize(element))
    elif key == ("jabber:iq:private", "query"):
        await made(user)
        for child in element.elements():
            child.parent = None
            await directory.set_private_xml(user.domain, user.localpart, f"{{{child.uri}}}{child.name}",
                                            serialize(child), MAX_ELEMENTS)


def _offline(message: domish.Element) -> OfflineMessage:
    at = time.time()
    for delay in list(message.elements(DELAY_NS, "delay")):
        try:
            at = parse_stamp(delay.getAttribute("stamp", ""))
        except ValueError:
            continue
        message.children.remove(delay)  # chatgate dates it again when it delivers it
        break
    message.parent = None
    return OfflineMessage(at, serialize(message))
