"""Every Redis key and stream field name VitalWatch uses, in one place.

All of one clinic's keys share the hash tag `{<clinic>}` so they live on one cluster shard.
Keys named by CONTRACT.md are marked (contract); the rest are ours and documented in
docs/redis-keys.md.
"""

from __future__ import annotations

from dataclasses import dataclass

# Stream fields of a vitals entry (contract).
F_TS = "ts"
F_DEV = "dev"
F_FLAGS = "flags"
# Receive time (ms, host clock) of a reading stored more than a second after it was
# accepted (an outage, a spool replay): consumers measure time on it rather than on the
# entry id, which is when Redis stored it. Absent on promptly stored readings.
F_RX = "rx"

# Stream fields of a rejects entry (contract).
REJECT_FIELDS = ("ts", "source", "reason", "detail", "raw")
REJECT_RAW_MAX = 512

# Stream fields of an alert event (contract).
ALERT_FIELDS = (
    "ts", "room", "alert", "event", "kind", "priority", "metric", "dev", "value", "limit",
    "message", "user",
)


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names for one clinic."""

    clinic: str

    @property
    def prefix(self) -> str:
        """`vw:{<clinic>}:` — the common prefix and cluster hash tag."""
        return f"vw:{{{self.clinic}}}:"

    def vitals(self, room: str) -> str:
        """(contract) Stream of readings for one room."""
        return f"{self.prefix}vitals:{room}"

    @property
    def alerts(self) -> str:
        """(contract) Stream of alert events."""
        return f"{self.prefix}alerts"

    @property
    def rejects(self) -> str:
        """(contract) Stream of refused inputs."""
        return f"{self.prefix}rejects"

    def device_status(self, device: str) -> str:
        """Hash: one device's connection state and counters (see monitor/store/status.py)."""
        return f"{self.prefix}device:{device}"

    @property
    def heartbeats(self) -> str:
        """Hash: `<role>:<instance>` → last heartbeat, ms since epoch."""
        return f"{self.prefix}heartbeats"

    @property
    def storage(self) -> str:
        """Hash: `<role>:<instance>` → JSON StorageState of that process's stream writer
        (monitor/model/storage.py), written with its heartbeat."""
        return f"{self.prefix}storage"

    @property
    def audit(self) -> str:
        """Stream: audit log (user, action, details); archived durably by the archive."""
        return f"{self.prefix}audit"

    def active_alerts(self, room: str) -> str:
        """Hash: alert id → JSON of the active alert's state, for one room."""
        return f"{self.prefix}active:{room}"

    def alarm_state(self, room: str) -> str:
        """Hash: the alert engine's per room/device/metric evaluation state."""
        return f"{self.prefix}alarmstate:{room}"

    def room_latest(self, room: str) -> str:
        """Hash: metric → JSON [value, ts ms, device] of the room's newest value, plus `_id` (the
        last stream id folded in); written by the alert engine with each reading batch."""
        return f"{self.prefix}latest:{room}"

    @property
    def outbound_cursor(self) -> str:
        """String: the last `alerts` stream id whose people-caused events went outbound."""
        return f"{self.prefix}outbound-cursor"

    def room_owner(self, room: str) -> str:
        """String with TTL: which alert worker owns a room's evaluation."""
        return f"{self.prefix}owner:{room}"

    def session(self, session_id: str) -> str:
        """Hash: one dosing session's header."""
        return f"{self.prefix}session:{session_id}"

    def session_events(self, session_id: str) -> str:
        """Stream: one session's events (dose, bp, note, observe, end)."""
        return f"{self.prefix}session-events:{session_id}"

    @property
    def trim_floor(self) -> str:
        """Hash: stream key → ms. Entries from then on are not archived yet (a session not
        archived began then): writers trim that stream by retention but never below it."""
        return f"{self.prefix}trim-floor"

    @property
    def open_sessions(self) -> str:
        """Hash: room → id of its open session."""
        return f"{self.prefix}open-sessions"

    @property
    def sessions_index(self) -> str:
        """Sorted set: session id scored by start time."""
        return f"{self.prefix}sessions"

    def session_limits(self, session_id: str) -> str:
        """Hash: a session's temporary alarm-limit overrides (metric → JSON)."""
        return f"{self.prefix}session-limits:{session_id}"

    @property
    def users(self) -> str:
        """Legacy hash: user name → JSON account record (read once, moved to `user(name)`)."""
        return f"{self.prefix}users"

    def user(self, name: str) -> str:
        """Hash: one account — name, role, pw_hash, disabled, epoch, created_ms, updated_ms."""
        return f"{self.prefix}user:{name}"

    @property
    def user_names(self) -> str:
        """Set: every account name."""
        return f"{self.prefix}user-names"

    def user_sessions(self, name: str) -> str:
        """Set: digests of one account's dashboard sign-ins (ended together on disable etc.)."""
        return f"{self.prefix}user-sessions:{name}"

    @property
    def tokens(self) -> str:
        """Hash: sha256(token) hex → JSON {name, scopes, created_ms, expires_ms, label, epoch}."""
        return f"{self.prefix}tokens"

    def login_failures(self, name_id: str) -> str:
        """Hash with TTL: failed sign-ins of one typed user name (by digest), total and per source."""
        return f"{self.prefix}login-fail:{name_id}"

    def login_source(self, source_id: str) -> str:
        """Hash with TTL: failed sign-ins from one source (IP address or station) over all names."""
        return f"{self.prefix}login-src:{source_id}"

    def login_known(self, name_id: str) -> str:
        """Set with TTL: sources a user name signed in from recently (exempt from the account limit)."""
        return f"{self.prefix}login-known:{name_id}"

    @property
    def audit_held(self) -> str:
        """Hash: anonymous source → JSON count of audit entries held back by the rate limit."""
        return f"{self.prefix}audit-held"

    def audit_rate(self, source_id: str, minute: int) -> str:
        """String with TTL: audit entries written for one anonymous source in one minute."""
        return f"{self.prefix}audit-rate:{source_id}:{minute}"

    def nibp_requests(self, device: str) -> str:
        """List: "measure now" requests for an NIBP device."""
        return f"{self.prefix}nibp-requests:{device}"

    @property
    def archive_topup_lock(self) -> str:
        """String with TTL: which process runs the archive's late-data top-up this minute."""
        return f"{self.prefix}archive-topup"

    @property
    def screens(self) -> str:
        """Hash: screen id → JSON {ts_ms, sound_on, user, role}; who is watching right now."""
        return f"{self.prefix}screens"

    def web_session(self, digest: str) -> str:
        """String with TTL: a dashboard sign-in, by sha256 of its cookie value → JSON
        {user, role, epoch, created_ms} (the cookie value itself is never stored)."""
        return f"{self.prefix}web-session:{digest}"

    def hl7_receipt(self, sender: str, control_id: str) -> str:
        """String with TTL: receive time (ms) first given to an HL7 message (MSH-3 + MSH-10)
        whose readings lacked a device time, so a re-sent copy gets the same time."""
        return f"{self.prefix}hl7-receipt:{sender}:{control_id}"

    def outbox(self, dest: str) -> str:
        """Stream: a destination's outbound messages, oldest first (monitor/store/outbox.py)."""
        return f"{self.prefix}outbox:{dest}"

    def outbox_state(self, dest: str) -> str:
        """Hash: a destination's sender state (cursor = last settled id, attempts, last error)."""
        return f"{self.prefix}outbox-state:{dest}"

    def outbox_failed(self, dest: str) -> str:
        """Hash: message id → JSON of a message the receiver refused (kept for resend)."""
        return f"{self.prefix}outbox-failed:{dest}"

    def outbox_lease(self, dest: str) -> str:
        """String with TTL: which process sends a destination's messages right now."""
        return f"{self.prefix}outbox-lease:{dest}"

    def outbox_keys(self, dest: str) -> str:
        """Sorted set: idempotency keys already enqueued for a destination, scored by time."""
        return f"{self.prefix}outbox-keys:{dest}"

    @property
    def outbox_destinations(self) -> str:
        """Set: every destination that has an outbox."""
        return f"{self.prefix}outbox-destinations"

    def hl7_live_cursor(self, dest: str) -> str:
        """Hash: room → last vitals-stream id sent live to a destination."""
        return f"{self.prefix}hl7-live:{dest}"

    def interop_lock(self, task: str) -> str:
        """String with TTL: which process runs an outbound task (`scan`, `live`) this round."""
        return f"{self.prefix}interop-lock:{task}"
