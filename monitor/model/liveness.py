"""Is Redis taking writes? One cause, in words, from what a reader can see (pure).

When Redis refuses writes — out of memory (`OOM`), a read-only replica after a failover
(`READONLY`), a disk it cannot persist to (`MISCONF`), loading its dataset, blocked by a
script — no reading is stored, and nothing can say so *through* Redis: the ingest's storage
record and every heartbeat stop updating, and stale heartbeats alone would only be noticed
after `heartbeat_stale_s` and be misread as "alert engine not running". Readers therefore
look for themselves:
- their own **write probe**: the heartbeat each of them writes every second — refused, with
  which reply, since when (`WriteProbe`, built by the caller from the error);
- **Redis's own state** (INFO: memory, replication, persistence; read with
  monitor.store.redis_health.refusal_from_info), which says *why* in detail and is readable
  while writes are refused;
- the **writers' storage records** (monitor.model.storage, ingest's `storage` hash), while
  their writer is alive: readings accepted and waiting, and why (`storage_stalled`).
`not_storing()` makes the first two one sentence, "readings are not being stored: Redis out of
memory (3300000 of maxmemory 1 bytes used; OOM)", once the refusal has lasted
`WRITE_GRACE_MS`. While it holds, stale heartbeats are its consequence, not separate problems.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from monitor.model.storage import StorageState

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


def not_storing(probe: WriteProbe, info_cause: str | None, now_ms: int,
                grace_ms: int = WRITE_GRACE_MS) -> str | None:
    """"readings are not being stored: <cause>" once Redis has refused writes server-wide for
    `grace_ms`; None otherwise (a refusal of our own credentials is `own_write_problem`'s).

    `info_cause` is what Redis's INFO says (monitor.store.redis_health.refusal_from_info:
    "Redis out of memory (3300000 of maxmemory 1 bytes used; OOM)"); without it, the probe's
    own words and Redis's reply."""
    if probe.ok or probe.code not in SERVER_WIDE or probe.refused_for_ms(now_ms) < grace_ms:
        return None
    why = info_cause or (f"{probe.words or probe.code} ({probe.reply})" if probe.reply else probe.words or probe.code)
    return f"readings are not being stored: {why}"


def storage_stalled(records: Mapping[str, str], fresh: set[str], now_ms: int) -> list[str]:
    """"readings are not being stored (12 s, 340 waiting): <cause>" for each live writer
    (`fresh` names its `<role>:<instance>`) whose storage record (monitor.model.storage) says
    accepted readings have waited too long; identical sentences once (pure)."""
    out: list[str] = []
    for name in sorted(records):
        if name not in fresh:
            continue
        st = StorageState.from_json(records[name])
        msg = st.problem(now_ms) if st is not None else None
        if msg and msg not in out:
            out.append(msg)
    return out


def own_write_problem(probe: WriteProbe, role: str, now_ms: int, grace_ms: int = WRITE_GRACE_MS) -> str | None:
    """A refusal that concerns only this reader (its credentials, its ACL permissions, an
    unknown reply), once it lasted `grace_ms`: the reader cannot record that it is alive."""
    if probe.ok or probe.code in SERVER_WIDE or probe.refused_for_ms(now_ms) < grace_ms:
        return None
    why = probe.words or probe.code or "refused"
    return f"this {role} cannot write to Redis: {why}" + (f" ({probe.reply})" if probe.reply else "")
