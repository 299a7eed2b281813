"""`vitalwatch ingest [--room R]... [--device D]...`: run device adapters in one process.

One StreamWriter per process (its outage spool is named after the selection, so a
restarted ingest with the same selection replays what it held), one supervisor thread per
serial device, the MQTT adapter for MQTT devices, and the MLLP listener (`[hl7] listen`)
when the selection has HL7 devices. A heartbeat thread writes role `ingest` every second
together with the writer's storage state (`vw:{c}:storage`), whenever Redis accepts that
write.

No Redis error ends the process: every worker retries what Redis refused. The main thread
is a watchdog (devices/watchdog.py): any worker thread that dies anyway — the writer, the
MQTT adapter and its network loop, the heartbeat, the status publisher, a serial device —
is restarted within a second, logged, and counted in the storage record's `restarts`.
SIGINT/SIGTERM: stop every device, flush the writer, exit 0.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import redis

from devices import hl7_listener, mqtt_adapter
from devices.statusboard import StatusBoard
from devices.supervisor import DeviceSupervisor
from devices.watchdog import Watchdog
from monitor.accounts import tokens
from monitor.model.clock import now_ms
from monitor.model.config import Config, DeviceConfig, RoomConfig
from monitor.model.keys import Keys
from monitor.observe.collectors import IngestCollector, role_registry
from monitor.observe.serve import serve_metrics
from monitor.store import heartbeat
from monitor.store.redis_conn import connect
from monitor.store.redis_faults import REDIS_FAILURES, classify
from monitor.store.runtime import resolve
from monitor.store.streams import StreamWriter

log = logging.getLogger(__name__)

EXIT_OK, EXIT_USAGE = 0, 2
HEARTBEAT_EVERY_S = 1.0
WATCH_EVERY_S = 1.0
JOIN_TIMEOUT_S = 5.0

Selected = list[tuple[RoomConfig, DeviceConfig]]


class SelectionError(ValueError):
    """--room / --device names something the config does not have."""


def select(cfg: Config, rooms: list[str], devices: list[str]) -> Selected:
    """Devices to run: all, or those of the named rooms plus the named devices."""
    known_rooms = {r.id for r in cfg.rooms}
    known_devices = {d.id for _, d in cfg.devices()}
    bad_rooms = [r for r in rooms if r not in known_rooms]
    bad_devices = [d for d in devices if d not in known_devices]
    if bad_rooms or bad_devices:
        parts = []
        if bad_rooms:
            parts.append(f"unknown room(s) {', '.join(bad_rooms)} (config has: {', '.join(sorted(known_rooms)) or 'none'})")
        if bad_devices:
            parts.append(f"unknown device(s) {', '.join(bad_devices)} "
                         f"(config has: {', '.join(sorted(known_devices)) or 'none'})")
        raise SelectionError(f"{cfg.source}: " + "; ".join(parts))
    if not rooms and not devices:
        return cfg.devices()
    return [(r, d) for r, d in cfg.devices() if r.id in rooms or d.id in devices]


def spool_path(cfg: Config, rooms: list[str], devices: list[str]) -> Path:
    """The writer's spool file: stable for the same selection, distinct for another."""
    if not rooms and not devices:
        name = "ingest-all"
    else:
        key = "rooms=" + ",".join(sorted(set(rooms))) + ";devices=" + ",".join(sorted(set(devices)))
        name = "ingest-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    return cfg.data_dir / "spool" / f"{name}.jsonl"


def run(args: argparse.Namespace, cfg: Config, stop: threading.Event | None = None) -> int:
    """Entry point of `vitalwatch ingest` (`stop`: set it to stop, when run in a thread)."""
    rooms, devices = list(args.room or []), list(args.device or [])
    try:
        selected = select(cfg, rooms, devices)
    except SelectionError as e:
        print(f"vitalwatch ingest: {e}", file=sys.stderr)
        return EXIT_USAGE
    # Only MQTT devices need the broker: an ingest of serial/HL7 devices starts without one.
    endpoints = resolve(cfg, need_mqtt=any(d.transport == "mqtt" for _r, d in selected))
    keys = endpoints.keys
    if stop is None:
        stop = threading.Event()
        _install_signals(stop)
    # The heartbeat instance is stable for the same selection on the same host (like the
    # spool), so an ingest restarted by `vitalwatch run` or compose replaces its own entry
    # at once instead of leaving a dead one that keeps "monitoring degraded" up.
    instance = f"{socket.gethostname()}-{spool_path(cfg, rooms, devices).stem}"
    writer = StreamWriter(endpoints.redis_url, keys,
                          retention_ms=int(cfg.redis.retention_hours * 3600 * 1000),
                          spool_path=spool_path(cfg, rooms, devices),
                          buffer_max=cfg.redis.buffer_max,
                          min_replicas=cfg.redis.min_replicas)
    client = connect(endpoints.redis_url, timeout_s=1.0)
    board = StatusBoard(client, keys).start()
    watchdog = Watchdog(stop)
    watchdog.watch("stream-writer", lambda: writer.thread_alive, writer.ensure_running)
    watchdog.watch("status-board", lambda: board.alive, board.restart)
    beats = Heartbeat(client, keys, instance, writer, watchdog, stop).start()
    watchdog.watch("heartbeat", beats.alive, beats.start)
    serial_devs = [(r, d) for r, d in selected if d.transport == "serial"]
    mqtt_devs = [(r, d) for r, d in selected if d.transport == "mqtt"]
    hl7_devs = [(r, d) for r, d in selected if d.transport == "mllp"]
    supervisors = [DeviceSupervisor(r, d, writer, board, stop, keys=keys, client=client)
                   for r, d in serial_devs]
    for i, s in enumerate(supervisors):
        s.start()
        watchdog.watch(f"device-{s.dev.id}", _alive(supervisors, i), _restart_device(supervisors, i))
    log.info("ingesting %d serial device(s)%s", len(supervisors),
             f" and {len(mqtt_devs)} MQTT device(s)" if mqtt_devs else "")
    if not selected:
        log.warning("no devices configured%s: only the heartbeat runs", " in the selection" if rooms or devices else "")
    mqtt: mqtt_adapter.MqttAdapter | None = None
    hl7: hl7_listener.Hl7Listener | None = None

    def device_rows() -> list[tuple[str, str, str, str]]:  # read at scrape time
        rows = [(s.room.id, s.dev.id, "serial", s.state) for s in list(supervisors)]
        rows += [(d.route.room, d.route.device, "mqtt", d.state) for d in (mqtt.devices.values() if mqtt else ())]
        rows += [(d.room, d.device, "mllp", d.state) for d in (hl7.devices.values() if hl7 else ())]
        return rows

    collector = IngestCollector(writer, device_rows, mqtt=lambda: mqtt.metrics() if mqtt else None,
                                hl7=lambda: (hl7.stats.open_connections, hl7.in_flight()) if hl7 else None)
    metrics = serve_metrics(getattr(args, "metrics_port", None), cfg.metrics.ingest_port, cfg.metrics.host,
                            role_registry(collector), lambda token: tokens.allows(client, keys, token, "metrics"))
    try:
        if mqtt_devs:
            mqtt = mqtt_adapter.start(cfg, endpoints, writer, mqtt_devs, stop)
            for name, alive, restart in mqtt.workers():
                watchdog.watch(name, alive, restart)
        hl7 = hl7_listener.start(cfg, keys, writer, board, hl7_devs, stop, client)
        while not stop.wait(WATCH_EVERY_S):
            watchdog.check()
    finally:
        stop.set()
        if hl7 is not None:
            hl7.join(JOIN_TIMEOUT_S)  # stops taking messages before the writer flushes
        _shutdown(supervisors, mqtt, writer, board, beats, client, keys, instance)
        if metrics is not None:
            metrics.stop()
        endpoints.stop()
    return EXIT_OK


def _alive(supervisors: list[DeviceSupervisor], i: int) -> Any:
    return lambda: supervisors[i].is_alive()


def _restart_device(supervisors: list[DeviceSupervisor], i: int) -> Any:
    def restart() -> None:
        supervisors[i] = supervisors[i].replacement()
        supervisors[i].start()
    return restart


class Heartbeat:
    """Writes the `ingest` heartbeat and the writer's storage state once a second."""

    def __init__(self, client: redis.Redis, keys: Keys, instance: str, writer: StreamWriter,
                 watchdog: Watchdog, stop: threading.Event) -> None:
        self.client, self.keys, self.instance = client, keys, instance
        self.writer, self.watchdog, self.stop = writer, watchdog, stop
        self._thread: threading.Thread | None = None
        self._down = ""

    def start(self) -> Heartbeat:
        """Start (or restart) the heartbeat thread."""
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)
        self._thread.start()
        return self

    def alive(self) -> bool:
        """Whether the heartbeat thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def join(self, timeout_s: float) -> None:
        """Wait for the thread to end (after `stop` is set)."""
        if self._thread is not None:
            self._thread.join(timeout_s)

    def beat_once(self) -> bool:
        """Write the heartbeat with the storage state now; False if Redis did not take it."""
        try:
            heartbeat.beat(self.client, self.keys, "ingest", self.instance, now_ms(),
                           storage=self.writer.storage(), restarts=self.watchdog.snapshot())
        except REDIS_FAILURES as e:  # unreachable or refusing: the state cannot be told now
            cause = classify(e).cause
            if cause != self._down:
                log.warning("cannot write the ingest heartbeat: %s", cause)
            self._down = cause
            return False
        if self._down:
            log.info("heartbeat written again")
        self._down = ""
        return True

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.beat_once()
            except Exception:  # noqa: BLE001 - the heartbeat must outlive a bug in one beat
                log.exception("heartbeat failed; trying again in %g s", HEARTBEAT_EVERY_S)
            self.stop.wait(HEARTBEAT_EVERY_S)


def _install_signals(stop: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return  # run() called from a thread (tests): the caller sets `stop` itself

    def handler(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _shutdown(supervisors: list[DeviceSupervisor], mqtt: Any, writer: StreamWriter, board: StatusBoard,
              beats: Heartbeat, client: Any, keys: Any, instance: str) -> None:
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for s in supervisors:
        s.join(max(0.1, deadline - time.monotonic()))
        if s.is_alive():
            log.error("device %s did not stop within %g s", s.dev.id, JOIN_TIMEOUT_S)
    if mqtt is not None:
        mqtt.stop()
        mqtt.join(JOIN_TIMEOUT_S)
    if not writer.flush(JOIN_TIMEOUT_S):
        st = writer.storage()
        log.warning("not storing at shutdown (%s): %d entries go to the spool", st.cause or "timeout", st.pending)
    writer.close()
    for s in supervisors:
        s.publish_stored()  # what the last flush stored
    board.stop()
    beats.join(JOIN_TIMEOUT_S)
    try:
        heartbeat.remove(client, keys, "ingest", instance)
    except REDIS_FAILURES as e:
        log.warning("cannot remove the ingest heartbeat: %s", classify(e).cause)
