"""Checks shared by the MQTT payload codecs (json, senml): size, UTF-8, strict JSON, times.

Pure functions. Each failure is a `PayloadError` carrying the contract's reason code, so a
codec can turn it into one `Refusal` for the whole message.
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from typing import Any

from monitor.model.readings import Reading, Refusal

MAX_PAYLOAD_BYTES = 64 * 1024  # CONTRACT.md: payload ≤ 64 KiB


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


def load_json(payload: bytes) -> Any:
    """Size → UTF-8 → strict JSON (no NaN, no duplicate keys); raise PayloadError."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise PayloadError("too_large", f"{len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PayloadError("bad_utf8", f"not UTF-8 at byte {e.start}") from e
    if not text.strip():
        raise PayloadError("invalid_json", "empty payload")
    try:
        return json.loads(text, parse_constant=_no_constants, object_pairs_hook=_no_duplicate_keys)
    except PayloadError:
        raise
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        raise PayloadError("invalid_json", str(e)[:200]) from e


def parse_ts_ms(value: object) -> int:
    """A device `ts`: ms since the epoch (number) or ISO-8601 text with an offset → ms."""
    if isinstance(value, bool):
        raise PayloadError("bad_ts", f"ts {value!r} is not a time")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0:
            raise PayloadError("bad_ts", f"ts {value!r} is not a time")
        return int(round(value))
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)
        except ValueError as e:
            raise PayloadError("bad_ts", f"ts {value[:64]!r} is not ISO-8601") from e
        if dt.tzinfo is None or dt.utcoffset() is None:
            # local time of which zone? a guess here would shift a whole session's chart
            raise PayloadError("bad_ts", f"ts {value[:64]!r} has no UTC offset")
        return int(round(dt.timestamp() * 1000))
    raise PayloadError("bad_ts", f"ts of type {type(value).__name__} is not a time")


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
