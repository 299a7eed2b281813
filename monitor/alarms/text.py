"""How an alarm reads, everywhere: one formatter for screens, review, PDF and pager payloads.

An alarm row reads "HIGH · Room 2 · SBP 186 > 180 mmHg · 2 min ago · now 161": priority,
room, what was beyond which limit (the value that raised it), when, and — on a live screen —
the value now. The condition text ("SBP 186 > 180 mmHg") is the alert's `message`, written
by the engine with `condition_text`; `alarm_line` puts the row together. The overview's
script (dashboard/assets/live.js `alarmLine`) builds the same row from the same parts; a
browser test feeds both the same table (tests/test_alarm_text.py). Pure: no I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from monitor.model.codec import fmt_value
from monitor.model.readings import short_label

SEP = " · "
PRIORITY_WORDS = {"high": "HIGH", "medium": "MEDIUM", "low": "LOW"}
# Compact units for alarm text and tiles ("beats/min" is too long for a row read at a glance).
DISPLAY_UNITS = {"hr": "/min", "spo2": "%", "sbp": "mmHg", "dbp": "mmHg", "map": "mmHg",
                 "rr": "/min", "temp": "°C", "pi": "%"}

# Technical texts never carry file paths or errno text: a nurse cannot act on
# "[Errno 2] No such file or directory: '/tmp/vitalwatch-demo-x/tty/oxi-1'".
_PATH = re.compile(r"""['"]?(?:/[\w.@%+=:,~-]+)+/?['"]?""")
_ERRNO = re.compile(r"\[Errno\s*-?\d+\]\s*")
_DETAIL_REASONS = (  # detail prefix written by an adapter → what the alarm says
    ("cannot open", "cannot open its port"),
    ("link lost", "connection lost"),
    ("ingest stopped", "its adapter stopped"),
    ("internal error", "adapter error (see the ingest log)"),
)


def unit(metric: str) -> str:
    """The compact unit shown after a metric's value."""
    return DISPLAY_UNITS.get(metric, "")


def _num(v: Any) -> str:
    try:
        return fmt_value(round(float(v), 1))
    except (TypeError, ValueError):
        return str(v)


def condition_text(metric: str, side: str, value: float, limit: float | None) -> str:
    """"SBP 186 > 180 mmHg" / "SpO2 84 < 90 %": a physiological alarm's condition."""
    op = ">" if side == "high" else "<"
    lim = f" {op} {_num(limit)}" if limit is not None else ""
    u = unit(metric)
    return f"{short_label(metric)} {_num(value)}{lim}{' ' + u if u else ''}"


def back_text(metric: str, value: float) -> str:
    """"SBP back to 161 mmHg": the text of a physiological alarm's `cleared` event."""
    u = unit(metric)
    return f"{short_label(metric)} back to {_num(value)}{' ' + u if u else ''}"


def clean_detail(detail: str) -> str:
    """An adapter's status detail as alarm text: known causes in plain words, never a file
    path or an errno (those stay in the device status and the ingest log for IT)."""
    low = detail.strip().lower()
    for prefix, said in _DETAIL_REASONS:
        if low.startswith(prefix):
            return said
    text = _ERRNO.sub("", _PATH.sub("", detail))
    return " ".join(text.replace("()", "").split()).strip(" :;,-")


def ago(seconds: float) -> str:
    """"just now", "40 s ago", "2 min ago", "3 h ago"."""
    s = max(0, int(seconds))
    if s < 5:
        return "just now"
    if s < 90:
        return f"{s} s ago"
    if s < 90 * 60:
        return f"{s // 60} min ago"
    return f"{s // 3600} h ago"


def alarm_line(rec: Mapping[str, Any], room_name: str, *, now_ms: int | None = None,
               when: str | None = None, current: float | None = None, tail: str = "") -> str:
    """One alarm as a row: "HIGH · Room 2 · SBP 186 > 180 mmHg · 2 min ago · now 161".

    `now_ms` gives the age ("2 min ago") from the record's `raised_ms` (or the event's `ts`);
    without it `when` (e.g. "10:32:05") stands there. `current` is the metric's value now
    (live screens); a latched alarm ends with "latched"; `tail` adds one more part.
    """
    parts = [PRIORITY_WORDS.get(str(rec.get("priority")), str(rec.get("priority") or "").upper()),
             room_name or ("All rooms" if rec.get("room") == "*" else str(rec.get("room") or "")),
             str(rec.get("message") or short_label(str(rec.get("metric") or "")))]
    raised = rec.get("raised_ms") if rec.get("raised_ms") is not None else rec.get("ts")
    if now_ms is not None and raised is not None:
        parts.append(ago((now_ms - int(raised)) / 1000))
    elif when:
        parts.append(when)
    if current is not None and rec.get("metric"):
        parts.append(f"now {_num(current)}")
    if rec.get("state") == "latched":
        parts.append("latched")
    if tail:
        parts.append(tail)
    return SEP.join(p for p in parts if p)
