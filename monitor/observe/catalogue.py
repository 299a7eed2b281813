"""Every metric VitalWatch exports: name, type, labels, role and meaning (pure).

Names are as scraped: counters end in `_total`; a histogram `x_seconds` is scraped as
`x_seconds_bucket`, `_sum` and `_count`. Labels are configuration names (room and device
ids), machine codes (reasons, states) — never a session id or a patient identifier.
"""

from __future__ import annotations

from dataclasses import dataclass

COUNTER, GAUGE, HISTOGRAM = "counter", "gauge", "histogram"
INGEST, ALERTS, DASHBOARD = "ingest", "alerts", "dashboard"

# Every label any VitalWatch metric may carry (tests check scrapes against it).
LABELS = frozenset({"reason", "state", "code", "room", "device", "transport"})


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric family."""

    name: str  # as scraped (counters with `_total`)
    kind: str
    role: str
    labels: tuple[str, ...]
    help: str

    @property
    def base(self) -> str:
        """The family name prometheus_client takes (a counter without `_total`)."""
        return self.name[: -len("_total")] if self.kind == COUNTER and self.name.endswith("_total") else self.name

    def samples(self) -> tuple[str, ...]:
        """Sample names a scrape shows for this family."""
        if self.kind == HISTOGRAM:
            return (f"{self.name}_bucket", f"{self.name}_sum", f"{self.name}_count")
        return (self.name,)


SPECS: tuple[Spec, ...] = (
    # --- ingest: the stream writer and the devices --------------------------------------
    Spec("vitalwatch_readings_accepted_total", COUNTER, INGEST, (),
         "Readings accepted by this ingest process (queued to the stream writer)."),
    Spec("vitalwatch_readings_stored_total", COUNTER, INGEST, (),
         "Readings Redis confirmed stored in their room's stream."),
    Spec("vitalwatch_readings_duplicate_total", COUNTER, INGEST, (),
         "Readings not written again because a stored copy was found (redeliveries, re-sends)."),
    Spec("vitalwatch_readings_rejected_total", COUNTER, INGEST, ("reason",),
         "Frames, messages or readings refused at the edge, by reason (every one, before the "
         "rejects stream's 1/s rate limit)."),
    Spec("vitalwatch_writer_entries_written_total", COUNTER, INGEST, (),
         "Stream entries of every kind (readings, rejects) the writer stored."),
    Spec("vitalwatch_writer_failures_total", COUNTER, INGEST, (),
         "Write attempts Redis did not take (unreachable, timed out, refused)."),
    Spec("vitalwatch_writer_pending_entries", GAUGE, INGEST, (),
         "Entries accepted and not yet confirmed stored (memory, in flight and spool)."),
    Spec("vitalwatch_writer_spool_entries", GAUGE, INGEST, (),
         "Of those, entries held in the on-disk spool."),
    Spec("vitalwatch_writer_oldest_pending_seconds", GAUGE, INGEST, (),
         "How long the oldest entry not yet stored has waited (0 when none)."),
    Spec("vitalwatch_storage_storing", GAUGE, INGEST, (),
         "1 while Redis accepts the writer's writes, 0 while they fail."),
    Spec("vitalwatch_storage_failing_seconds", GAUGE, INGEST, (),
         "Seconds since writes began to fail (0 while storing)."),
    Spec("vitalwatch_storage_cause", GAUGE, INGEST, ("code",),
         "1 for the machine code of why writes fail (monitor/model/storage.py CODES), while they fail."),
    Spec("vitalwatch_device_state", GAUGE, INGEST, ("room", "device", "transport", "state"),
         "1 for each device's current state (connecting, online, silent, offline), 0 for the others."),
    Spec("vitalwatch_mqtt_connected", GAUGE, INGEST, (),
         "1 while the ingest's MQTT client is connected to the broker (absent without MQTT devices)."),
    Spec("vitalwatch_mqtt_inflight_messages", GAUGE, INGEST, (),
         "MQTT messages received and not yet acknowledged (waiting for Redis to store them)."),
    Spec("vitalwatch_hl7_connections", GAUGE, INGEST, (),
         "Open MLLP connections of the HL7 listener (absent without one)."),
    Spec("vitalwatch_hl7_inflight_messages", GAUGE, INGEST, (),
         "HL7 messages received and not yet answered (their ACK waits for Redis)."),
    # --- alerts: one alert-engine worker ------------------------------------------------
    Spec("vitalwatch_alert_evaluation_seconds", HISTOGRAM, ALERTS, (),
         "Time to evaluate one batch of readings (every room with news since the last read) and commit the outcomes."),
    Spec("vitalwatch_alert_raise_latency_seconds", HISTOGRAM, ALERTS, (),
         "From the receive time of the reading that raised an alarm to the alarm committed."),
    Spec("vitalwatch_alert_readings_evaluated_total", COUNTER, ALERTS, (),
         "Readings this worker evaluated."),
    Spec("vitalwatch_alert_events_total", COUNTER, ALERTS, (),
         "Alert events (raised, cleared, escalated…) this worker committed."),
    Spec("vitalwatch_alert_rooms_owned", GAUGE, ALERTS, (),
         "Rooms whose lease this worker holds (it evaluates them)."),
    Spec("vitalwatch_alert_clinic_lease", GAUGE, ALERTS, (),
         "1 while this worker holds the clinic lease (clinic-wide alarms, action forwarding)."),
    Spec("vitalwatch_alert_redis_failing", GAUGE, ALERTS, (),
         "1 while this worker's steps fail on Redis."),
    # --- dashboard: the push hub and sign-in ---------------------------------------------
    Spec("vitalwatch_ws_clients", GAUGE, DASHBOARD, (),
         "Browser tabs connected to this dashboard's live push (/ws/live)."),
    Spec("vitalwatch_push_lag_seconds", GAUGE, DASHBOARD, (),
         "How long the oldest reading stored in Redis and not yet pushed has waited (0 when "
         "the push is caught up; absent when Redis cannot be asked)."),
    Spec("vitalwatch_push_queue_max_messages", GAUGE, DASHBOARD, (),
         "Messages waiting in the fullest tab's queue (a tab is dropped at 2,000)."),
    Spec("vitalwatch_push_loop_progress_age_seconds", GAUGE, DASHBOARD, (),
         "Seconds since the push loop last completed an iteration (it blocks ≤ 0.5 s)."),
    Spec("vitalwatch_push_loop_ok", GAUGE, DASHBOARD, (),
         "1 while the push loop runs and makes progress; 0 while screens show it stalled."),
    Spec("vitalwatch_push_readings_total", COUNTER, DASHBOARD, (),
         "Readings the push loop sent to the tabs."),
    Spec("vitalwatch_push_tabs_dropped_total", COUNTER, DASHBOARD, (),
         "Tabs disconnected for falling too far behind (they reconnect)."),
    Spec("vitalwatch_push_redis_errors_total", COUNTER, DASHBOARD, (),
         "Push-loop iterations that failed on Redis."),
    Spec("vitalwatch_login_failures_total", COUNTER, DASHBOARD, ("reason",),
         "Refused sign-ins (form and station acting nurse), by reason: unknown, bad_password, "
         "disabled, throttled, busy."),
)

BY_NAME = {s.name: s for s in SPECS}


def spec(name: str) -> Spec:
    """The spec of metric `name` (KeyError for a name not in the catalogue)."""
    return BY_NAME[name]


def for_role(role: str) -> tuple[Spec, ...]:
    """The metrics a role exports."""
    return tuple(s for s in SPECS if s.role == role)


def sample_names() -> frozenset[str]:
    """Every sample name VitalWatch's own metrics can show in a scrape."""
    return frozenset(n for s in SPECS for n in s.samples())
