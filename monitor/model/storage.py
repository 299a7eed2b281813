"""Whether accepted readings are reaching Redis: the storage state a writer reports (pure).

A `StorageState` is the writer's own account of its work, taken at one instant:
- `state` is `storing` while Redis accepts its writes, `failing` from the first refused or
  unanswered write until one succeeds again;
- `cause` says why in words a nurse or an admin can act on ("Redis out of memory (OOM
  command not allowed when used memory > 'maxmemory')"), `code` the same as a machine code;
- `pending` / `oldest_pending_ms` say what is waiting: readings accepted but not yet
  confirmed stored, and when the oldest of them was accepted (host clock).

`vitalwatch ingest` writes it beside its heartbeat (`vw:{c}:storage`, JSON per instance,
docs/redis-keys.md) whenever Redis accepts that write. Readers — the alert engine, the
dashboard, `/health`, an outbound pager — decide with `problem()`: readings accepted but
not stored for longer than a few seconds mean VitalWatch is NOT MONITORING, for `cause`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

STORING = "storing"
FAILING = "failing"
STATES = (STORING, FAILING)

# Readings waiting longer than this are "not being stored" (a healthy writer stores within
# a few ms; a transient reconnect within well under a second).
STALL_AFTER_MS = 3000

# Machine codes of causes (`StorageState.code`), with what they mean.
CODES: Mapping[str, str] = {
    "": "storing",
    "unreachable": "Redis cannot be reached (refused, reset, DNS, TLS)",
    "timeout": "Redis does not answer in time (hung, overloaded, network stall)",
    "oom": "Redis is out of memory (maxmemory reached, noeviction)",
    "readonly": "Redis is a read-only replica (after a failover, or misconfigured)",
    "misconf": "Redis cannot persist to disk and refuses writes (MISCONF)",
    "loading": "Redis is loading its dataset after a restart",
    "busy": "Redis is blocked by a long-running script",
    "auth": "Redis refused our credentials (NOAUTH, WRONGPASS)",
    "noperm": "Redis user lacks permission for the write (ACL)",
    "replicas": "Redis has too few replicas to accept writes",
    "cluster": "Redis cluster is down or resharding",
    "refused": "Redis refused the write for another reason",
    "internal": "an unexpected error in the writer (a bug; see the log)",
}


@dataclass(frozen=True, slots=True)
class StorageState:
    """A writer's storage state at one instant (host clock, ms since the epoch)."""

    state: str = STORING
    cause: str = ""
    code: str = ""
    since_ms: int = 0
    pending: int = 0
    oldest_pending_ms: int | None = None
    last_stored_ms: int | None = None
    spooled: int = 0
    spool_error: str = ""
    counters: Mapping[str, int] = field(default_factory=dict)
    # set when reported with a heartbeat: when, and worker threads the process restarted
    updated_ms: int | None = None
    restarts: Mapping[str, int] = field(default_factory=dict)

    @property
    def storing(self) -> bool:
        """True while Redis accepts the writer's writes."""
        return self.state == STORING

    def pending_age_ms(self, now_ms: int) -> int:
        """How long the oldest accepted, not yet stored entry has waited (0 when none)."""
        if not self.pending or self.oldest_pending_ms is None:
            return 0
        return max(0, now_ms - self.oldest_pending_ms)

    def stalled(self, now_ms: int, after_ms: int = STALL_AFTER_MS) -> bool:
        """True when accepted entries have waited longer than `after_ms` to be stored."""
        return self.pending_age_ms(now_ms) > after_ms

    def problem(self, now_ms: int, after_ms: int = STALL_AFTER_MS) -> str | None:
        """A sentence for NOT MONITORING screens and pages, or None while readings are stored.

        e.g. "readings are not being stored (12 s, 340 waiting): Redis out of memory (…)".
        """
        if not self.stalled(now_ms, after_ms):
            return None
        why = self.cause or self.spool_error or "reason unknown"
        age_s = self.pending_age_ms(now_ms) // 1000
        return f"readings are not being stored ({age_s} s, {self.pending} waiting): {why}"

    def to_json(self) -> str:
        """JSON for the `storage` hash."""
        d = asdict(self)
        d["counters"] = dict(self.counters)
        d["restarts"] = dict(self.restarts)
        return json.dumps(d, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> StorageState | None:
        """Parse what `to_json` wrote (unknown fields ignored); None if it is not that."""
        try:
            d = json.loads(text)
        except ValueError:
            return None
        if not isinstance(d, dict) or d.get("state") not in STATES:
            return None
        try:
            return cls(
                state=str(d["state"]), cause=str(d.get("cause", "")), code=str(d.get("code", "")),
                since_ms=int(d.get("since_ms", 0)), pending=int(d.get("pending", 0)),
                oldest_pending_ms=_opt_int(d.get("oldest_pending_ms")),
                last_stored_ms=_opt_int(d.get("last_stored_ms")), spooled=int(d.get("spooled", 0)),
                spool_error=str(d.get("spool_error", "")),
                counters={str(k): int(v) for k, v in (d.get("counters") or {}).items()},
                updated_ms=_opt_int(d.get("updated_ms")),
                restarts={str(k): int(v) for k, v in (d.get("restarts") or {}).items()})
        except (TypeError, ValueError, AttributeError):
            return None


def _opt_int(v: object) -> int | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise TypeError(f"not a number: {v!r}")
    return int(v)


@dataclass(frozen=True, slots=True)
class StoredMark:
    """The newest reading of one device that Redis confirmed: its label and receive time."""

    ts_ms: int  # the reading's `ts` (device label)
    recv_ms: int  # when VitalWatch accepted it (host clock)
    stored_ms: int  # when Redis confirmed it (host clock)


@dataclass(frozen=True, slots=True)
class DeviceBacklog:
    """One device's readings accepted and not yet stored."""

    pending: int = 0
    oldest_ms: int | None = None  # acceptance time of the oldest of them (host clock)

    def age_ms(self, now_ms: int) -> int:
        """How long the oldest waited (0 when nothing is pending)."""
        return max(0, now_ms - self.oldest_ms) if self.pending and self.oldest_ms is not None else 0

    def heard_ms(self, stored_recv_ms: int | None) -> int | None:
        """When the device was last heard from, as far as storage goes (its status's
        `last_recv_ms`): the receive time of its newest stored reading — or, if newer, of the
        oldest reading still waiting to be stored. A waiting reading is on its way: once it
        has waited longer than the device's silence time the adapter reports "readings not
        being stored" instead. Without this, a device that keeps sending looked silent while
        its readings queued briefly behind others (a spool replayed after a restart, a
        reconnect), and the status still carried a receive time from before the gap."""
        waiting = self.oldest_ms if self.pending else None
        if waiting is None or (stored_recv_ms is not None and stored_recv_ms >= waiting):
            return stored_recv_ms
        return waiting


def storage_problems(records: Mapping[str, str], fresh: set[str] | None, now_ms: int,
                     after_ms: int = STALL_AFTER_MS) -> list[str]:
    """Sentences for the storage records (`storage` hash: `<role>:<instance>` → JSON) of
    instances still alive (`fresh` names them; None = all) whose readings are not being stored."""
    out = []
    for name, text in sorted(records.items()):
        if fresh is not None and name not in fresh:
            continue
        st = StorageState.from_json(text)
        if st is None:
            continue
        msg = st.problem(now_ms, after_ms)
        if msg:
            out.append(f"{name}: {msg}")
    return out
