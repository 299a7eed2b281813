"""Checks shared by the MQTT payload codecs (json, senml): size, UTF-8, strict JSON, times.

Pure functions, total: whatever the bytes, they return or raise `PayloadError` — never
another exception (a 400-digit number, a time of 1e306 s, JSON nested a thousand deep are
refusals, not crashes). Each `PayloadError` carries the rejects reason code, so a codec can
turn it into one `Refusal` for the whole message.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from monitor.model.readings import Reading, Refusal

MAX_PAYLOAD_BYTES = 64 * 1024  # CONTRACT.md: payload ≤ 64 KiB
MAX_DEPTH = 32  # JSON nesting: a reading needs 3 (SenML: array → record → value)
# Times a device may send (ms since the epoch): from 1970 to the end of year 9999. Beyond,
# it is not a clock reading at all (`bad_ts`), not merely a skewed one (`clock_skew`).
MAX_TS_MS = 253_402_300_799_999


class PayloadError(ValueError):
    """A whole payload refused: `reason` is the rejects reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _no_constants(name: str) -> Any:
    # Python's json accepts NaN/Infinity; they are not JSON and never a vital sign.
    raise ValueError(f"{name} is not valid JSON")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for k, v in pairs:
        if k in obj:
            # which of two values would be "the" heart rate is a guess: refuse instead
            raise PayloadError("bad_shape", f"duplicate key {k!r}")
        obj[k] = v
    return obj


def nesting_depth(text: str) -> int:
    """How deep arrays/objects nest in JSON text (brackets inside strings do not count)."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif c in "]}":
            depth -= 1
    return deepest


def load_json(payload: bytes) -> Any:
    """Size → UTF-8 → nesting → strict JSON (no NaN, no duplicate keys); raise PayloadError."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PayloadError("bad_utf8", f"not UTF-8 at byte {e.start}") from e
    if not text.strip():
        raise PayloadError("invalid_json", "empty payload")
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        # the parser recurses per level: refuse before it runs out of stack
        raise PayloadError("too_deep", f"JSON nested {depth} levels deep (at most {MAX_DEPTH})")
    try:
        return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicate_keys)
    except PayloadError:
        raise
    except RecursionError as e:  # cannot happen below MAX_DEPTH; refused all the same
        raise PayloadError("too_deep", "JSON nested too deep") from e
    except ValueError as e:  # json.JSONDecodeError; also integers of over 4300 digits
        raise PayloadError("invalid_json", str(e)[:200]) from e


def finite(value: object) -> float | None:
    """`value` as a finite float if it is a JSON number that fits one, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        f = float(value)
    except OverflowError:  # an integer beyond a float's range
        return None
    return f if math.isfinite(f) else None


def ms_from_seconds(seconds: float) -> int:
    """A time in seconds (SenML) → integer ms; PayloadError `bad_ts` when not a clock time."""
    ms = seconds * 1000.0
    if not math.isfinite(ms) or abs(ms) > MAX_TS_MS:
        raise PayloadError("bad_ts", f"time {seconds!r} s is out of range")
    return int(round(ms))


def parse_ts_ms(value: object) -> int:
    """A device `ts`: ms since the epoch (number) or ISO-8601 text with an offset → ms."""
    if isinstance(value, bool):
        raise PayloadError("bad_ts", f"ts {value!r} is not a time")
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise PayloadError("bad_ts", f"ts {value!r} is not a time")
        if not 0 <= value <= MAX_TS_MS:
            raise PayloadError("bad_ts", f"ts {_short(value)} is out of range (ms since 1970, before 10000)")
        return int(round(value))
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError as e:
            raise PayloadError("bad_ts", f"ts {value[:64]!r} is not ISO-8601") from e
        if dt.tzinfo is None or dt.utcoffset() is None:
            # local time of which zone? a guess here would shift a whole session's chart
            raise PayloadError("bad_ts", f"ts {value[:64]!r} has no UTC offset")
        try:
            return int(round(dt.timestamp() * 1000))
        except (OverflowError, ValueError, OSError) as e:
            raise PayloadError("bad_ts", f"ts {value[:64]!r} is out of range") from e
    raise PayloadError("bad_ts", f"ts of type {type(value).__name__} is not a time")


def _short(value: object, limit: int = 40) -> str:
    """repr() cut to `limit` characters (a 400-digit number in a detail helps nobody)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text)} chars)"


def finish(
    reading: Reading | None, refusals: list[Refusal], source: str, payload: bytes
) -> tuple[list[Reading], list[Refusal]]:
    """Codec epilogue: a reading whose only content is our own `clock_skew` flag is no
    reading; a message that yields nothing at all is refused (`bad_shape`), never ignored."""
    if reading is not None and not reading.values and reading.flags <= {"clock_skew"}:
        reading = None
    if reading is None and not refusals:
        refusals = [Refusal(source, "bad_shape", "no metric values or flags", payload)]
    return ([reading] if reading is not None else []), refusals
