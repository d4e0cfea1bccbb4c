"""What an administrator can do, checked once, for both the command line and
the admin HTTP API.

Each operation validates its inputs (addresses per RFC 7622, passwords, host
names), then acts through IDirectory. A mistake raises :class:`AdminError`
naming the bad field in one line; the API turns its ``status`` into the HTTP
status code, the command line prints its message.
"""

from __future__ import annotations

import re
from dataclasses import replace

from twisted.internet import threads

from chatgate.auth.credentials import make_credentials
from chatgate.auth.tokens import TokenError, mint
from chatgate.config import Settings
from chatgate.jid import parse_domain, parse_user
from chatgate.stanza import stamp
from chatgate.storage import Stores
from chatgate.storage.interfaces import (
    Alias,
    Credentials,
    DirectoryError,
    Domain,
    DuplicateDomain,
    DuplicateUser,
    Hold,
    IDirectory,
    RoomRecord,
    Site,
    UnknownAlias,
    UnknownDomain,
    UnknownSite,
    UnknownUser,
    User,
)


class AdminError(Exception):
    """A refused request: one line, the field it is about, an HTTP status."""

    def __init__(self, message: str, field: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        self.status = status


_STATUS = {
    UnknownDomain: (404, "domain"),
    UnknownUser: (404, "user"),
    UnknownAlias: (404, "alias"),
    UnknownSite: (404, "site"),
    DuplicateDomain: (409, "domain"),
    DuplicateUser: (409, "jid"),
}


def refused(error: DirectoryError) -> AdminError:
    """The AdminError for a directory refusal (unknown: 404, taken: 409, else 500)."""
    status, field = _STATUS.get(type(error), (500, None))
    return AdminError(str(error), field, status)


# -- checking inputs


def domain_name(text: str, field: str = "domain") -> str:
    try:
        return parse_domain(text)
    except ValueError as e:
        raise AdminError(str(e), field) from None


def address(text: str, field: str = "jid") -> tuple[str, str]:
    """(localpart, domain) of a user or alias address."""
    try:
        return parse_user(text)
    except ValueError as e:
        raise AdminError(str(e), field) from None


def members(alias_domain: str, texts: list[str], field: str = "members") -> tuple[str, ...]:
    """Member localparts; every member must be of the alias's own domain."""
    result = []
    for text in texts:
        localpart, domain = address(text, field)
        if domain != alias_domain:
            raise AdminError(f"{localpart}@{domain} is not of the alias's domain {alias_domain}", field)
        result.append(localpart)
    return tuple(result)


def credentials(password: str, settings: Settings, field: str = "password") -> Credentials:
    """SCRAM keys for *password* (the password itself is never kept)."""
    if not password:
        raise AdminError("the password is empty", field)
    try:
        return make_credentials(password, settings.auth.scram_iterations)
    except ValueError as e:
        raise AdminError(str(e), field) from None


async def credentials_off_thread(password: str, settings: Settings) -> Credentials:
    """:func:`credentials`, with the key derivation off the reactor thread."""
    return await threads.deferToThread(credentials, password, settings)


# -- acting through the directory (DirectoryErrors pass through; see refused())


async def add_domain(directory: IDirectory, name: str) -> Domain:
    return await directory.add_domain(domain_name(name))


async def set_chat(directory: IDirectory, name: str, enabled: bool) -> None:
    await directory.set_chat_enabled(domain_name(name), enabled)


async def add_alias_members(directory: IDirectory, jid: str, texts: list[str], name: str | None) -> Alias:
    """Create the alias with these members, or add them to it (and rename it if *name*)."""
    localpart, domain = address(jid, "alias")
    new = members(domain, texts)
    current = await directory.alias(domain, localpart)
    if current is None:
        alias = Alias(localpart, domain, detail(name or "", "name"), new)
        await directory.add_alias(alias)
    else:
        alias = Alias(localpart, domain, current.name if name is None else detail(name, "name"),
                      current.members + new)
        await directory.set_alias(alias)
    return await directory.alias(domain, localpart)


async def remove_alias_members(directory: IDirectory, jid: str, texts: list[str]) -> Alias | None:
    """Remove these members, or the whole alias when none are named (then None)."""
    localpart, domain = address(jid, "alias")
    gone = members(domain, texts)
    if not gone:
        await directory.remove_alias(domain, localpart)
        return None
    current = await directory.alias(domain, localpart)
    if current is None:
        raise UnknownAlias(f"unknown alias: {localpart}@{domain}")
    strangers = [m for m in gone if m not in current.members]
    if strangers:
        raise AdminError(f"{strangers[0]}@{domain} is not a member of {localpart}@{domain}", "members")
    alias = Alias(localpart, domain, current.name, tuple(m for m in current.members if m not in gone))
    await directory.set_alias(alias)
    return alias


async def alias(directory: IDirectory, jid: str) -> Alias:
    localpart, domain = address(jid, "alias")
    found = await directory.alias(domain, localpart)
    if found is None:
        raise UnknownAlias(f"unknown alias: {localpart}@{domain}")
    return found


async def rooms(directory: IDirectory, settings: Settings, name: str) -> list[tuple[RoomRecord, str]]:
    """The team rooms of a domain (``[muc]``: the domain room, one per alias) with their
    records, and what each is: ``domain``, ``alias``, or ``gone`` for the record of an
    alias removed since."""
    domain = domain_name(name)
    records = {r.localpart: r for r in await directory.rooms(domain)}
    m = settings.muc
    listed = []
    if m.domain_room:
        listed.append((records.pop(m.domain_room, RoomRecord(domain, m.domain_room)), "domain"))
    if m.alias_rooms:
        for alias in await directory.aliases(domain):
            if alias.localpart != m.domain_room:
                listed.append((records.pop(alias.localpart, RoomRecord(domain, alias.localpart)), "alias"))
    listed += [(record, "made" if record.made else "gone") for record in records.values()]
    return listed


async def remove_user(directory: IDirectory, domain: str, localpart: str, history: Stores | None = None) -> str:
    """Remove a user, and take them off the rooms users made (the store takes them off
    its aliases): an address made again later is a stranger to them. With *history*
    (the archive, offline and upload stores), what the user kept there is erased too,
    unless a legal hold keeps it (:func:`erase_history`); what was done, in one line."""
    hold = await hold_on(directory, domain, localpart)
    await directory.remove_user(domain, localpart)
    for room in await directory.rooms(domain):
        if localpart in room.owners or localpart in room.members:
            await directory.put_room(replace(room, owners=tuple(o for o in room.owners if o != localpart),
                                             members=tuple(m for m in room.members if m != localpart)))
    if hold is not None:
        if not hold.localpart:  # the domain's hold: the address keeps a hold of its own (see add_user)
            await directory.put_hold(Hold(domain, localpart, hold.by, hold.at,
                                          f"removed while {domain} was on hold ({hold.reason})".strip()))
        return f"history kept: legal hold on {hold.target} by {hold.by} since {stamp(hold.at)}"
    if history is None:
        return "history not erased"
    return await erase_history(history, domain, localpart)


async def erase_history(history: Stores, domain: str, localpart: str) -> str:
    """Erase a removed user's archive, offline messages and uploads (XEP-0313's copies of the
    other parties stay theirs; so do rooms' archives): a re-created address starts empty."""
    bare = f"{localpart}@{domain}"
    messages = await history.archive.erase(bare)
    waiting = len(await history.offline.pop(bare))
    files = await history.files.erase(domain, localpart) if history.files is not None else 0
    return f"erased {messages} archived messages, {waiting} offline messages and {files} uploaded files"


async def hold_on(directory: IDirectory, domain: str, localpart: str) -> Hold | None:
    """The legal hold keeping the user's history (their own, else the domain's), if any."""
    holds = {h.localpart: h for h in await directory.holds(domain)}
    return holds.get(localpart) or holds.get("")


async def check_address_free(directory: IDirectory, domain: str, localpart: str) -> None:
    """Refuse to give someone an address whose previous owner's history a legal hold keeps."""
    hold = next((h for h in await directory.holds(domain) if h.localpart == localpart), None)
    if hold is not None:
        raise AdminError(f"{localpart}@{domain} is on legal hold (by {hold.by} since {stamp(hold.at)}): the"
                         " history kept under it would be the new user's; lift the hold first", "jid", 409)


async def set_retention(directory: IDirectory, domain: str, days: int | None) -> None:
    """A domain's own retention: days of history it keeps (0: always), None: the server's."""
    if days is not None and (isinstance(days, bool) or not isinstance(days, int) or days < 0):
        raise AdminError("retention days must be a whole number, 0 for always", "retention_days")
    await directory.set_retention(domain_name(domain), days)


async def put_hold(directory: IDirectory, target: str, by: str, reason: str, at: float) -> Hold:
    """Put a user (``alice@example.com``) or a whole domain (``example.com``) on legal hold."""
    if "@" in target:
        localpart, domain = address(target)
    else:
        localpart, domain = "", domain_name(target)
    hold = Hold(domain, localpart, by, at, reason.strip()[:500])
    await directory.put_hold(hold)
    return hold


async def remove_hold(directory: IDirectory, target: str, history: Stores | None = None) -> str:
    """Lift a legal hold. On the address of a user removed meanwhile, the erasure the hold
    held back happens now (with *history*); what was done, in one line."""
    localpart, domain = address(target) if "@" in target else ("", domain_name(target))
    if not await directory.remove_hold(domain, localpart):
        raise AdminError(f"no legal hold on {target}", "target", 404)
    if not localpart or await directory.user(domain, localpart) is not None:
        return "lifted"
    if history is None:
        return "lifted; the removed user's history is not erased"
    return "lifted; " + await erase_history(history, domain, localpart)


async def put_room(directory: IDirectory, settings: Settings, jid: str, enabled: bool | None = None,
                   name: str | None = None) -> RoomRecord:
    """Turn a team room on or off, or name it; *jid* is the room's name at its domain
    (``everyone@example.com``, ``sales@example.com`` for the alias's room)."""
    localpart, domain = address(jid, "room")
    for record, kind in await rooms(directory, settings, domain):
        if record.localpart == localpart and kind != "gone":
            room = RoomRecord(domain, localpart, record.name if name is None else name.strip(),
                              record.enabled if enabled is None else enabled)
            await directory.put_room(room)
            return room
    raise AdminError(f"no room {localpart} at {domain}: rooms are the domain's ({settings.muc.domain_room or 'off'})"
                     " and one per mail alias", "room", 404)


async def put_site(directory: IDirectory, host: str, owner: str | None = None,
                   show_chat_link: bool | None = None) -> Site:
    """Add a site or change what is given of it; a new site shows the chat link."""
    host = domain_name(host, "host")
    current = await directory.site(host) or Site(host)
    site = Site(
        host,
        current.owner if owner is None else owner.strip(),
        current.show_chat_link if show_chat_link is None else show_chat_link,
    )
    await directory.put_site(site)
    return site


async def site(directory: IDirectory, host: str) -> Site:
    host = domain_name(host, "host")
    found = await directory.site(host)
    if found is None:
        raise UnknownSite(f"unknown site: {host}")
    return found


async def chat_link(directory: IDirectory, host: str, jid: str) -> tuple[bool, str]:
    """Whether *host* shows *jid* the chat link, and why: the site shows it and
    the user's domain has chat enabled."""
    found = await site(directory, host)
    localpart, domain = address(jid, "user")
    if not found.show_chat_link:
        return False, "the site hides the chat link"
    domains = {d.name: d for d in await directory.domains()}
    if domain not in domains or await directory.user(domain, localpart) is None:
        return False, "no such chat user"
    if not domains[domain].chat_enabled:
        return False, f"chat is disabled for {domain}"
    return True, "chat is available"


async def token(directory: IDirectory, settings: Settings, jid: str, lifetime: float | None = None) -> tuple[str, int]:
    """A webmail login token for an existing user: (token, expiry as Unix time)."""
    localpart, domain = address(jid, "user")
    lifetime = settings.webmail.token_lifetime if lifetime is None else lifetime
    if lifetime <= 0:
        raise AdminError("the lifetime must be greater than 0", "lifetime")
    if lifetime > settings.webmail.token_max_age:
        raise AdminError(f"the lifetime must not exceed [webmail] token_max_age ({settings.webmail.token_max_age:g} s)",
                         "lifetime")
    if await directory.user(domain, localpart) is None:
        raise UnknownUser(f"unknown user: {localpart}@{domain}")
    try:
        return mint(settings.webmail.token_secret.encode(), f"{localpart}@{domain}", lifetime)
    except TokenError as e:
        raise AdminError(str(e), None, 409) from None


def user_record(localpart: str, domain: str, name: str = "", title: str = "", department: str = "",
                phone: str = "") -> User:
    """The directory record, each detail checked by :func:`detail`."""
    return User(localpart, domain, detail(name, "name"), detail(title, "title"), detail(department, "department"),
                detail(phone, "phone"))


#: what no XML document can carry (XML 1.0 §2.2), and the other control characters
_NOT_TEXT = re.compile("[\x00-\x1f\x7f\ud800-\udfff\ufffe\uffff]")


def detail(text: str, field: str) -> str:
    """A directory detail (a name, a title ...) as every client will be sent it:
    stripped, without control characters, which would make the roster and the
    vCards of the whole domain unreadable XML."""
    text = text.strip()
    if _NOT_TEXT.search(text):
        raise AdminError(f"{field}: control characters are not allowed", field)
    return text
