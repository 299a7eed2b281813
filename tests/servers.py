"""Real servers for tests and benchmarks: our own redis-server / mosquitto on free ports.

Tests that stop, kill or restart a server use these (never the machine's shared ones).
Each keeps its data directory across restarts so AOF / persistence really matters.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from monitor.store.embedded import REDIS_TUNING, free_port, redis_binary


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    """Wait until something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {port}") from None
            time.sleep(0.02)


class RedisProc:
    """A redis-server we own: AOF with fsync always, restartable on the same port and dir."""

    def __init__(self, workdir: Path, port: int | None = None, binary: str | None = None,
                 password: str = "") -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.binary = binary or shutil.which("redis-server") or redis_binary()
        self.password = password  # requirepass, when set
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def start(self) -> RedisProc:
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--logfile", str(self.dir / "redis.log"), *REDIS_TUNING,
             *(["--requirepass", self.password] if self.password else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2, password=self.password or None)
        while True:
            try:
                client.ping()
                break
            except (redis.ConnectionError, redis.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        client.close()
        return self

    def kill(self) -> None:
        """kill -9: no shutdown, no final fsync."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self, down_s: float = 0.0) -> None:
        self.kill()
        time.sleep(down_s)
        self.start()


class MosquittoProc:
    """A mosquitto we own on a free port, with persistence, optional ACL and passwords."""

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "") -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.extra_conf = extra_conf
        self.proc: subprocess.Popen[bytes] | None = None
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> MosquittoProc:
        conf = self.dir / "mosquitto.conf"
        anon = "" if "allow_anonymous" in self.extra_conf else "allow_anonymous true\n"
        # as root, mosquitto drops to user "mosquitto" and then cannot write its log and
        # persistence file, nor read password/ACL/TLS files, in our 0700 temp directories
        me = "user root\n" if os.geteuid() == 0 else ""
        conf.write_text(
            f"{me}listener {self.port} 127.0.0.1\n{anon}"
            f"persistence true\npersistence_location {self.dir}/\n"
            "max_queued_messages 1000000\nmax_inflight_messages 100\n"
            f"log_dest file {self.dir}/mosquitto.log\n" + self.extra_conf)
        self.proc = subprocess.Popen([self.binary, "-c", str(conf)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM: mosquitto saves its persistence file on a clean stop."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()


def _postgres_bindir() -> Path:
    """Where Debian's `postgresql` package (or any install) keeps initdb and pg_ctl."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if not candidates:
        raise FileNotFoundError("initdb not found: install the 'postgresql' package "
                                "(scripts/install-system-deps.sh does)")
    return candidates[0].parent


class PostgresProc:
    """A private PostgreSQL cluster on a free port, created with initdb (trust auth).

    PostgreSQL refuses to run as root, so as root the cluster belongs to the `postgres`
    system user (created by the package) and its programs run under `runuser`.
    """

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.dir = workdir
        self.port = port or free_port()
        self.bindir = _postgres_bindir()
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv: str) -> None:
        subprocess.run([*self._as, *argv], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, timeout=120)

    def start(self) -> PostgresProc:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._as:
            shutil.chown(self.dir, "postgres", "postgres")
        data = self.dir / "data"
        if not data.exists():
            self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                      "-E", "UTF8", "--no-sync")
        opts = (f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories={self.dir} "
                "-c fsync=off -c max_connections=200")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "postgres.log"),
                  "-o", opts, "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        data = self.dir / "data"
        if data.exists():
            subprocess.run([*self._as, str(self.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                            "-w", "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)


def kill_quietly(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a child process we started, whatever state it is in."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM) if proc.pid == os.getpgid(proc.pid) else proc.terminate()
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        proc.kill()
