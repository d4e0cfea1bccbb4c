"""Fixtures every kind of test shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.postgres_server import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on a free loopback port for the whole run; each user of it takes a
    new database (:meth:`PostgresServer.database`)."""
    server = PostgresServer().start()
    yield server
    server.stop()
