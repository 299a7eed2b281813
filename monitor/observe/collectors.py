"""Collectors that read a role's existing state when Prometheus scrapes (no work on hot paths).

The roles hand in their objects; nothing here imports them (duck typing keeps this package
below devices/, alarms/ and dashboard/ in the layers). Each collector yields only metrics of
`catalogue.py`, built by `family()` so names, types, labels and help never drift.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from monitor.model.clock import now_ms
from monitor.model.storage import StorageState
from monitor.observe.catalogue import COUNTER, GAUGE, HISTOGRAM, spec

log = logging.getLogger(__name__)

disable_created_metrics()  # no `_created` series: the process start time is in process_start_time_seconds

DEVICE_STATES = ("connecting", "online", "silent", "offline")
EVALUATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RAISE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def family(name: str) -> CounterMetricFamily | GaugeMetricFamily:
    """An empty counter or gauge family for metric `name`, with its catalogue labels and help."""
    s = spec(name)
    if s.kind == COUNTER:
        return CounterMetricFamily(s.base, s.help, labels=list(s.labels))
    if s.kind == GAUGE:
        return GaugeMetricFamily(s.name, s.help, labels=list(s.labels))
    raise ValueError(f"{name} is a {s.kind}: use a Histogram")


def one(name: str, value: float) -> Metric:
    """A family of `name` with one unlabelled sample."""
    m = family(name)
    m.add_metric([], float(value))
    return m


def _metric(name: str, labels: list[str] | None = None, buckets: tuple[float, ...] = ()) -> Any:
    """A process-wide Counter/Histogram for a catalogue name, registered nowhere (collectors
    hand it to each role's registry)."""
    s = spec(name)
    if s.kind == COUNTER:
        return Counter(s.base, s.help, list(s.labels), registry=None)
    if s.kind == HISTOGRAM:
        return Histogram(s.name, s.help, list(s.labels), registry=None, buckets=buckets)
    raise ValueError(name)


# Counted where they happen (each call is a dict lookup and a locked add: rare events only).
REJECTED = _metric("vitalwatch_readings_rejected_total")
LOGIN_FAILURES = _metric("vitalwatch_login_failures_total")


def rejected(reason: str, n: int = 1) -> None:
    """Count `n` refusals of `reason` (a machine code such as `bad_checksum`)."""
    REJECTED.labels(reason).inc(n)


def login_failed(reason: str) -> None:
    """Count one refused sign-in (`unknown`, `bad_password`, `disabled`, `throttled`, `busy`)."""
    LOGIN_FAILURES.labels(reason).inc()


class _Shared(Collector):
    """Yields process-wide metric objects into a role's registry."""

    def __init__(self, *metrics: Any) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for m in self.metrics:
            yield from m.collect()


def role_registry(*collectors: Collector) -> CollectorRegistry:
    """A registry for one role: its collectors plus the process's CPU, memory and fds."""
    reg = CollectorRegistry(auto_describe=False)
    ProcessCollector(registry=reg)
    for c in collectors:
        reg.register(c)
    return reg


# --- ingest -------------------------------------------------------------------------------
class Writer(Protocol):
    def storage(self) -> StorageState: ...


def storage_metrics(st: StorageState, now: int) -> Iterator[Metric]:
    """The writer's metrics from its storage state (pure)."""
    c = st.counters
    yield one("vitalwatch_readings_accepted_total", c.get("readings_accepted", 0))
    yield one("vitalwatch_readings_stored_total", c.get("readings_stored", 0))
    yield one("vitalwatch_readings_duplicate_total", c.get("duplicates_skipped", 0))
    yield one("vitalwatch_writer_entries_written_total", c.get("written", 0))
    yield one("vitalwatch_writer_failures_total", c.get("failures", 0))
    yield one("vitalwatch_writer_pending_entries", st.pending)
    yield one("vitalwatch_writer_spool_entries", st.spooled)
    yield one("vitalwatch_writer_oldest_pending_seconds", st.pending_age_ms(now) / 1000)
    yield one("vitalwatch_storage_storing", 1 if st.storing else 0)
    yield one("vitalwatch_storage_failing_seconds", 0 if st.storing else max(0, now - st.since_ms) / 1000)
    cause = family("vitalwatch_storage_cause")
    if not st.storing:
        cause.add_metric([st.code or "refused"], 1.0)
    yield cause


DeviceRow = tuple[str, str, str, str]  # room, device, transport, state


def device_metrics(rows: Iterable[DeviceRow]) -> Metric:
    """`vitalwatch_device_state`: 1 for each device's state, 0 for its other states (pure)."""
    m = family("vitalwatch_device_state")
    for room, device, transport, state in rows:
        state = state or "connecting"
        for s in (*DEVICE_STATES, *(() if state in DEVICE_STATES else (state,))):
            m.add_metric([room, device, transport, s], 1.0 if s == state else 0.0)
    return m


class IngestCollector(Collector):
    """An ingest process: its writer, its devices, its MQTT client and HL7 listener.

    `devices()` lists (room, device, transport, state); `mqtt()` gives (connected,
    in-flight) or None without MQTT devices; `hl7()` (connections, in-flight) or None.
    """

    def __init__(self, writer: Writer, devices: Callable[[], Iterable[DeviceRow]],
                 mqtt: Callable[[], tuple[bool, int] | None] = lambda: None,
                 hl7: Callable[[], tuple[int, int] | None] = lambda: None) -> None:
        self.writer, self.devices, self.mqtt, self.hl7 = writer, devices, mqtt, hl7

    def collect(self) -> Iterator[Metric]:
        yield from storage_metrics(self.writer.storage(), now_ms())
        yield from REJECTED.collect()
        yield device_metrics(self.devices())
        m = self.mqtt()
        if m is not None:
            yield one("vitalwatch_mqtt_connected", 1 if m[0] else 0)
            yield one("vitalwatch_mqtt_inflight_messages", m[1])
        h = self.hl7()
        if h is not None:
            yield one("vitalwatch_hl7_connections", h[0])
            yield one("vitalwatch_hl7_inflight_messages", h[1])


# --- alerts -------------------------------------------------------------------------------
class AlertMetrics:
    """The alert worker's histograms; `evaluated()`/`raised()` are its only hot-path calls
    (one locked bucket add per committed batch, one per raised alarm)."""

    def __init__(self) -> None:
        self.evaluation = _metric("vitalwatch_alert_evaluation_seconds", buckets=EVALUATION_BUCKETS)
        self.raise_latency = _metric("vitalwatch_alert_raise_latency_seconds", buckets=RAISE_BUCKETS)

    def evaluated(self, seconds: float) -> None:
        """One batch of readings (every room with news) evaluated and committed in `seconds`."""
        self.evaluation.observe(seconds)

    def raised(self, seconds: float) -> None:
        """One alarm committed `seconds` after its reading was received."""
        self.raise_latency.observe(max(0.0, seconds))


class AlertsCollector(Collector):
    """An alert worker (`monitor.alarms.engine.Worker`): leases, counters, histograms."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        w = self.worker
        obs: AlertMetrics = w.metrics
        yield from obs.evaluation.collect()
        yield from obs.raise_latency.collect()
        yield one("vitalwatch_alert_readings_evaluated_total", w.stats.readings)
        yield one("vitalwatch_alert_events_total", w.stats.events)
        yield one("vitalwatch_alert_rooms_owned", len(w.rooms))
        yield one("vitalwatch_alert_clinic_lease", 1 if w.holds_clinic else 0)
        yield one("vitalwatch_alert_redis_failing", 0 if w.failing_since_ms is None else 1)


# --- dashboard ----------------------------------------------------------------------------
class DashboardCollector(Collector):
    """A dashboard process: its push hub (read, never driven) and sign-in failures.

    `lag()` returns the push lag in seconds, or None when it cannot be measured now.
    """

    def __init__(self, hub: Any, lag: Callable[[], float | None]) -> None:
        self.hub, self.lag = hub, lag

    def collect(self) -> Iterator[Metric]:
        hub = self.hub
        tabs = _copy(lambda: list(hub.clients))
        yield one("vitalwatch_ws_clients", len(tabs))
        yield one("vitalwatch_push_queue_max_messages", max((c.queue.qsize() for c in tabs), default=0))
        health = hub.loop_health()
        yield one("vitalwatch_push_loop_progress_age_seconds", health["progress_age_s"])
        yield one("vitalwatch_push_loop_ok", 1 if health["ok"] else 0)
        stats = dict(hub.stats)
        yield one("vitalwatch_push_readings_total", stats.get("readings", 0))
        yield one("vitalwatch_push_tabs_dropped_total", stats.get("tabs_dropped", 0))
        yield one("vitalwatch_push_redis_errors_total", stats.get("redis_errors", 0))
        lag = self.lag()
        if lag is not None:
            yield one("vitalwatch_push_lag_seconds", lag)
        yield from LOGIN_FAILURES.collect()


def push_lag_s(client: Any, last_ids: dict[str, str], now: int) -> float:
    """Seconds the oldest entry stored after the hub's last pushed id has waited, over all
    streams (0 when every stream is caught up): one pipelined XRANGE per stream."""
    if not last_ids:
        return 0.0
    pipe = client.pipeline(transaction=False)
    for key, last in last_ids.items():
        pipe.xrange(key, min=f"({last}", count=1)
    oldest: int | None = None
    for entries in pipe.execute():
        if entries:
            ms = int(str(entries[0][0]).split("-", 1)[0])
            oldest = ms if oldest is None else min(oldest, ms)
    return 0.0 if oldest is None else max(0, now - oldest) / 1000


def _copy(read: Callable[[], Any], tries: int = 3) -> Any:
    """Copy a container another thread may be changing (a set resized mid-copy raises)."""
    for _ in range(tries - 1):
        try:
            return read()
        except RuntimeError:
            time.sleep(0)
    return read()
