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
from typing import Self

import redis

from monitor.model.keys import Keys
from monitor.store.embedded import REDIS_TUNING, free_port, redis_binary
from tests.waiting import wait_for


def wait_port(port: int, timeout_s: float = 10.0) -> None:
    """Wait until something listens on 127.0.0.1:port."""
    def listening() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    wait_for(listening, timeout_s, f"something listening on port {port}", ignoring=(OSError,), interval_s=0.02)


class ServerProc:
    """A server we start as our child on a free port, with a data directory kept across restarts.

    Subclasses say only what differs: the command line (`argv`), when it is ready (`ready`) and
    whether `restart` stops it cleanly or kills it (`clean_restart`).
    """

    clean_restart = False
    #: exceptions `ready()` raises while the server is still coming up
    not_ready: tuple[type[BaseException], ...] = (OSError,)

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        """The server's command line (writes any config file it needs)."""
        raise NotImplementedError

    def ready(self) -> bool:
        """True once the server answers."""
        raise NotImplementedError

    def start(self) -> Self:
        """Start it and wait until it answers; fail at once if it exits instead."""
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{type(self).__name__} exited with {self.proc.returncode}; see {self.dir}")
            return self.ready()

        wait_for(up, 10, f"{type(self).__name__} on port {self.port}", ignoring=self.not_ready, interval_s=0.02)
        return self

    def kill(self) -> None:
        """kill -9: no shutdown, no final fsync or save."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        """SIGTERM: the server shuts down cleanly (saves what it persists on exit)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def restart(self, down_s: float = 0.0) -> None:
        """Take it down (`stop` if `clean_restart`, else `kill`), stay down `down_s`, start again."""
        self.stop() if self.clean_restart else self.kill()
        time.sleep(down_s)  # a real outage of the asked length, not a synchronisation
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections stay open, nothing answers)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after pause()."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)


class RedisProc(ServerProc):
    """A redis-server we own: AOF with fsync always, restartable on the same port and dir."""

    not_ready = (redis.ConnectionError, redis.BusyLoadingError)

    def __init__(self, workdir: Path, port: int | None = None, binary: str | None = None,
                 password: str = "", extra_args: tuple[str, ...] = ()) -> None:
        super().__init__(workdir, port)
        self.binary = binary or shutil.which("redis-server") or redis_binary()
        self.password = password  # requirepass, when set
        self.extra_args = extra_args  # e.g. ("--enable-debug-command", "local"), ("--enable-protected-configs", "yes")

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        return [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "",
                "--logfile", str(self.dir / "redis.log"), *REDIS_TUNING,
                *(["--requirepass", self.password] if self.password else []), *self.extra_args]

    def ready(self) -> bool:
        with redis.Redis(port=self.port, socket_connect_timeout=0.2, password=self.password or None) as client:
            return bool(client.ping())

    def admin(self) -> redis.Redis:
        """A client for fault injection on this server of ours (CONFIG SET, REPLICAOF, DEBUG)."""
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=10,
                           password=self.password or None)


class RedisClusterProc:
    """A Redis Cluster we own: `masters` × `redis-server --cluster-enabled yes` (plus
    `replicas` per master) on free ports, joined by `redis-cli --cluster create`.

    Each node is a RedisProc (AOF, fsync always) with its own data directory and
    nodes.conf; `url` is the `redis+cluster://` seed list every role is given.
    """

    def __init__(self, workdir: Path, masters: int = 3, replicas: int = 0,
                 node_timeout_ms: int = 1000) -> None:
        self.dir = workdir
        extra = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--cluster-node-timeout", str(node_timeout_ms),
                 "--cluster-require-full-coverage", "no")
        # the cluster bus port defaults to port + 10000, which fails for ephemeral ports
        self.nodes = [RedisProc(workdir / f"node-{i}", extra_args=(*extra, "--cluster-port", str(free_port())))
                      for i in range(masters * (1 + replicas))]
        self.replicas = replicas

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> Self:
        for n in self.nodes:
            n.start()
        subprocess.run([shutil.which("redis-cli") or "redis-cli", "--cluster", "create",
                        *(f"127.0.0.1:{n.port}" for n in self.nodes),
                        "--cluster-replicas", str(self.replicas), "--cluster-yes"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)

        def all_ok() -> bool:
            return all(n.admin().cluster("info").get("cluster_state") == "ok" for n in self.nodes)

        wait_for(all_ok, 30, "cluster_state:ok on every node", ignoring=(redis.RedisError,))
        return self

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def _live(self) -> RedisProc:
        return next(n for n in self.nodes if n.proc is not None and n.proc.poll() is None)

    def node_for_slot(self, slot: int) -> RedisProc:
        """The node that serves `slot` now (its master), as the cluster itself (a live node) says."""
        for lo, hi, master, *_rep in self._live().admin().execute_command("CLUSTER", "SLOTS"):
            if lo <= slot <= hi:
                port = int(master[1])
                return next(n for n in self.nodes if n.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def masters(self) -> list[RedisProc]:
        """The nodes that are masters with slots now."""
        ports = {int(m[1]) for _lo, _hi, m, *_r in self._live().admin().execute_command("CLUSTER", "SLOTS")}
        return [n for n in self.nodes if n.port in ports]


class MosquittoProc(ServerProc):
    """A mosquitto we own on a free port, with persistence, optional ACL and passwords."""

    clean_restart = True  # mosquitto saves sessions and queued messages on SIGTERM

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = "") -> None:
        super().__init__(workdir, port)
        self.extra_conf = extra_conf
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
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
        return [self.binary, "-c", str(conf)]

    def ready(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
            return True


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


def delete_clinic_keys(client: redis.Redis, keys: Keys) -> None:
    """Remove every key of a test clinic (its prefix) from a Redis the tests share."""
    for k in client.scan_iter(match=keys.prefix.replace("{", "\\{").replace("}", "\\}") + "*", count=1000):
        client.delete(k)


def kill_quietly(proc: subprocess.Popen[bytes] | None) -> None:
    """Stop a child process we started, whatever state it is in."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM) if proc.pid == os.getpgid(proc.pid) else proc.terminate()
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        proc.kill()
