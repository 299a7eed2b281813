"""The CSV export carries each value exactly as the stream holds it (not display-rounded).

Found by the whole-system test (tests/test_e2e_director.py): the CSV used the review's
one-decimal display format, so a Masimo PI of 4.72 was exported as 4.7 and the CSV no
longer equalled the session's readings.
"""

from __future__ import annotations

import csv
import io

from monitor.model.codec import to_fields
from monitor.model.readings import Reading
from monitor.sessions.export import csv_text
from monitor.sessions.review import READING_METRICS, SessionRecord


def test_csv_values_equal_the_stream_text() -> None:
    values = {"hr": 72.0, "spo2": 97.0, "pi": 4.72, "temp": 36.85, "sbp": 181.0, "map": 95.33}
    stored = to_fields(Reading(room="room-1", device="oxi-1", ts_ms=1_700_000_000_123, values=values))
    row = tuple(values.get(m) for m in READING_METRICS)
    rec = SessionRecord(header={"id": "s", "room": "room-1", "started_ms": 1_700_000_000_000},
                        events=[], readings=[(1_700_000_000_123, "oxi-1", None, row)], alert_events=[])
    (got,) = list(csv.DictReader(io.StringIO(csv_text(rec))))
    for m in READING_METRICS:
        assert got[m] == stored.get(m, ""), m
