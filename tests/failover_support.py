"""A Redis Sentinel group of our own for failover tests and benchmarks: a master, a replica
and three `redis-server --sentinel` processes, all on free ports (tests/servers.py's
ServerProc), with Sentinel's timers lowered so a failover takes ~1–2 s instead of ~30 s.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Self

import redis

from monitor.store.embedded import free_port
from tests.servers import RedisProc, ServerProc
from tests.waiting import wait_for

MASTER_NAME = "vwmaster"
DOWN_AFTER_MS = 1000  # Sentinel: master subjectively down after this long without a reply (400 ms flip-flops under load)
FAILOVER_TIMEOUT_MS = 2000


class SentinelProc(ServerProc):
    """One `redis-server --sentinel` watching `master_port` on 127.0.0.1 (quorum 2)."""

    clean_restart = True

    def __init__(self, workdir: Path, master_port: int, password: str = "",
                 sentinel_password: str = "", binary: str = "", tls: tuple[str, ...] = ()) -> None:
        super().__init__(workdir)
        self.tls = tls  # redis-server TLS options (then `tls_port` is what others reach)
        self.tls_port = free_port() if tls else 0
        self.myid = secrets.token_hex(20)
        self.known: list[str] = []  # `sentinel known-…` lines: peers and replicas, so no discovery wait
        self.master_port = master_port
        self.password = password  # the Redis servers' requirepass
        self.sentinel_password = sentinel_password  # this Sentinel's own requirepass
        self.binary = binary

    def argv(self) -> list[str]:
        conf = self.dir / "sentinel.conf"
        if not conf.exists():  # Sentinel rewrites its file with what it learned; keep that
            lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.dir}",
                     f"logfile {self.dir / 'sentinel.log'}",
                     f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 2",
                     f"sentinel down-after-milliseconds {MASTER_NAME} {DOWN_AFTER_MS}",
                     f"sentinel failover-timeout {MASTER_NAME} {FAILOVER_TIMEOUT_MS}",
                     f"sentinel parallel-syncs {MASTER_NAME} 1", f"sentinel myid {self.myid}",
                     *self.known]
            if self.tls:  # `--tls-x v` on the command line is `tls-x v` in the file
                opts = list(self.tls)
                lines += [f"tls-port {self.tls_port}",
                          *(f"{k[2:]} {v}" for k, v in zip(opts[::2], opts[1::2], strict=True))]
            if self.password:
                lines.append(f"sentinel auth-pass {MASTER_NAME} {self.password}")
            if self.sentinel_password:
                lines.append(f"requirepass {self.sentinel_password}")
            conf.write_text("\n".join(lines) + "\n")
        return [self.binary, str(conf), "--sentinel"]

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=2,
                           password=self.sentinel_password or None)

    def ready(self) -> bool:
        with self.client() as c:
            return bool(c.ping())

    def master_port_seen(self) -> int | None:
        with self.client() as c:
            addr = c.execute_command("SENTINEL", "get-master-addr-by-name", MASTER_NAME)
        return int(addr[1]) if addr else None


class SentinelGroup:
    """Master + replica (+ optional more) + 3 Sentinels; `url` is the redis+sentinel:// URL.

    `master` and `replica` are the RedisProc objects by their *starting* roles; after a
    failover use `current_master()` to see which one Sentinel promoted.
    """

    def __init__(self, workdir: Path, *, password: str = "", sentinel_password: str = "",
                 master_args: tuple[str, ...] = (), tls: tuple[Path, Path, Path] | None = None) -> None:
        """`tls` = (CA, certificate, key): servers and Sentinels also listen with TLS, replicate
        and talk to each other over it, and `url()` is a `rediss+sentinel://` URL to the TLS
        ports (the plain ports stay for the test's own admin clients)."""
        self.password = password
        self.sentinel_password = sentinel_password
        self.ca = tls[0] if tls else None
        tls_opts: tuple[str, ...] = ()
        if tls:
            tls_opts = ("--tls-ca-cert-file", str(tls[0]), "--tls-cert-file", str(tls[1]),
                        "--tls-key-file", str(tls[2]), "--tls-auth-clients", "no", "--tls-replication", "yes")
        # a full sync starts at once (Redis waits 5 s for more replicas to join by default)
        auth = ("--masterauth", password) if password else ()
        auth = (*auth, "--repl-diskless-sync-delay", "0")
        m_tls, r_tls = (free_port(), free_port()) if tls else (0, 0)
        self.master = RedisProc(workdir / "master", password=password,
                                extra_args=(*auth, *master_args, *tls_opts,
                                            *(("--tls-port", str(m_tls)) if tls else ())))
        replica_port = free_port()
        self.replica = RedisProc(workdir / "replica", port=replica_port, password=password,
                                 extra_args=(*auth, *master_args, *tls_opts,
                                             *(("--tls-port", str(r_tls)) if tls else ()),
                                             "--replicaof", "127.0.0.1", str(m_tls or self.master.port)))
        # the port others (Sentinels, replicas, clients) reach each server on
        self.reached = {m_tls or self.master.port: self.master, r_tls or replica_port: self.replica}
        self.sentinels = [SentinelProc(workdir / f"sentinel-{i}", m_tls or self.master.port, password,
                                       sentinel_password, self.master.binary, tls_opts) for i in range(3)]
        for s in self.sentinels:
            s.known = [f"sentinel known-replica {MASTER_NAME} 127.0.0.1 {r_tls or replica_port}",
                       *(f"sentinel known-sentinel {MASTER_NAME} 127.0.0.1 {o.tls_port or o.port} {o.myid}"
                         for o in self.sentinels if o is not s)]

    @property
    def servers(self) -> list[RedisProc]:
        return [self.master, self.replica]

    def url(self, db: int = 0) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.ca:
            hosts = ",".join(f"127.0.0.1:{s.tls_port}" for s in self.sentinels)
            return f"rediss+sentinel://{auth}{hosts}/{MASTER_NAME}/{db}?ssl_ca_certs={self.ca}"
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{auth}{hosts}/{MASTER_NAME}/{db}"

    def start(self) -> Self:
        self.master.start()
        self.replica.start()
        wait_for(self._replica_synced, 15, "replica in sync with the master")
        for s in self.sentinels:
            s.start()
        # every Sentinel knows the replica and the two others (else no quorum for a failover)
        wait_for(self._sentinels_agree, 20, "Sentinels see the replica and each other")
        return self

    def _replica_synced(self) -> bool:
        info = self.replica.admin().info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        for s in self.sentinels:
            with s.client() as c:
                m = c.execute_command("SENTINEL", "MASTER", MASTER_NAME)
                state = dict(zip(m[::2], m[1::2], strict=True)) if isinstance(m, list) else m
                if int(state["num-slaves"]) < 1 or int(state["num-other-sentinels"]) < 2:
                    return False
        return True

    def current_master(self) -> RedisProc:
        """The server the Sentinels name as master now."""
        return self.reached[self.sentinels[0].master_port_seen() or 0]

    def wait_failover(self, old: RedisProc, timeout_s: float = 20.0) -> RedisProc:
        """Wait until every Sentinel names a master other than `old`; return it."""
        def moved() -> RedisProc | None:
            ports = {s.master_port_seen() for s in self.sentinels if s.proc and s.proc.poll() is None}
            named = {self.reached.get(p or 0) for p in ports}
            return named.pop() if len(named) == 1 and None not in named and old not in named else None
        new = wait_for(moved, timeout_s, "Sentinels to promote the replica", ignoring=(redis.RedisError,))
        wait_for(lambda: new.admin().info("replication").get("role") == "master", timeout_s,
                 "the promoted replica to answer as master")
        return new

    def rejoin(self, old: RedisProc, new: RedisProc) -> None:
        """Start `old` again as a replica of `new` — what Sentinel does by itself ~8 s after
        it sees the old master back (it waits 4 hello periods before reconfiguring it)."""
        old.start()
        port = next(p for p, s in self.reached.items() if s is new)
        old.admin().replicaof("127.0.0.1", str(port))

    def stop(self) -> None:
        for p in [*self.sentinels, *self.servers]:
            p.kill()
