"""Config → alarm rules for one room: built-in defaults ← clinic ← room ← session overrides.

`Config.alarm_spec(room, metric)` merges the first three layers; a nurse's temporary
per-session overrides (hash `keys.session_limits(<open session>)`, metric → JSON of AlarmSpec
fields) are laid on top here; the engine reads that hash and passes it in. Latching comes
from the spec when it says so, else from `[alerts] latching` for the rule's priority. Pure:
no Redis, no clock.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

from pydantic import ValidationError

from monitor.model.config import TECHNICAL_CONDITIONS, AlarmSpec, Config
from monitor.model.readings import METRICS

from .model import Rule, TechRule

log = logging.getLogger(__name__)


def rule_from_spec(metric: str, spec: AlarmSpec, latching_by_priority: Mapping[str, bool]) -> Rule | None:
    """A Rule from a merged spec, or None when the spec has no limit at all."""
    if spec.low is None and spec.high is None:
        return None
    priority = spec.priority or "medium"
    latching = spec.latching if spec.latching is not None else latching_by_priority.get(priority, False)
    return Rule(metric=metric, low=spec.low, high=spec.high, priority=priority,
                delay_ms=int(round((spec.delay_s or 0) * 1000)), hysteresis=spec.hysteresis or 0.0,
                latching=bool(latching))


def parse_session_limits(raw: Mapping[str, str]) -> tuple[dict[str, AlarmSpec], list[str]]:
    """Decode a session-limits hash; (valid specs by metric, problems found)."""
    specs: dict[str, AlarmSpec] = {}
    problems: list[str] = []
    for metric, text in raw.items():
        if metric not in METRICS:
            problems.append(f"session limit for unknown metric {metric!r} ignored")
            continue
        try:
            specs[metric] = AlarmSpec.model_validate(json.loads(text))
        except (ValueError, ValidationError) as e:  # JSONDecodeError is a ValueError
            problems.append(f"session limit for {metric} ignored: {e}".splitlines()[0])
    return specs, problems


def build_rules(cfg: Config, room: str, session_limits: Mapping[str, str] | None = None
                ) -> tuple[dict[str, Rule], list[str]]:
    """metric → Rule for `room`, with the open session's overrides; plus problems (ignored overrides)."""
    over, problems = parse_session_limits(session_limits or {})
    rules: dict[str, Rule] = {}
    for metric in METRICS:
        spec = cfg.alarm_spec(room, metric)
        if metric in over:
            merged = spec.merged(over[metric]) if spec else over[metric]
            if merged.low is not None and merged.high is not None and merged.low >= merged.high:
                problems.append(f"session limit for {metric} ignored: low {merged.low:g} "
                                f"is not below high {merged.high:g}")
            else:
                spec = merged
        if spec is None:
            continue
        rule = rule_from_spec(metric, spec, cfg.alerts.latching)
        if rule is not None:
            rules[metric] = rule
    return rules, problems


def technical_rules(cfg: Config) -> dict[str, TechRule]:
    """condition → TechRule from TECHNICAL_DEFAULTS ← [alerts.technical]."""
    out = {}
    for name in TECHNICAL_CONDITIONS:
        priority, delay_s = cfg.alerts.technical_spec(name)
        out[name] = TechRule(name, priority, int(round(delay_s * 1000)))
    return out
