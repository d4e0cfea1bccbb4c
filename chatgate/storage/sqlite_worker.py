"""One thread owns the SQLite connection: what the SQLite stores share.

Every blocking sqlite3 call of a store runs on its own single worker thread,
so none runs on the reactor and none interleaves with another. The
connection is made there with ``busy_timeout`` (wait for another
connection's write lock instead of failing) and the WAL journal (readers
never wait for the writer); each store adds its own pragmas and creates its
schema in one ``BEGIN IMMEDIATE`` transaction. A new database file is created
0600 first (:mod:`chatgate.private_files`), so its -wal and -shm files are too.

A sqlite3 error becomes the store's own error class in one line,
``<path>: <reason>``; so does a call before :meth:`SQLiteWorker.start` or
after :meth:`SQLiteWorker.stop`.

The thread is a plain loop over a queue rather than Twisted's ThreadPool: the
pool wraps every call in a closure that refers to itself, one reference cycle
per call (hundreds a second under load) left for the cyclic garbage collector.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from chatgate.private_files import ensure_private_file

T = TypeVar("T")


class SQLiteWorker:
    """The worker thread of one store and the connection it owns.

    :class:`chatgate.storage.postgres.PostgresWorker` is the same thread on a
    PostgreSQL connection: it overrides the class attributes and :meth:`_open`.

    :param path: the SQLite file.
    :param name: the thread's name.
    :param error: the one-line error class of the store (DirectoryError, ArchiveError).
    :param not_started: what the error says of a call made while the thread is stopped.
    :param reactor: the reactor the results are handed back to.
    """

    #: the driver's errors, told in one line as the store's
    driver_error: type[Exception] = sqlite3.Error
    #: how a read transaction starts (a consistent snapshot) and a write one (the write lock taken first)
    begin_read = "BEGIN"
    begin_write = "BEGIN IMMEDIATE"

    def __init__(
        self, path: str, name: str, error: type[Exception], not_started: str, reactor: Any
    ) -> None:
        self.path = path
        self._error = error
        self._not_started = not_started
        self._reactor = reactor
        self._name = name
        self._calls: queue.SimpleQueue[tuple[Deferred[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._db: sqlite3.Connection | None = None
        self._shutdown_trigger: Any = None
        self._pending = 0

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def pending(self) -> int:
        """Calls handed over and not finished (for choosing among workers)."""
        return self._pending

    # -- life cycle

    async def start(self, setup: Callable[[sqlite3.Connection], T], pragmas: Iterable[str] = ()) -> T:
        """Start the thread and connect: the common pragmas, then *pragmas*, then
        *setup(db)* in one ``BEGIN IMMEDIATE`` transaction; return what it returns.
        On failure the connection is closed and the thread stopped again."""
        self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
        self._thread.start()
        self._shutdown_trigger = self._reactor.addSystemEventTrigger("during", "shutdown", self._stop_thread)
        try:
            return await self.run(self._open, setup, tuple(pragmas))
        except BaseException:
            self._stop_worker()
            raise

    async def stop(self) -> None:
        """Close the connection, after the work handed over before, and stop the thread."""
        if self._thread is None:
            return
        try:
            await self.run(self._close)
        finally:
            self._stop_worker()

    def _stop_worker(self) -> None:
        if self._shutdown_trigger is not None:
            self._reactor.removeSystemEventTrigger(self._shutdown_trigger)
            self._shutdown_trigger = None
        self._stop_thread()

    def _stop_thread(self) -> None:
        """Let the thread finish the calls handed over before, then end it."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._calls.put(None)
            thread.join()

    def _loop(self) -> None:
        while (call := self._calls.get()) is not None:
            result, work = call
            try:
                value = work()
            except BaseException:
                self._reactor.callFromThread(result.errback, Failure())
            else:
                self._reactor.callFromThread(result.callback, value)

    def _connect(self) -> Any:
        """A new connection, set up as every store of this kind needs it."""
        try:
            ensure_private_file(self.path)  # 0600 before SQLite makes it; its -wal and -shm files take its mode
        except OSError as e:
            raise self._error(f"{self.path}: cannot create the database: {e.strerror}") from None
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA busy_timeout = 5000")
            db.execute("PRAGMA journal_mode = WAL")
        except BaseException:
            db.close()
            raise
        return db

    def _open(self, setup: Callable[[Any], T], pragmas: tuple[str, ...]) -> T:
        """Connect, run the store's *pragmas*, then *setup(db)* in one write transaction."""
        db = self._connect()
        try:
            for pragma in pragmas:
                db.execute(pragma)
            result = transaction(db, self.begin_write, setup)
        except BaseException:
            db.close()
            raise
        self._db = db
        return result

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- running work on the thread

    def run(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run *work(*args)* on the thread; sqlite3 errors become the store's one-line error."""

        def guarded() -> T:
            try:
                return work(*args)
            except self.driver_error as e:
                raise self._error(f"{self.path}: {str(e).strip().splitlines()[0]}") from None

        if self._thread is None:
            return fail(self._error(f"{self.path}: {self._not_started}"))
        result: Deferred[T] = Deferred()
        self._pending += 1
        result.addBoth(self._finished)
        self._calls.put((result, guarded))
        return result

    def _finished(self, result: T) -> T:
        self._pending -= 1
        return result

    def read(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run *work(db, *args)* in one read transaction (one consistent snapshot)."""
        return self.run(self._transaction, self.begin_read, work, args)

    def write(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run *work(db, *args)* in one write transaction, taking the write lock first."""
        return self.run(self._transaction, self.begin_write, work, args)

    def _transaction(self, begin: str, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._db is None:
            raise self._error(f"{self.path}: {self._not_started}")
        return transaction(self._db, begin, work, *args)


def transaction(db: Any, begin: str, work: Callable[..., T], *args: Any) -> T:
    """*work(db, *args)* between *begin* and COMMIT; rolled back if anything fails."""
    db.execute(begin)
    try:
        result = work(db, *args)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return result


def execute_statements(db: sqlite3.Connection, script: str) -> None:
    """Run each statement of *script* (``;``-separated; a trigger's body keeps its own) in the
    transaction under way."""
    statement = ""
    for piece in script.split(";"):
        statement += piece + ";"
        if sqlite3.complete_statement(statement):
            if statement.strip(" \n;"):
                db.execute(statement)
            statement = ""
