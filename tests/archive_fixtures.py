"""Archive fixtures shared by the sessions/archive/review/export tests (imported by them).

`archive_url` is parametrised: a SQLite file in tmp, and a fresh database created for the
test (and dropped after it) on a private PostgreSQL cluster that the test session starts on
a free port (`pg_server` in conftest) — never a server that merely happens to run here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from monitor.sessions.archive import close_archive
from tests.servers import PostgresProc


@pytest.fixture
def pg_url(pg_server: PostgresProc) -> Iterator[str]:
    """A brand-new PostgreSQL database for this test (dropped afterwards)."""
    name = "vw_test_" + uuid.uuid4().hex[:10]
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_server.url(name)
    yield url
    close_archive(url)
    with psycopg.connect(pg_server.admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    """A SQLite archive in a not-yet-existing subdirectory (the archive creates it)."""
    url = f"sqlite:///{tmp_path / 'nested' / 'archive.db'}"
    yield url
    close_archive(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def archive_url(request: pytest.FixtureRequest) -> str:
    """Each archive backend in turn."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
