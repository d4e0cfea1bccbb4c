"""chatgate-admin run as a user runs it: a real process on a real SQLite file."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time

import pytest
import pytest_twisted
from twisted.application.internet import TimerService
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater

from chatgate.auth.credentials import verify_password
from chatgate.storage.interfaces import Change, User
from chatgate.storage.sqlite import SQLiteDirectory

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Admin:
    """Runs chatgate-admin in a folder holding a tap-config.ini."""

    def __init__(self, folder) -> None:
        self.folder = folder
        self.database = str(folder / "var" / "chat.sqlite")
        (folder / "tap-config.ini").write_text("[storage]\npath = var/chat.sqlite\npoll_interval = 0.05\n")

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        return subprocess.run(
            [sys.executable, "-m", "chatgate.admin.cli", *args],
            cwd=self.folder,
            env=env,
            input=stdin if stdin is not None else "",
            capture_output=True,
            text=True,
            timeout=60,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        result = self(*args, stdin=stdin)
        assert (result.returncode, result.stderr) == (0, ""), result
        return result.stdout

    def fails(self, *args: str, stdin: str | None = None) -> str:
        """The one-line error of a refused command."""
        result = self(*args, stdin=stdin)
        assert result.returncode == 1, result
        assert result.stdout == ""
        assert result.stderr.startswith("chatgate-admin: ")
        assert result.stderr.count("\n") == 1, result.stderr
        return result.stderr.removeprefix("chatgate-admin: ").rstrip("\n")


@pytest.fixture
def admin(tmp_path):
    return Admin(tmp_path)


@pytest.fixture
def hosted(admin):
    admin.ok("domain", "add", "example.com")
    return admin


async def read(admin: Admin, work):
    """Open the admin's database as the service would and run *work(directory)*."""
    directory = SQLiteDirectory(admin.database, 0.05)
    await directory.start()
    try:
        return await work(directory)
    finally:
        await directory.stop()


def test_domains_are_added_listed_disabled_and_enabled(admin):
    assert admin.ok("domain", "add", "Example.COM") == "added domain example.com\n"
    admin.ok("domain", "add", "chat.example.org")
    assert admin.ok("domain", "list") == "chat.example.org  chat enabled\nexample.com  chat enabled\n"
    admin.ok("domain", "disable", "example.com")
    assert "example.com  chat disabled\n" in admin.ok("domain", "list")
    admin.ok("domain", "enable", "example.com")
    assert "example.com  chat enabled\n" in admin.ok("domain", "list")
    assert os.path.isfile(admin.database)


def test_domain_errors_are_one_line(hosted):
    assert hosted.fails("domain", "add", "example.com") == "domain already exists: example.com"
    assert hosted.fails("domain", "enable", "example.org") == "unknown domain: example.org"
    assert "at least one dot" in hosted.fails("domain", "add", "localhost")
    assert "IP address" in hosted.fails("domain", "add", "192.0.2.1")


@pytest_twisted.ensureDeferred
async def test_users_are_added_listed_and_removed(hosted):
    details = [
        "--name",
        "Alice Liddell",
        "--title",
        "Dreamer",
        "--department",
        "Wonder",
        "--phone",
        "+1 555 0100",
    ]
    out = hosted.ok("user", "add", "Alice@example.com", *details, "--password", "s3cret")
    assert out == "added user alice@example.com\n"
    hosted.ok("user", "add", "bob@example.com", "--password", "pw")
    assert hosted.ok("user", "list", "example.com") == "alice@example.com\tAlice Liddell\nbob@example.com\t\n"

    async def check(directory):
        assert await directory.user("example.com", "alice") == User(
            "alice", "example.com", "Alice Liddell", "Dreamer", "Wonder", "+1 555 0100"
        )
        assert verify_password(await directory.credentials("example.com", "alice"), "s3cret")

    await read(hosted, check)
    assert hosted.ok("user", "remove", "bob@example.com") == (
        "removed user bob@example.com; erased 0 archived messages, 0 offline messages and 0 uploaded files\n")
    assert hosted.ok("user", "list", "example.com") == "alice@example.com\tAlice Liddell\n"


@pytest_twisted.ensureDeferred
async def test_password_is_changed_from_stdin_and_never_shown(hosted):
    hosted.ok("user", "add", "alice@example.com", "--password-stdin", stdin="first pass\n")
    result = hosted("user", "passwd", "alice@example.com", "--password-stdin", stdin="second pass\n")
    assert result.returncode == 0
    assert "pass" not in result.stdout.replace("password", "") + result.stderr

    async def credentials(directory):
        return await directory.credentials("example.com", "alice")

    stored = await read(hosted, credentials)
    assert verify_password(stored, "second pass")
    assert not verify_password(stored, "first pass")


def on_terminal(admin: Admin, args: list[str], dialogue: list[tuple[bytes, bytes]]) -> tuple[int, str]:
    """Run chatgate-admin on a pseudo-terminal, giving each answer once its prompt is shown."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: becomes chatgate-admin with the terminal as its own
        try:
            os.chdir(admin.folder)
            os.environ["PYTHONPATH"] = ROOT
            os.execv(sys.executable, [sys.executable, "-m", "chatgate.admin.cli", *args])
        finally:
            os._exit(127)
    output = b""
    try:
        for prompt, answer in dialogue:
            deadline = time.monotonic() + 30
            while not output.endswith(prompt) and time.monotonic() < deadline:
                output += os.read(fd, 1024)
            os.write(fd, answer + b"\n")
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # EIO: the child has gone
                break
            if not chunk:
                break
            output += chunk
    finally:
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    return os.waitstatus_to_exitcode(status), output.decode().replace("\r\n", "\n")


def test_on_a_terminal_the_password_is_asked_twice_unseen(hosted):
    dialogue = [(b"Password: ", b"tty pass"), (b"Password again: ", b"tty pass")]
    status, output = on_terminal(hosted, ["user", "add", "alice@example.com"], dialogue)
    assert (status, output) == (0, "Password: \nPassword again: \nadded user alice@example.com\n")
    dialogue = [(b"Password: ", b"one"), (b"Password again: ", b"two")]
    status, output = on_terminal(hosted, ["user", "passwd", "alice@example.com"], dialogue)
    assert status == 1
    assert output.endswith("chatgate-admin: the passwords do not match\n")


def test_without_a_password_or_a_terminal_it_refuses(hosted):
    assert "no password" in hosted.fails("user", "add", "alice@example.com")
    assert (
        hosted.fails("user", "add", "alice@example.com", "--password-stdin", stdin="")
        == "the password is empty"
    )
    assert hosted.ok("user", "list", "example.com") == ""


def test_user_errors_are_one_line(hosted):
    hosted.ok("user", "add", "alice@example.com", "--password", "pw")
    assert (
        hosted.fails("user", "add", "alice@example.org", "--password", "pw") == "unknown domain: example.org"
    )
    assert hosted.fails("user", "add", "alice@example.com", "--password", "pw") == (
        "user already exists: alice@example.com"
    )
    assert hosted.fails("user", "add", "al ice@example.com", "--password", "pw") == (
        "invalid address 'al ice@example.com': invalid character ' ' in localpart"
    )
    assert "resource" in hosted.fails("user", "add", "bob@example.com/desk", "--password", "pw")
    assert (
        hosted.fails("user", "passwd", "bob@example.com", "--password", "pw")
        == "unknown user: bob@example.com"
    )
    assert hosted.fails("user", "remove", "bob@example.com") == "unknown user: bob@example.com"
    assert hosted.fails("user", "list", "example.org") == "unknown domain: example.org"


def test_users_are_imported_from_csv(hosted):
    (hosted.folder / "users.csv").write_text(
        "jid,name,password,title,department,phone\n"
        "alice@example.com,Alice Liddell,pw1,Dreamer,Wonder,+1 555 0100\n"
        "\n"
        'bob@example.com,"Bob, Jr.",pw2,,,\n',
        encoding="utf-8",
    )
    assert hosted.ok("user", "import", "users.csv") == "imported 2 users from users.csv\n"
    assert (
        hosted.ok("user", "list", "example.com")
        == "alice@example.com\tAlice Liddell\nbob@example.com\tBob, Jr.\n"
    )


@pytest.mark.parametrize(
    "rows, error",
    [
        (
            "carol@example.com,Carol,pw\nbad jid,X,pw\n",
            "users.csv line 3: invalid address 'bad jid': missing localpart",
        ),
        (
            "carol@example.com,Carol,pw\ndave@example.org,Dave,pw\n",
            "users.csv line 3: unknown domain: example.org",
        ),
        (
            "carol@example.com,Carol,pw\nalice@example.com,A,pw\n",
            "users.csv line 3: user already exists: alice@",
        ),
        (
            "carol@example.com,Carol,pw\nCarol@example.com,C,pw\n",
            "users.csv line 3: carol@example.com is already on line 2",
        ),
        (
            "carol@example.com,Carol,pw\ndave@example.com,Dave\n",
            "users.csv line 3: expected 3 fields, found 2",
        ),
        ("carol@example.com,Carol,pw\ndave@example.com,Dave,\n", "users.csv line 3: the password is empty"),
        ("carol@example.com,Carol,pw\ndave@example.com,Da\x07ve,pw\n",
         "users.csv line 3: name: control characters are not allowed"),
    ],
)
def test_a_bad_csv_row_is_named_and_nothing_is_written(hosted, rows, error):
    hosted.ok("user", "add", "alice@example.com", "--password", "pw")
    (hosted.folder / "users.csv").write_text("jid,name,password\n" + rows, encoding="utf-8")
    assert hosted.fails("user", "import", "users.csv").startswith(error)
    assert hosted.ok("user", "list", "example.com") == "alice@example.com\t\n"


def test_details_no_client_could_read_are_refused(hosted):
    """A control character in a name would make the whole domain's roster unreadable XML."""
    assert hosted.fails("user", "add", "carol@example.com", "--name", "Carol\x1b[2J", "--password", "pw") == \
        "name: control characters are not allowed"
    assert hosted.fails("user", "add", "carol@example.com", "--title", "Boss\x7f", "--password", "pw") == \
        "title: control characters are not allowed"
    assert hosted.fails("alias", "add", "team@example.com", "alice@example.com", "--name", "T\x08") == \
        "name: control characters are not allowed"


def test_a_bad_csv_file_is_named(hosted):
    (hosted.folder / "cols.csv").write_text("jid,name,secret\nalice@example.com,A,pw\n")
    assert hosted.fails("user", "import", "cols.csv").startswith("cols.csv line 1: unknown column 'secret'")
    (hosted.folder / "short.csv").write_text("jid,name\nalice@example.com,A\n")
    assert hosted.fails("user", "import", "short.csv") == "short.csv line 1: missing column 'password'"
    assert hosted.fails("user", "import", "missing.csv").startswith("missing.csv: cannot read the file")


def test_configuration_errors_are_one_line(admin, tmp_path):
    (tmp_path / "bad.ini").write_text("[storage]\nbackend = postgres\n")
    assert admin.fails("-c", "bad.ini", "domain", "list") == (
        "[storage] backend = 'postgres': expected sqlite, redis, postgresql or memory"
    )
    assert "cannot read the configuration file" in admin.fails("-c", "absent.ini", "domain", "list")


def test_config_option_names_the_database(admin, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "chat.ini").write_text("[storage]\npath = data/other.sqlite\n")
    admin.ok("--config", str(other / "chat.ini"), "domain", "add", "example.net")
    assert (other / "data" / "other.sqlite").is_file()
    assert admin.ok("domain", "list") == ""  # the default ./tap-config.ini names another file


def test_usage_errors_exit_2(admin):
    result = admin("user", "frobnicate")
    assert result.returncode == 2
    assert "usage: chatgate-admin" in result.stderr
    result = admin("user", "add", "a@example.com", "--password", "x", "--password-stdin")
    assert result.returncode == 2


@pytest_twisted.ensureDeferred
async def test_a_running_service_hears_the_admin_change(hosted):
    """What the admin process writes reaches the service's watchers within a poll interval."""
    service = SQLiteDirectory(hosted.database, 0.05)
    changes: list[Change] = []
    service.watch(changes.append)
    await service.start()
    polling = TimerService(service.poll_interval, service.poll)  # the service's directory-feed
    polling.startService()
    try:
        await threads.deferToThread(hosted.ok, "user", "add", "alice@example.com", "--password", "pw")
        await threads.deferToThread(hosted.ok, "domain", "disable", "example.com")
        deadline = time.monotonic() + 5
        while len(changes) < 2 and time.monotonic() < deadline:
            await deferLater(reactor, 0.02, lambda: None)
        assert changes == [
            Change("user-added", "example.com", "alice"),
            Change("domain-disabled", "example.com"),
        ]
    finally:
        await polling.stopService()
        await service.stop()


def test_aliases_are_made_changed_and_removed(hosted):
    for user in ("alice", "bob", "carol"):
        hosted.ok("user", "add", f"{user}@example.com", "--password", "pw")
    assert hosted.ok("alias", "add", "Sales@example.com", "alice@example.com", "bob@example.com",
                     "--name", "Sales Team") == "added alias sales@example.com with 2 members\n"
    assert hosted.ok("alias", "add", "sales@example.com", "carol@example.com") == (
        "alias sales@example.com has 3 members\n")
    assert hosted.ok("alias", "members", "sales@example.com") == (
        "alice@example.com\nbob@example.com\ncarol@example.com\n")
    assert hosted.ok("alias", "list", "example.com") == (
        "sales@example.com\tSales Team\talice@example.com bob@example.com carol@example.com\n")
    assert hosted.ok("alias", "remove", "sales@example.com", "bob@example.com") == (
        "alias sales@example.com has 2 members\n")
    hosted.ok("user", "remove", "carol@example.com")
    assert hosted.ok("alias", "members", "sales@example.com") == "alice@example.com\n"
    assert hosted.ok("alias", "remove", "sales@example.com") == "removed alias sales@example.com\n"
    assert hosted.ok("alias", "list", "example.com") == ""


def test_alias_errors_are_one_line(hosted):
    hosted.ok("user", "add", "alice@example.com", "--password", "pw")
    hosted.ok("domain", "add", "example.org")
    assert hosted.fails("alias", "add", "alice@example.com") == "address already in use: alice@example.com"
    assert hosted.fails("alias", "add", "team@example.com", "zed@example.com") == "unknown user: zed@example.com"
    assert hosted.fails("alias", "add", "team@example.com", "alice@example.org") == (
        "alice@example.org is not of the alias's domain example.com")
    assert hosted.fails("alias", "members", "team@example.com") == "unknown alias: team@example.com"
    assert hosted.fails("alias", "remove", "team@example.com") == "unknown alias: team@example.com"
    hosted.ok("alias", "add", "team@example.com", "alice@example.com")
    assert hosted.fails("user", "add", "team@example.com", "--password", "pw") == (
        "user already exists: team@example.com")
    assert "invalid" in hosted.fails("alias", "add", "bad alias@example.com")


def test_sites_show_and_hide_the_chat_link(admin):
    assert admin.ok("site", "add", "Mail.Reseller.net", "--owner", "Reseller Inc.") == (
        "site mail.reseller.net: chat link shown\n")
    admin.ok("site", "add", "webmail.example.com", "--hide-chat-link")
    assert admin.ok("site", "list") == (
        "mail.reseller.net\tchat link shown\tReseller Inc.\nwebmail.example.com\tchat link hidden\t\n")
    assert admin.ok("site", "hide", "mail.reseller.net") == "site mail.reseller.net: chat link hidden\n"
    assert admin.ok("site", "show", "webmail.example.com") == "site webmail.example.com: chat link shown\n"
    assert admin.ok("site", "remove", "webmail.example.com") == "removed site webmail.example.com\n"
    assert admin.fails("site", "show", "webmail.example.com") == "unknown site: webmail.example.com"
    assert "at least one dot" in admin.fails("site", "add", "intranet")


def test_a_password_saslprep_refuses_is_named_with_its_line(hosted):
    rows = "jid,name,password\nok@example.com,Ok,fine\nbad@example.com,Bad,a\u0007b\n"
    (hosted.folder / "users.csv").write_text(rows)
    assert hosted.fails("user", "import", "users.csv").startswith("users.csv line 3: ")
