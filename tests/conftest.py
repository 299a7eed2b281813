"""Shared fixtures: real Redis and Mosquitto, a unique clinic per test, config files.

- `redis_url`: a Redis we start for the session on a free port (or the one named by
  VITALWATCH_TEST_REDIS, if set) — never whatever happens to run on this machine, so a run
  here is the run a fresh machine gets. Tests isolate by clinic id (key prefix).
- `redis_proc` / `mosquitto_proc` / `pg_server`: servers of our own on free ports (tests/servers.py),
  for tests that kill or restart them.
- `make_config`: a validated config for this test's clinic (tests/configs.py builds every config).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from monitor.model.config import Config
from monitor.model.keys import Keys
from tests.configs import config_mapping, parsed
from tests.fault_support import DEBUG_ARGS
from tests.servers import MosquittoProc, PostgresProc, RedisProc, delete_clinic_keys

SHARED_REDIS = os.environ.get("VITALWATCH_TEST_REDIS", "")


@pytest.fixture(autouse=True)
def _root_logging_restored() -> Iterator[None]:
    """Tests that call `monitor.app.cli.main()` in-process run `setup_logging`, which points the
    root logger at that test's captured stderr; put the root logger back afterwards so later
    tests' threads never log into a closed stream (and put the umask back too)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    umask = os.umask(0o022)  # `cli.main()` sets the CLI's private umask; undone after the test
    os.umask(umask)
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    os.umask(umask)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if SHARED_REDIS:
        yield SHARED_REDIS
        return
    proc = RedisProc(tmp_path_factory.mktemp("redis-shared")).start()
    yield proc.url
    proc.stop()


@pytest.fixture
def clinic_id() -> str:
    return "t-" + uuid.uuid4().hex[:10]


@pytest.fixture
def keys(clinic_id: str) -> Keys:
    return Keys(clinic_id)


@pytest.fixture
def rclient(redis_url: str, keys: Keys) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    delete_clinic_keys(client, keys)
    client.close()


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProc]:
    proc = RedisProc(tmp_path / "redis").start()
    yield proc
    proc.kill()


@pytest.fixture
def fault_redis(tmp_path: Path) -> Iterator[RedisProc]:
    """A redis-server of our own that also takes DEBUG commands, to make it fail on purpose
    (tests/fault_support.py: OOM, READONLY, BUSY, NOAUTH, LOADING)."""
    proc = RedisProc(tmp_path / "fault-redis", extra_args=DEBUG_ARGS).start()
    yield proc
    proc.kill()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresProc]:
    """A private PostgreSQL cluster for the whole test session (initdb on a free port)."""
    workdir = Path(tempfile.mkdtemp(prefix="vw-pg-"))  # not pytest's 0700 tmp: `postgres` must enter it
    proc = PostgresProc(workdir).start()
    yield proc
    proc.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def mosquitto_proc(tmp_path: Path) -> Iterator[MosquittoProc]:
    proc = MosquittoProc(tmp_path / "mqtt").start()
    yield proc
    proc.kill()


@pytest.fixture
def make_config(clinic_id: str, redis_url: str, tmp_path: Path):
    """Build a validated Config for this test's clinic, on the test Redis, data in tmp
    (keyword arguments as for `tests.configs.config_mapping`)."""
    def _make(**overrides: Any) -> Config:
        args: dict[str, Any] = {"clinic": clinic_id, "redis_url": redis_url, "data_dir": tmp_path / "data",
                                "archive_url": f"sqlite:///{tmp_path / 'archive.db'}"}
        return parsed(config_mapping(**{**args, **overrides}))
    return _make
