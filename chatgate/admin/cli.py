"""chatgate-admin: manage hosted domains, their users and aliases from a shell.

It opens the same store as the running service (from tap-config.ini) and
writes through :class:`~chatgate.storage.interfaces.IDirectory`, so each
change is recorded in the store's change feed and reaches the service's
watchers within a poll interval.

Everything a user can get wrong (arguments, addresses, CSV rows, passwords,
the configuration, the store) is checked before the store is written and
reported as one line, ``chatgate-admin: <message>``, with exit status 1;
argparse usage errors exit with 2. Passwords are never printed nor logged.

Every change that succeeds is one ``admin-change`` line, naming the
operation, its target and the operating-system user, appended to
``admin-audit.log`` in the database's folder (:mod:`chatgate.admin.audit`);
a command that cannot write there changes nothing.
"""

from __future__ import annotations

import argparse
import csv
import getpass
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

from twisted.internet import threads
from twisted.internet.task import react

from chatgate.admin import audit, export, import_pie, search
from chatgate.admin import operations as ops
from chatgate.admin.operations import AdminError
from chatgate.config import ConfigError, Settings, load
from chatgate.private_files import make_private_folder
from chatgate.stanza import stamp
from chatgate.storage import Stores, open_archive, open_directory, open_files, open_offline
from chatgate.storage import backup as backups
from chatgate.storage.interfaces import ArchiveError, Credentials, DirectoryError, IDirectory, User

PROG = "chatgate-admin"
DEFAULT_CONFIG = "tap-config.ini"

#: what a command does once the store is open
Job = Callable[[IDirectory], Awaitable[None]]


class CommandError(Exception):
    """A mistake in what the user asked for; the message is one line."""


# -- the command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Manage chatgate's hosted domains and users.")
    parser.add_argument(
        "-c", "--config", metavar="FILE", help=f"configuration file (default: ./{DEFAULT_CONFIG} if present)"
    )
    topics = parser.add_subparsers(dest="topic", required=True,
                                   metavar="{domain,user,alias,room,site,token,hold,backup,restore,drain,export,import,history}")

    domain = topics.add_parser("domain", help="hosted domains").add_subparsers(dest="action", required=True)
    for action, prepare, text in (
        ("add", _domain_add, "host a new domain (chat enabled)"),
        ("enable", _domain_enable, "turn a domain's chat on"),
        ("disable", _domain_disable, "turn a domain's chat off (logins refused, sessions closed)"),
    ):
        command = domain.add_parser(action, help=text)
        command.add_argument("domain", metavar="DOMAIN")
        command.set_defaults(prepare=prepare)
    domain.add_parser("list", help="list the hosted domains").set_defaults(prepare=_domain_list)
    domain_set = domain.add_parser("set", help="a domain's own policy: how long its history is kept")
    domain_set.add_argument("domain", metavar="DOMAIN")
    domain_set.add_argument("--retention-days", required=True, metavar="N|default",
                            help="days of history kept (0: always; default: [archive] retention_days)")
    domain_set.set_defaults(prepare=_domain_set)

    hold = topics.add_parser("hold", help="legal holds: history kept from retention and erasure")
    hold_actions = hold.add_subparsers(dest="action", required=True)
    hold_add = hold_actions.add_parser("add", help="put a user (JID) or a whole domain on hold")
    hold_add.add_argument("jid", metavar="JID|DOMAIN")
    hold_add.add_argument("--reason", default="", help="why (a case number), kept with the hold")
    hold_add.set_defaults(prepare=_hold_add)
    hold_remove = hold_actions.add_parser("remove", help="lift a hold")
    hold_remove.add_argument("jid", metavar="JID|DOMAIN")
    hold_remove.set_defaults(prepare=_hold_remove)
    hold_list = hold_actions.add_parser("list", help="a domain's holds (target, tab, by, tab, since, tab, reason)")
    hold_list.add_argument("domain", metavar="DOMAIN")
    hold_list.set_defaults(prepare=_hold_list)

    user_topic = topics.add_parser("user", help="users of hosted domains")
    user = user_topic.add_subparsers(dest="action", required=True)
    add = user.add_parser("add", help="add a user")
    add.add_argument("jid", metavar="JID", help="the user's address, like alice@example.com")
    add.add_argument("--name", default="", help="full name, shown in rosters")
    add.add_argument("--title", default="")
    add.add_argument("--department", default="")
    add.add_argument("--phone", default="")
    _password_options(add)
    add.set_defaults(prepare=_user_add)

    passwd = user.add_parser("passwd", help="set a user's password")
    passwd.add_argument("jid", metavar="JID")
    _password_options(passwd)
    passwd.set_defaults(prepare=_user_passwd)

    remove = user.add_parser("remove", help="remove a user with their credentials and vCard")
    remove.add_argument("jid", metavar="JID")
    remove.set_defaults(prepare=_user_remove)

    listing = user.add_parser("list", help="list a domain's users (JID, tab, name)")
    listing.add_argument("domain", metavar="DOMAIN")
    listing.set_defaults(prepare=_user_list)

    imports = user.add_parser(
        "import", help="add users from a CSV file: jid,name,password[,title,department,phone]"
    )
    imports.add_argument("file", metavar="FILE.csv")
    imports.set_defaults(prepare=_user_import)

    alias = topics.add_parser("alias", help="mail aliases: contacts that reach their members")
    alias_actions = alias.add_subparsers(dest="action", required=True)
    alias_add = alias_actions.add_parser("add", help="create an alias, or add members to it")
    alias_add.add_argument("alias", metavar="ALIAS", help="the alias address, like sales@example.com")
    alias_add.add_argument("members", metavar="MEMBER", nargs="*", help="member addresses of the same domain")
    alias_add.add_argument("--name", default=None, help="the name shown in rosters")
    alias_add.set_defaults(prepare=_alias_add)
    alias_remove = alias_actions.add_parser("remove", help="remove members, or the whole alias when none given")
    alias_remove.add_argument("alias", metavar="ALIAS")
    alias_remove.add_argument("members", metavar="MEMBER", nargs="*")
    alias_remove.set_defaults(prepare=_alias_remove)
    alias_members = alias_actions.add_parser("members", help="list an alias's members")
    alias_members.add_argument("alias", metavar="ALIAS")
    alias_members.set_defaults(prepare=_alias_members)
    alias_list = alias_actions.add_parser("list", help="list a domain's aliases (JID, tab, name, tab, members)")
    alias_list.add_argument("domain", metavar="DOMAIN")
    alias_list.set_defaults(prepare=_alias_list)

    room = topics.add_parser("room", help="team rooms: the domain's and one per mail alias ([muc])")
    room_actions = room.add_subparsers(dest="action", required=True)
    for action, text, enabled in (("enable", "open a room again", True), ("disable", "close a room", False)):
        command = room_actions.add_parser(action, help=text)
        command.add_argument("room", metavar="ROOM", help="the room at its domain: everyone@example.com,"
                             " sales@example.com for the alias's room")
        command.set_defaults(prepare=_room_set, enabled=enabled, name=None)
    room_name = room_actions.add_parser("name", help="name a room (empty: its default name)")
    room_name.add_argument("room", metavar="ROOM")
    room_name.add_argument("name", metavar="NAME")
    room_name.set_defaults(prepare=_room_set, enabled=None)
    room_list = room_actions.add_parser("list", help="a domain's rooms (room JID, tab, kind, tab, state, tab, name)")
    room_list.add_argument("domain", metavar="DOMAIN")
    room_list.set_defaults(prepare=_room_list)

    site = topics.add_parser("site", help="private-label webmail sites and their chat link")
    site_actions = site.add_subparsers(dest="action", required=True)
    site_add = site_actions.add_parser("add", help="add a site (or change its owner), chat link shown")
    site_add.add_argument("host", metavar="HOST", help="the webmail's host name, like mail.reseller.net")
    site_add.add_argument("--owner", default="", help="the reseller or customer owning it")
    site_add.add_argument("--hide-chat-link", action="store_true", help="add it with the chat link hidden")
    site_add.set_defaults(prepare=_site_add)
    for action, show, text in (("show", True, "show the chat link"), ("hide", False, "hide the chat link")):
        command = site_actions.add_parser(action, help=f"{text} on a site")
        command.add_argument("host", metavar="HOST")
        command.set_defaults(prepare=_site_link, show=show)
    site_remove = site_actions.add_parser("remove", help="forget a site")
    site_remove.add_argument("host", metavar="HOST")
    site_remove.set_defaults(prepare=_site_remove)
    site_actions.add_parser("list", help="list the sites").set_defaults(prepare=_site_list)

    token = topics.add_parser("token", help="print a webmail login token for a user ([webmail] token_secret)")
    token.add_argument("jid", metavar="JID")
    token.add_argument("--lifetime", type=float, default=None, help="seconds (default: [webmail] token_lifetime)")
    token.set_defaults(prepare=_token, action="mint")

    backup_command = topics.add_parser("backup", help="copy the SQLite store (online, consistent) into a new file")
    backup_command.add_argument("file", metavar="FILE")
    backup_command.set_defaults(prepare=_backup, action="backup")
    restore_command = topics.add_parser("restore", help="put a backup in place of the SQLite store (service stopped)")
    restore_command.add_argument("file", metavar="FILE")
    restore_command.set_defaults(prepare=_restore, action="restore")

    db = topics.add_parser("db", help="the stores' database schema")
    db.add_subparsers(dest="action", required=True).add_parser(
        "upgrade", help="apply the schema changes this chatgate ships (PostgreSQL; SQLite files upgrade on opening)"
    ).set_defaults(prepare=_db_upgrade, file="schema")

    drain = topics.add_parser("drain", help="stop the running node gracefully, as SIGTERM does (the admin API)")
    drain.set_defaults(prepare=_drain, action="drain")
    export.add_commands(topics)
    search.add_commands(topics)
    import_pie.add_commands(topics)
    return parser


def _password_options(command: argparse.ArgumentParser) -> None:
    source = command.add_mutually_exclusive_group()
    source.add_argument("--password", metavar="P", help="the password (visible to other local users)")
    source.add_argument(
        "--password-stdin", action="store_true", help="read the password from the first line of stdin"
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command and return the exit status.

    Runs the reactor, so it can be called once per process.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return _status(e)
    try:
        settings = _settings(args.config)
        job = args.prepare(args, settings)
        directory = open_directory(settings)
        if args.action not in READS:
            job = _audited(job, args, settings)
    except (CommandError, AdminError, ConfigError, DirectoryError) as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return _run(directory, job)


def run() -> NoReturn:
    """The console script's entry point."""
    sys.exit(main())


def _settings(path: str | None) -> Settings:
    if path is None:
        settings = load(DEFAULT_CONFIG) if os.path.exists(DEFAULT_CONFIG) else Settings()
    else:
        settings = load(path)
    if settings.storage.backend == "memory":
        raise CommandError("[storage] backend = memory keeps nothing; chatgate-admin needs sqlite or redis")
    return settings


def _run(directory: IDirectory, job: Job) -> int:
    """Start the store, do the job, stop the store, all under the reactor."""
    status = 0

    async def work(reactor: Any) -> None:
        nonlocal status
        try:
            await directory.start()
        except DirectoryError as e:
            status = _fail(str(e))
            return
        try:
            await job(directory)
        except (CommandError, AdminError, DirectoryError) as e:
            status = _fail(str(e))
        except Exception as e:  # a bug, still one line: the user cannot act on a traceback
            status = _fail(f"unexpected error: {type(e).__name__}: {e}")
        finally:
            try:
                await directory.stop()
            except Exception as e:
                status = status or _fail(f"cannot close the store: {e}")

    try:
        react(work)
    except SystemExit as e:
        status = status or _status(e)
    return status


#: the actions that change nothing (every other one is audited)
#: actions audited elsewhere or not at all: reads, and a drain (the node's admin API audits it)
READS = frozenset({"list", "members", "drain", "backup"})


def _audited(job: Job, args: argparse.Namespace, settings: Settings) -> Job:
    """*job*, followed by its audit line when it succeeds; CommandError if the audit log cannot be written."""
    path = os.path.join(os.path.dirname(settings.path(settings.storage.path)), audit.CLI_LOG)
    try:
        make_private_folder(os.path.dirname(path))  # made by nothing else when the directory is on Redis
        logger = audit.file_logger(path)
    except OSError as e:
        raise CommandError(f"cannot write the audit log {path}: {e.strerror}") from None
    names = [name for name in ("jid", "alias", "room", "user", "domain", "host") if getattr(args, name, None)]
    target = audit.target(getattr(args, names[0])) if names else args.file

    async def audited(directory: IDirectory) -> None:
        await job(directory)
        audit.record(f"{args.topic}.{args.action}", target, audit.os_user(), "cli", logger)

    return audited


def _fail(message: str) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return 1


def _status(exit: SystemExit) -> int:
    code = exit.code
    if code is None:
        return 0
    return code if isinstance(code, int) else 1


# -- domain commands: each checks its arguments and returns the job


def _domain_add(args: argparse.Namespace, settings: Settings) -> Job:
    name = ops.domain_name(args.domain)

    async def job(directory: IDirectory) -> None:
        await ops.add_domain(directory, name)
        print(f"added domain {name}")

    return job


def _domain_list(args: argparse.Namespace, settings: Settings) -> Job:
    async def job(directory: IDirectory) -> None:
        for domain in await directory.domains():
            print(f"{domain.name}  chat {'enabled' if domain.chat_enabled else 'disabled'}")

    return job


def _domain_set(args: argparse.Namespace, settings: Settings) -> Job:
    raw = args.retention_days.strip()
    if raw != "default" and not raw.isdigit():
        raise CommandError("--retention-days takes a whole number of days (0: always) or 'default'")
    days = None if raw == "default" else int(raw)

    async def job(directory: IDirectory) -> None:
        await ops.set_retention(directory, args.domain, days)
        kept = "the server's retention" if days is None else "always" if days == 0 else f"{days} days"
        print(f"{ops.domain_name(args.domain)}: history kept {kept}")

    return job


def _hold_add(args: argparse.Namespace, settings: Settings) -> Job:
    async def job(directory: IDirectory) -> None:
        hold = await ops.put_hold(directory, args.jid, audit.os_user(), args.reason, time.time())
        print(f"legal hold on {hold.target}: its history is kept from retention and erasure")

    return job


def _hold_remove(args: argparse.Namespace, settings: Settings) -> Job:
    async def job(directory: IDirectory) -> None:
        history = await _open_history(settings, directory)
        try:
            done = await ops.remove_hold(directory, args.jid, history)
        finally:
            await _close_history(history)
        print(f"legal hold on {args.jid} {done}")

    return job


def _hold_list(args: argparse.Namespace, settings: Settings) -> Job:
    async def job(directory: IDirectory) -> None:
        for hold in await directory.holds(ops.domain_name(args.domain)):
            print(f"{hold.target}\t{hold.by}\t{stamp(hold.at)}\t{hold.reason}")

    return job


def _domain_enable(args: argparse.Namespace, settings: Settings) -> Job:
    return _set_chat(ops.domain_name(args.domain), True)


def _domain_disable(args: argparse.Namespace, settings: Settings) -> Job:
    return _set_chat(ops.domain_name(args.domain), False)


def _set_chat(name: str, enabled: bool) -> Job:
    async def job(directory: IDirectory) -> None:
        await ops.set_chat(directory, name, enabled)
        print(f"chat {'enabled' if enabled else 'disabled'} for {name}")

    return job


# -- user commands


def _user_add(args: argparse.Namespace, settings: Settings) -> Job:
    localpart, domain = ops.address(args.jid)
    user = ops.user_record(localpart, domain, args.name, args.title, args.department, args.phone)
    credentials = ops.credentials(_password(args), settings)

    async def job(directory: IDirectory) -> None:
        await ops.check_address_free(directory, domain, localpart)
        await directory.add_user(user, credentials)
        print(f"added user {user.jid}")

    return job


def _user_passwd(args: argparse.Namespace, settings: Settings) -> Job:
    localpart, domain = ops.address(args.jid)
    credentials = ops.credentials(_password(args), settings)

    async def job(directory: IDirectory) -> None:
        await directory.set_credentials(domain, localpart, credentials)
        print(f"changed the password of {localpart}@{domain}")

    return job


def _user_remove(args: argparse.Namespace, settings: Settings) -> Job:
    localpart, domain = ops.address(args.jid)

    async def job(directory: IDirectory) -> None:
        history = await _open_history(settings, directory)
        try:
            done = await ops.remove_user(directory, domain, localpart, history)
        finally:
            await _close_history(history)
        print(f"removed user {localpart}@{domain}; {done}")

    return job


async def _open_history(settings: Settings, directory: IDirectory) -> Stores:
    """The stores a user's history is in, opened beside the directory (a running node shares them)."""
    history = Stores(directory, open_archive(settings), open_offline(settings), open_files(settings))
    try:
        await history.archive.start()
        await history.offline.start()
        if history.files is not None:
            await history.files.start()
    except (ArchiveError, OSError) as e:
        raise CommandError(f"cannot open the history stores: {e}") from None
    return history


async def _close_history(history: Stores) -> None:
    await history.archive.stop()  # commits what is queued
    await history.offline.stop()
    if history.files is not None:
        await history.files.stop()


def _user_list(args: argparse.Namespace, settings: Settings) -> Job:
    name = ops.domain_name(args.domain)

    async def job(directory: IDirectory) -> None:
        for user in await directory.users(name):
            print(f"{user.jid}\t{user.name}")

    return job


def _user_import(args: argparse.Namespace, settings: Settings) -> Job:
    path = args.file
    rows: list[tuple[int, User, Credentials]] = []
    for line, user, password in _read_csv(path):
        try:
            rows.append((line, user, ops.credentials(password, settings)))
        except (CommandError, AdminError) as e:
            raise CommandError(f"{path} line {line}: {e}") from None

    async def job(directory: IDirectory) -> None:
        # every row is checked against the store before the first is written
        known = {domain.name for domain in await directory.domains()}
        for line, user, _ in rows:
            if user.domain not in known:
                raise CommandError(f"{path} line {line}: unknown domain: {user.domain}")
            if await directory.user(user.domain, user.localpart) is not None:
                raise CommandError(f"{path} line {line}: user already exists: {user.jid}")
            try:
                await ops.check_address_free(directory, user.domain, user.localpart)
            except AdminError as e:
                raise CommandError(f"{path} line {line}: {e}") from None
        for _, user, credentials in rows:
            await directory.add_user(user, credentials)
        print(f"imported {len(rows)} user{'' if len(rows) == 1 else 's'} from {path}")

    return job


# -- alias commands


def _alias_add(args: argparse.Namespace, settings: Settings) -> Job:
    localpart, domain = ops.address(args.alias)
    ops.members(domain, args.members)  # checked before the store is opened

    async def job(directory: IDirectory) -> None:
        existed = await directory.alias(domain, localpart) is not None
        alias = await ops.add_alias_members(directory, args.alias, args.members, args.name)
        if existed:
            print(f"alias {alias.jid} has {len(alias.members)} members")
        else:
            print(f"added alias {alias.jid} with {len(alias.members)} members")

    return job


def _alias_remove(args: argparse.Namespace, settings: Settings) -> Job:
    localpart, domain = ops.address(args.alias)
    ops.members(domain, args.members)

    async def job(directory: IDirectory) -> None:
        alias = await ops.remove_alias_members(directory, args.alias, args.members)
        if alias is None:
            print(f"removed alias {localpart}@{domain}")
        else:
            print(f"alias {alias.jid} has {len(alias.members)} members")

    return job


def _alias_members(args: argparse.Namespace, settings: Settings) -> Job:
    ops.address(args.alias)

    async def job(directory: IDirectory) -> None:
        alias = await ops.alias(directory, args.alias)
        for member in alias.members:
            print(f"{member}@{alias.domain}")

    return job


def _alias_list(args: argparse.Namespace, settings: Settings) -> Job:
    name = ops.domain_name(args.domain)

    async def job(directory: IDirectory) -> None:
        for alias in await directory.aliases(name):
            print(f"{alias.jid}\t{alias.name}\t{' '.join(f'{m}@{name}' for m in alias.members)}")

    return job


# -- rooms


def _room_set(args: argparse.Namespace, settings: Settings) -> Job:
    async def job(directory: IDirectory) -> None:
        room = await ops.put_room(directory, settings, args.room, args.enabled, args.name)
        state = "open" if room.enabled else "closed"
        print(f"room {room.localpart}@{settings.muc.subdomain}.{room.domain}: {state}"
              + (f", named {room.name}" if room.name else ""))

    return job


def _room_list(args: argparse.Namespace, settings: Settings) -> Job:
    async def job(directory: IDirectory) -> None:
        for room, kind in await ops.rooms(directory, settings, args.domain):
            state = "open" if room.enabled else "closed"
            print(f"{room.localpart}@{settings.muc.subdomain}.{room.domain}\t{kind}\t{state}\t{room.name}")

    return job


# -- sites


def _site_add(args: argparse.Namespace, settings: Settings) -> Job:
    ops.domain_name(args.host)

    async def job(directory: IDirectory) -> None:
        site = await ops.put_site(directory, args.host, args.owner, not args.hide_chat_link)
        print(f"site {site.host}: chat link {'shown' if site.show_chat_link else 'hidden'}")

    return job


def _site_link(args: argparse.Namespace, settings: Settings) -> Job:
    ops.domain_name(args.host)

    async def job(directory: IDirectory) -> None:
        await ops.site(directory, args.host)  # it must exist already
        site = await ops.put_site(directory, args.host, show_chat_link=args.show)
        print(f"site {site.host}: chat link {'shown' if site.show_chat_link else 'hidden'}")

    return job


def _site_remove(args: argparse.Namespace, settings: Settings) -> Job:
    host = ops.domain_name(args.host)

    async def job(directory: IDirectory) -> None:
        await directory.remove_site(host)
        print(f"removed site {host}")

    return job


def _site_list(args: argparse.Namespace, settings: Settings) -> Job:
    async def job(directory: IDirectory) -> None:
        for site in await directory.sites():
            print(f"{site.host}\tchat link {'shown' if site.show_chat_link else 'hidden'}\t{site.owner}")

    return job


# -- login tokens


def _token(args: argparse.Namespace, settings: Settings) -> Job:
    ops.address(args.jid)

    async def job(directory: IDirectory) -> None:
        token, _ = await ops.token(directory, settings, args.jid, args.lifetime)
        print(token)

    return job


def _sqlite_store(settings: Settings) -> str:
    if {settings.storage.backend, settings.archive.backend, settings.archive.offline_backend} != {"sqlite"}:
        raise CommandError("backup and restore cover the SQLite store; Redis keeps its own (RDB or AOF),"
                           " PostgreSQL too (pg_dump)")
    return settings.path(settings.storage.path)


def _backup(args: argparse.Namespace, settings: Settings) -> Job:
    store = _sqlite_store(settings)

    async def job(directory: IDirectory) -> None:
        try:
            pages = await threads.deferToThread(backups.backup, store, args.file)
        except backups.BackupError as e:
            raise CommandError(str(e)) from None
        print(f"backed up {store} into {args.file} ({pages} pages); uploads are the files in [upload] path")

    return job


def _restore(args: argparse.Namespace, settings: Settings) -> Job:
    store = _sqlite_store(settings)
    try:
        backups.restore(args.file, store)
    except backups.BackupError as e:
        raise CommandError(str(e)) from None

    async def job(directory: IDirectory) -> None:
        print(f"restored {store} from {args.file}")

    return job


def _db_upgrade(args: argparse.Namespace, settings: Settings) -> Job:
    """PostgreSQL: the migrations applied here, before the directory is opened (which refuses an older
    schema). SQLite: the stores bring their file up to date when they open it, which the job does."""
    s = settings.storage
    on_postgresql = "postgresql" in (s.backend, settings.archive.backend, settings.archive.offline_backend)
    done = ""
    if on_postgresql:
        from chatgate.storage import postgres

        before, applied = postgres.upgrade(s.postgresql_dsn, CommandError)
        where = postgres.describe(s.postgresql_dsn)
        done = (f"{where}: schema {before} -> {applied[-1]}" if applied
                else f"{where}: already at schema {before}")

    async def job(directory: IDirectory) -> None:
        for store in (open_archive(settings), open_offline(settings)):
            await store.start()  # (an SQLite file's history tables made or upgraded)
            await store.stop()
        print(done or f"{settings.path(s.path)}: up to date")

    return job


def _drain(args: argparse.Namespace, settings: Settings) -> Job:
    """POST /api/drain to the node this configuration runs (its [admin] listener and key)."""
    a = settings.admin
    if not a.api_key:
        raise CommandError("drain asks the running node through its admin API: set [admin] api_key")
    host = a.interfaces[0] if a.interfaces and a.interfaces[0] not in ("0.0.0.0", "::") else "127.0.0.1"
    url = f"http://{'[' + host + ']' if ':' in host else host}:{a.port}/api/drain"

    def post() -> int:
        request = urllib.request.Request(url, method="POST", data=b"{}", headers={
            "Authorization": f"Bearer {a.api_key}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status
        except urllib.error.HTTPError as e:
            raise CommandError(f"the node refused the drain: HTTP {e.code}") from None
        except OSError as e:
            raise CommandError(f"no node answers at {url}: {getattr(e, 'reason', e)}") from None

    async def job(directory: IDirectory) -> None:
        await threads.deferToThread(post)
        print(f"draining: the node at {url} is stopping")

    return job


# -- passwords and CSV files

REQUIRED_COLUMNS = ("jid", "name", "password")
OPTIONAL_COLUMNS = ("title", "department", "phone")


def _read_csv(path: str) -> list[tuple[int, User, str]]:
    """Read and check every row of a user CSV file: (line number, user, password)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return _parse_csv(path, f)
    except OSError as e:
        raise CommandError(f"{path}: cannot read the file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise CommandError(f"{path}: the file is not UTF-8") from None


def _parse_csv(path: str, lines: Any) -> list[tuple[int, User, str]]:
    reader = csv.reader(lines)
    try:
        header = [column.strip().lower() for column in next(reader, [])]
        if not header:
            raise CommandError(f"{path}: the file is empty (expected a header row: jid,name,password)")
        for column in header:
            if column not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
                known = ", ".join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)
                raise CommandError(f"{path} line 1: unknown column {column!r} (known: {known})")
        if len(set(header)) != len(header):
            raise CommandError(f"{path} line 1: a column is named twice")
        for column in REQUIRED_COLUMNS:
            if column not in header:
                raise CommandError(f"{path} line 1: missing column {column!r}")
        rows: list[tuple[int, User, str]] = []
        seen: dict[str, int] = {}
        for fields in reader:
            line = reader.line_num
            if not any(field.strip() for field in fields):
                continue  # blank lines are not rows
            if len(fields) != len(header):
                raise CommandError(f"{path} line {line}: expected {len(header)} fields, found {len(fields)}")
            row = dict(zip(header, fields, strict=True))
            try:
                localpart, domain = ops.address(row["jid"].strip())
            except AdminError as e:
                raise CommandError(f"{path} line {line}: {e}") from None
            jid = f"{localpart}@{domain}"
            if jid in seen:
                raise CommandError(f"{path} line {line}: {jid} is already on line {seen[jid]}")
            seen[jid] = line
            if not row["password"]:
                raise CommandError(f"{path} line {line}: the password is empty")
            try:
                user = ops.user_record(localpart, domain, **{c: row.get(c, "") for c in ("name",) + OPTIONAL_COLUMNS})
            except AdminError as e:
                raise CommandError(f"{path} line {line}: {e}") from None
            rows.append((line, user, row["password"]))
    except csv.Error as e:
        raise CommandError(f"{path} line {reader.line_num}: {e}") from None
    if not rows:
        raise CommandError(f"{path}: no users in the file")
    return rows


def _password(args: argparse.Namespace) -> str:
    """The password from --password, --password-stdin or, on a terminal, a prompt."""
    if args.password is not None:
        password = args.password
    elif args.password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif sys.stdin.isatty():
        try:
            password = getpass.getpass("Password: ")
            if getpass.getpass("Password again: ") != password:
                raise CommandError("the passwords do not match")
        except EOFError:
            raise CommandError("no password given") from None
    else:
        raise CommandError("no password: give --password or --password-stdin (stdin is not a terminal)")
    return password  # ops.credentials refuses an empty one


if __name__ == "__main__":
    run()
