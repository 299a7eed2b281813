"""Is Redis taking writes? One cause, in words, from what a reader can see (pure).

When Redis refuses writes — out of memory (`OOM`), a read-only replica after a failover
(`READONLY`), a disk it cannot persist to (`MISCONF`), loading its dataset, blocked by a
script — no reading is stored, and nothing can say so *through* Redis: the ingest's storage
record and every heartbeat stop updating, and stale heartbeats alone would only be noticed
after `heartbeat_stale_s` and be misread as "alert engine not running". Readers therefore
look for themselves:
- their own **write probe**: the heartbeat each of them writes every second — refused, with
  which reply, since when (`WriteProbe`, built by the caller from the error);
- **Redis's own state** (`ServerState` from INFO: memory, replication, persistence), which
  says *why* in detail and is readable while writes are refused.
`not_storing()` combines them into one sentence, "readings are not being stored: Redis out
of memory (used 12.4 MB, maxmemory 10.0 MB)", once the refusal has lasted `WRITE_GRACE_MS`.
While it holds, stale heartbeats are its consequence, not separate problems.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Refusals that concern the whole server, so every writer (ingest too) meets them. A refusal
# of only our own credentials or permissions (NOAUTH, WRONGPASS, NOPERM) says nothing about
# whether ingest can store: it is this reader's problem, worded as such.
SERVER_WIDE = frozenset({"OOM", "READONLY", "MISCONF", "LOADING", "BUSY", "MASTERDOWN", "NOREPLICAS",
                         "CLUSTERDOWN", "TRYAGAIN", "EXECABORT"})
WRITE_GRACE_MS = 2000  # a refusal this long is an outage, not a blip (the probe runs every second)


@dataclass(frozen=True, slots=True)
class WriteProbe:
    """What this reader's own periodic write (its heartbeat) met: ok, or refused."""

    ok: bool = True
    code: str = ""  # the reply's first word ("OOM", "READONLY", …); "" when ok or unknown
    words: str = ""  # what it means ("Redis out of memory"; monitor.store.retry.words)
    reply: str = ""  # the error itself, for when nothing better explains it
    since_ms: int | None = None  # first refusal of the current episode

    def refused_for_ms(self, now_ms: int) -> int:
        """How long writes have been refused (0 when the last probe succeeded)."""
        return 0 if self.ok or self.since_ms is None else max(0, now_ms - self.since_ms)

    def after(self, now_ms: int, code: str = "", words: str = "", reply: str = "", *, ok: bool = False) -> WriteProbe:
        """The probe state after one more attempt (the episode start is kept while refused)."""
        if ok:
            return WriteProbe()
        since = self.since_ms if not self.ok and self.since_ms is not None else now_ms
        return WriteProbe(False, code, words, reply, since)


@dataclass(frozen=True, slots=True)
class ServerState:
    """The parts of Redis's INFO that say whether and why it refuses writes."""

    role: str = ""
    master_link_status: str = ""
    master: str = ""
    loading: bool = False
    used_memory: int = 0
    maxmemory: int = 0
    maxmemory_policy: str = ""
    rdb_last_bgsave_status: str = ""
    aof_enabled: bool = False
    aof_last_write_status: str = ""


def _int(v: Any) -> int:
    try:
        return int(v)
    except (TypeError, ValueError):
        return 0


def parse_info(info: Mapping[str, Any]) -> ServerState:
    """ServerState from an INFO reply as redis-py parses it (a flat mapping); unknown fields
    stay empty, so a reply of another shape gives an empty state, never an error."""
    return ServerState(
        role=str(info.get("role", "")), master_link_status=str(info.get("master_link_status", "")),
        master=f"{info['master_host']}:{info.get('master_port', '')}" if info.get("master_host") else "",
        loading=_int(info.get("loading")) == 1, used_memory=_int(info.get("used_memory")),
        maxmemory=_int(info.get("maxmemory")), maxmemory_policy=str(info.get("maxmemory_policy", "")),
        rdb_last_bgsave_status=str(info.get("rdb_last_bgsave_status", "")),
        aof_enabled=_int(info.get("aof_enabled")) == 1,
        aof_last_write_status=str(info.get("aof_last_write_status", "")))


def _mb(n: int) -> str:
    return f"{n / 1_048_576:.1f} MB" if n >= 104_858 else f"{n} bytes"


def server_detail(s: ServerState | None) -> str:
    """What INFO shows that would make Redis refuse writes, in words ("" when nothing does)."""
    if s is None:
        return ""
    parts = []
    if s.loading:
        parts.append("loading its dataset")
    if s.role in ("slave", "replica"):
        link = f", link to master {s.master} {s.master_link_status}" if s.master else ""
        parts.append(f"this server is a replica{link}")
    if s.maxmemory and s.used_memory >= s.maxmemory and s.maxmemory_policy in ("noeviction", ""):
        parts.append(f"used {_mb(s.used_memory)}, maxmemory {_mb(s.maxmemory)}")
    if s.aof_enabled and s.aof_last_write_status == "err":
        parts.append("last append-only-file write failed")
    if s.rdb_last_bgsave_status == "err":
        parts.append("last snapshot failed")
    return "; ".join(parts)


def not_storing(probe: WriteProbe, server: ServerState | None, now_ms: int,
                grace_ms: int = WRITE_GRACE_MS) -> str | None:
    """"readings are not being stored: <cause>" once Redis has refused writes server-wide for
    `grace_ms`; None otherwise (a refusal of our own credentials is `own_write_problem`'s)."""
    if probe.ok or probe.code not in SERVER_WIDE or probe.refused_for_ms(now_ms) < grace_ms:
        return None
    detail = server_detail(server) or probe.reply
    return f"readings are not being stored: {probe.words or probe.code}" + (f" ({detail})" if detail else "")


def own_write_problem(probe: WriteProbe, role: str, now_ms: int, grace_ms: int = WRITE_GRACE_MS) -> str | None:
    """A refusal that concerns only this reader (its credentials, its ACL permissions, an
    unknown reply), once it lasted `grace_ms`: the reader cannot record that it is alive."""
    if probe.ok or probe.code in SERVER_WIDE or probe.refused_for_ms(now_ms) < grace_ms:
        return None
    why = probe.words or probe.code or "refused"
    return f"this {role} cannot write to Redis: {why}" + (f" ({probe.reply})" if probe.reply else "")
