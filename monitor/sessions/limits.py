"""Per-session alarm-limit overrides as a nurse sets them: validation, the effective view, apply.

The core write is `monitor.sessions.lifecycle.set_limit` (hash `keys.session_limits(sid)`, a `limit`
session event and a `session.limit` audit entry). This module is what the CLI
(`vitalwatch session limit`) and the dashboard's room page share on top of it:

- `limit_spec` (pure) checks what a person typed — known metric, values inside the metric's
  accepted range (CONTRACT "Metrics and units"), low < high, a known priority, a delay the
  config would accept — and returns the AlarmSpec fields to store;
- `effective_limits` (pure) is the layered view config ← room ← session the engine applies
  (`monitor.alarms.rules.build_rules`), with the fields that come from the session marked;
- `apply_limit` merges the change field by field into the metric's current session override
  (`merged_override`: fields left out keep their value, a field given as "none" is
  removed), validates the result over the room's limits (set_limit with `cfg` refuses
  low ≥ high after the merge) and writes it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import redis

from monitor.alarms.rules import build_rules, parse_session_limits
from monitor.model.config import PRIORITIES, AlarmSpec, Config
from monitor.model.keys import Keys
from monitor.model.readings import METRICS
from monitor.sessions import lifecycle as sessions

SPEC_FIELDS = ("low", "high", "priority", "delay_s")
UNSET = "none"  # a field given as this word is removed from the override (`--high none`)
MAX_DELAY_S = 300.0  # AlarmSpec.delay_s accepts 0..300 s


def _number(metric: str, name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise sessions.InvalidEvent(f"{metric} {name}: {value!r} is not a number") from None
    if not math.isfinite(v):
        raise sessions.InvalidEvent(f"{metric} {name}: {value!r} is not a finite number")
    m = METRICS[metric]
    if not m.low <= v <= m.high:
        raise sessions.InvalidEvent(
            f"{metric} {name} {v:g} is outside the accepted range {m.low:g}–{m.high:g} {m.unit}")
    return v


def limit_spec(metric: str, low: float | None = None, high: float | None = None,
               priority: str | None = None, delay_s: float | None = None) -> dict[str, Any]:
    """Validate one override as typed (pure); the AlarmSpec fields to store. Raises InvalidEvent."""
    if metric not in METRICS:
        raise sessions.InvalidEvent(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    lo, hi = _number(metric, "low", low), _number(metric, "high", high)
    if lo is not None and hi is not None and lo >= hi:
        raise sessions.InvalidEvent(f"{metric}: low ({lo:g}) must be below high ({hi:g})")
    if priority is not None and priority not in PRIORITIES:
        raise sessions.InvalidEvent(f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}")
    spec: dict[str, Any] = {"low": lo, "high": hi, "priority": priority}
    if delay_s is not None:
        try:
            d = float(delay_s)
        except (TypeError, ValueError):
            raise sessions.InvalidEvent(f"{metric} delay: {delay_s!r} is not a number") from None
        if not (math.isfinite(d) and 0 <= d <= MAX_DELAY_S):
            raise sessions.InvalidEvent(f"{metric} delay {delay_s} s must be between 0 and {MAX_DELAY_S:g} s")
        spec["delay_s"] = d
    spec = {k: v for k, v in spec.items() if v is not None}
    if not spec:
        raise sessions.InvalidEvent(f"nothing to set for {metric}: give a low, high, priority or delay "
                                    "(or clear the override)")
    return spec


def effective_limits(cfg: Config, room: str, raw_limits: Mapping[str, str] | None = None
                     ) -> dict[str, dict[str, Any]]:
    """metric → the limits the engine applies in `room` now (pure).

    Each entry: `low`, `high`, `priority`, `delay_s`, `hysteresis`, `session` (names of the
    fields that come from the session override), `ignored` (why a stored override is not
    applied, else None). Metrics with neither a limit nor an override are left out.
    """
    rules, _problems = build_rules(cfg, room, raw_limits or {})
    over, bad = parse_session_limits(raw_limits or {})
    out: dict[str, dict[str, Any]] = {}
    for metric in METRICS:
        base = cfg.alarm_spec(room, metric)
        spec = over.get(metric)
        ignored = next((p.split("ignored: ", 1)[-1] for p in bad if p.startswith(f"session limit for {metric} ")),
                       None)
        fields: list[str] = []
        if spec is not None:
            merged = base.merged(spec) if base else spec
            if merged.low is not None and merged.high is not None and merged.low >= merged.high:
                ignored = f"low {merged.low:g} is not below high {merged.high:g}"
            else:
                fields = [k for k in SPEC_FIELDS + ("hysteresis", "latching")
                          if getattr(spec, k) is not None]
        rule = rules.get(metric)
        if rule is None and spec is None and ignored is None:
            continue
        shown = base if rule is None else None
        out[metric] = {
            "low": rule.low if rule else (shown.low if shown else None),
            "high": rule.high if rule else (shown.high if shown else None),
            "priority": rule.priority if rule else (shown.priority if shown else None),
            "delay_s": rule.delay_ms / 1000 if rule else (shown.delay_s if shown else None),
            "hysteresis": rule.hysteresis if rule else None,
            "session": fields,
            "ignored": ignored,
        }
    return out


def read_raw(client: redis.Redis, keys: Keys, sid: str) -> dict[str, str]:
    """The session's raw limits hash (metric → JSON), as the engine reads it."""
    return client.hgetall(keys.session_limits(sid))  # type: ignore[return-value]


def is_unset(value: Any) -> bool:
    """True for the word that removes one field from an override (`--high none`)."""
    return isinstance(value, str) and value.strip().lower() == UNSET


def merged_override(metric: str, current: Mapping[str, Any], low: Any = None, high: Any = None,
                    priority: Any = None, delay_s: Any = None) -> dict[str, Any]:
    """The metric's override after one change (pure): each field given replaces the stored one,
    a field given as `UNSET` ("none") is removed, every other stored field stays. The result
    is validated as a whole (low < high). Raises InvalidEvent; `{}` means no override is left."""
    given = {"low": low, "high": high, "priority": priority, "delay_s": delay_s}
    if all(v is None for v in given.values()):
        raise sessions.InvalidEvent(f"nothing to set for {metric}: give a low, high, priority or delay "
                                    f"(a field as {UNSET!r} removes it; or clear the override)")
    removed = {k for k, v in given.items() if is_unset(v)}
    new = {k: v for k, v in given.items() if v is not None and k not in removed}
    if new:
        new = limit_spec(metric, **new)  # the typed values, checked on their own
    elif metric not in METRICS:
        raise sessions.InvalidEvent(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    out = {k: v for k, v in current.items() if k not in removed and v is not None}
    out.update(new)
    fields = {k: out.get(k) for k in SPEC_FIELDS}
    if any(v is not None for v in fields.values()):
        limit_spec(metric, **fields)  # the merged whole: low < high
    return out


def apply_limit(client: redis.Redis, keys: Keys, cfg: Config, sid: str, user: str, metric: str,
                low: float | str | None = None, high: float | str | None = None,
                priority: str | None = None, delay_s: float | str | None = None,
                clear: bool = False) -> dict[str, Any] | None:
    """Change (or with `clear`, remove) one metric's override for an open session; audited.

    The change merges field by field into the session's current override for the metric:
    a field left out (None) keeps its stored value, one given as `UNSET` ("none") is removed
    (the room's value applies again). Returns the stored override, `{}` when none is left, or
    None when there was nothing to clear (nothing is written then). Raises UnknownSession,
    SessionClosed or InvalidEvent.
    """
    head = sessions.get_session(client, keys, sid)
    if head is None:
        raise sessions.UnknownSession(sid)
    if clear:
        if any(v is not None for v in (low, high, priority, delay_s)):
            raise sessions.InvalidEvent("clear removes the whole override: give no values with it")
        if metric not in METRICS:
            raise sessions.InvalidEvent(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
        if head.get("state") == "open" and not client.hexists(keys.session_limits(sid), metric):
            return None
        return sessions.set_limit(client, keys, sid, user, metric, {}, cfg=cfg)
    current: dict[str, Any] = {}
    if metric in METRICS:
        try:
            loaded = json.loads(read_raw(client, keys, sid).get(metric) or "{}")
        except ValueError:
            loaded = {}  # an unreadable stored override is replaced, as the engine ignores it
        current = loaded if isinstance(loaded, dict) else {}
    spec = merged_override(metric, current, low, high, priority, delay_s)
    if spec:
        AlarmSpec.model_validate(spec)  # same model the engine decodes with; limit_spec is stricter
    return sessions.set_limit(client, keys, sid, user, metric, spec, cfg=cfg)


def describe(metric: str, eff: Mapping[str, Any] | None) -> str:
    """One line for people: `sbp: low 90 · high 190* · high priority · delay 0 s (* session)`."""
    if not eff:
        return f"{metric}: no limits"
    marks = set(eff.get("session") or [])

    def part(name: str, text: str) -> str:
        return text + ("*" if name in marks else "")

    bits = []
    for side in ("low", "high"):
        if eff.get(side) is not None:
            bits.append(part(side, f"{side} {eff[side]:g}"))
    if eff.get("priority"):
        bits.append(part("priority", f"{eff['priority']} priority"))
    if eff.get("delay_s") is not None:
        bits.append(part("delay_s", f"delay {eff['delay_s']:g} s"))
    text = f"{metric}: " + (" · ".join(bits) or "no limits")
    if marks:
        text += "  (* = session override)"
    if eff.get("ignored"):
        text += f"  [session override ignored: {eff['ignored']}]"
    return text
