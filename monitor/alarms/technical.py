"""Technical conditions that come from wall-clock state rather than from one reading.

- Device silent / offline, from the device status hashes the ingest adapters write
  (monitor/store/status.py) and the age of the device's last *stored* reading on the host's
  receive clock (`last_recv_ms`; a device clock that is behind does not make a device
  look silent; `last_ts`, its label, only for adapters that do not report it). The quiet time is
  protocol-aware: continuous devices `[alerts] quiet_s`; an NIBP by its longest cycle plus
  `nibp_grace_s` (a device seen sending only blood pressure counts as an NIBP);
  `DeviceConfig.silence_s` overrides both.
- Monitoring state: `monitoring_state(heartbeats, now_ms, cfg)` — pure, so the dashboard
  and `/health` can call it with the raw heartbeats hash even when no engine is running.
  A cause that touches many rooms (ingest down) is one clinic-wide alarm: see clinic.py.
All functions here are pure.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from monitor.model.config import Config, DeviceConfig, RoomConfig

from .model import Desired, TechRule
from .text import clean_detail

NIBP_DEFAULT_CYCLE_S = 300.0
ADAPTER_LATE_MS = 3000  # an adapter writes its devices' status every ~1 s: this late, it may be gone
NOT_STORED = "readings not being stored"  # how adapters word a silent state caused by storage


def device_quiet_s(dev: DeviceConfig, cfg: Config, bp_only: bool = False) -> float:
    """How long `dev` may send nothing before it counts as silent."""
    if dev.silence_s:
        return dev.silence_s
    if dev.protocol == "nibp-un300":
        cycles = [dev.nibp_cycle_s, *(dev.cycle_by_phase_s or {}).values()]
        return max(cycles) + cfg.alerts.nibp_grace_s
    if bp_only:
        return NIBP_DEFAULT_CYCLE_S + cfg.alerts.nibp_grace_s
    if dev.protocol == "hl7":  # monitors send ORU^R01 every few seconds to a minute
        return cfg.hl7.silence_s
    return cfg.alerts.quiet_s


def _int(text: Any) -> int | None:
    try:
        return int(float(text))
    except (TypeError, ValueError):
        return None


def device_conditions(room: RoomConfig, cfg: Config, statuses: Mapping[str, Mapping[str, str]],
                      now_ms: int, tech: Mapping[str, TechRule],
                      bp_only: Mapping[str, bool] | None = None,
                      skip: Collection[str] = ()) -> dict[str, Desired]:
    """Silent/offline conditions for the devices of `room` at `now_ms` (key "d:<dev>").

    Devices in `skip` (their silence is a clinic-wide cause's, see clinic.py), devices with
    no status hash (no adapter runs them: the clinic-wide ingest cause) and devices whose
    adapter is late writing their status (it may be gone: the clinic-wide cause decides) get
    no alarm of their own; a device whose adapter is (re)connecting gets one quiet period from
    then before the age of its last reading counts. A condition is raised once it has lasted
    its `delay_s`. The text never carries a port path or an errno (`text.clean_detail`).
    """
    out: dict[str, Desired] = {}
    for dev in room.devices:
        st = statuses.get(dev.id) or {}
        if dev.id in skip or not st or adapter_late(st, now_ms):
            continue
        quiet_s = device_quiet_s(dev, cfg, (bp_only or {}).get(dev.id, False))
        # receive time of the newest stored reading; the label only from older adapters
        last_ms = _int(st.get("last_recv_ms")) or _int(st.get("last_ts"))
        state = st.get("state", "")
        detail = clean_detail(st.get("detail", ""))
        since = _int(st.get("since_ms"))  # when the adapter's state began
        first_quiet = now_ms - (since or now_ms) < quiet_s * 1000  # still in one quiet period of it
        if state == "offline":
            cond, msg, start = "offline", f"{dev.id} offline" + (f": {detail}" if detail else ""), since
        elif last_ms is None:
            if first_quiet:
                continue  # connecting: give it one quiet period to send its first reading
            cond, msg, start = "silent", f"{dev.id}: no reading since it connected ({state or 'unknown'})", since
        elif state == "connecting" and first_quiet:
            # (re)connecting — e.g. ingest just restarted: the status still holds the receive
            # time the previous process stored, older than the quiet time by the length of the
            # restart. As for a first reading, one quiet period before that age counts.
            continue
        elif state == "silent" and detail.startswith(NOT_STORED):
            # readings arrive but Redis does not take them: say why (stable text, no age)
            cond, msg, start = "silent", f"{dev.id} silent: {detail}", since
        elif now_ms - last_ms > quiet_s * 1000:
            # no age in the text: the record would change every tick; the dashboard shows ages
            cond, msg, start = "silent", f"{dev.id} silent: no reading for over {quiet_s:g} s", last_ms + int(quiet_s * 1000)
        elif state == "silent":  # the adapter's own, shorter quiet time (e.g. 3 s for an oximeter)
            cond, msg, start = "silent", f"{dev.id} silent: no valid data", since
        else:
            continue
        rule = tech[cond]
        start = start if start is not None else now_ms
        if now_ms - start < rule.delay_ms:
            continue
        out[f"d:{dev.id}"] = Desired(key=f"d:{dev.id}", cond=cond, kind="technical", priority=rule.priority,
                                     message=msg, start_ms=start, dev=dev.id)
    return out


def adapter_late(status: Mapping[str, str], now_ms: int) -> bool:
    """True when a device's adapter has not written its status for ADAPTER_LATE_MS: its silence
    may be the adapter's, not the device's — the clinic-wide ingest cause decides."""
    updated = _int(status.get("updated_ms"))
    return updated is not None and now_ms - updated > ADAPTER_LATE_MS


@dataclass(frozen=True)
class RoleState:
    """Heartbeat picture of one role: live instances and stopped ones (with ages in ms)."""

    fresh: tuple[str, ...] = ()
    stale: tuple[tuple[str, int], ...] = ()
    newest_age_ms: int | None = None


@dataclass(frozen=True)
class MonitoringState:
    """Whether VitalWatch is monitoring; `problems` are human sentences, empty when ok."""

    ok: bool
    problems: tuple[str, ...]
    roles: Mapping[str, RoleState] = field(default_factory=dict)
    ingest_problems: tuple[str, ...] = ()
    engine_problems: tuple[str, ...] = ()  # the ones that stop monitoring in every room

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for /health and the dashboard)."""
        return {"ok": self.ok, "problems": list(self.problems),
                "roles": {r: {"fresh": list(s.fresh), "stale": [{"instance": i, "age_ms": a} for i, a in s.stale],
                              "newest_age_ms": s.newest_age_ms} for r, s in self.roles.items()}}


# No entry for a role: never started, or every instance stopped cleanly (a clean stop removes
# its entry, e.g. `kill` → exit 0 → the supervisor restarts it). Which one is not known.
NO_HEARTBEAT = "no heartbeat"


def monitoring_state(heartbeats: Mapping[str, str | int], now_ms: int, cfg: Config) -> MonitoringState:
    """Judge the heartbeats hash (`<role>:<instance>` → ms): is the engine and ingest alive?

    Degraded when no alert engine is alive, when no ingest process is alive (and devices are
    configured), or when any alert/ingest instance stopped heartbeating without a clean stop
    (clean stops remove their entry) within the last `heartbeat_forget_s`.
    """
    stale_ms = cfg.alerts.heartbeat_stale_s * 1000
    forget_ms = cfg.alerts.heartbeat_forget_s * 1000
    by_role: dict[str, dict[str, int]] = {}
    for name, value in heartbeats.items():
        role, _, inst = str(name).partition(":")
        try:
            by_role.setdefault(role, {})[inst] = int(value)
        except ValueError:
            continue
    roles: dict[str, RoleState] = {}
    for role, insts in by_role.items():
        fresh = tuple(sorted(i for i, ms in insts.items() if now_ms - ms <= stale_ms))
        stale = tuple(sorted((i, now_ms - ms) for i, ms in insts.items() if stale_ms < now_ms - ms <= forget_ms))
        newest = max(insts.values())
        roles[role] = RoleState(fresh, stale, now_ms - newest)
    problems: list[str] = []
    ingest: list[str] = []
    engine: list[str] = []
    alerts = roles.get("alerts", RoleState())
    if not alerts.fresh:
        when = f"last heartbeat {alerts.newest_age_ms // 1000} s ago" if alerts.newest_age_ms is not None else NO_HEARTBEAT
        problems.append(f"Alert engine not running ({when}): no alarms are being raised")
        engine.append("alert engine not running")
    for inst, age in alerts.stale:
        if alerts.fresh:
            problems.append(f"Alert worker {inst} stopped {age // 1000} s ago; its rooms are being taken over")
    ing = roles.get("ingest", RoleState())
    if cfg.devices() and not ing.fresh:
        when = f"last heartbeat {ing.newest_age_ms // 1000} s ago" if ing.newest_age_ms is not None else NO_HEARTBEAT
        problems.append(f"No ingest process running ({when}): no readings are coming in")
        ingest.append("no ingest process running")
    for inst, age in ing.stale:
        problems.append(f"Ingest process {inst} stopped heartbeating {age // 1000} s ago")
        ingest.append(f"ingest process {inst} stopped heartbeating")
    return MonitoringState(not problems, tuple(problems), roles, tuple(ingest), tuple(engine))
