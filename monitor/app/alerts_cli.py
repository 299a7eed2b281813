"""`vitalwatch alerts`: one alert-engine worker plus its background loops, until SIGINT/SIGTERM.

The worker (monitor/alarms/engine.py) evaluates the rooms it leases and enqueues the events'
pages with them; the outbound senders (monitor/alarms/outbound.py) deliver those to MQTT and
the webhook; the top-up loop (monitor/sessions/archive_topup.py) copies late readings into
archived sessions; the EHR loop (monitor/sessions/outbound.py) sends HL7/FHIR. They are
started together here, in the shell, so the alarms package needs nothing from sessions. None
of them stops on a Redis error: each retries with backoff and logs once per episode.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import signal
import threading
from typing import Any

from monitor.accounts import tokens
from monitor.alarms.engine import Worker
from monitor.alarms.outbound import (
    DEST_MQTT,
    DEST_WEBHOOK,
    DirectPager,
    MqttSender,
    Routes,
    WebhookSender,
    start_senders,
)
from monitor.model.config import Config
from monitor.observe.collectors import AlertsCollector, role_registry
from monitor.observe.serve import serve_metrics
from monitor.sessions import archive_topup
from monitor.sessions import outbound as interop_outbound
from monitor.store import heartbeat
from monitor.store.redis_conn import connect
from monitor.store.runtime import resolve

log = logging.getLogger(__name__)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Entry point of `vitalwatch alerts`."""
    endpoints = resolve(cfg, mqtt_role="alerts")
    client = connect(endpoints.redis_url)
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    owner = f"{heartbeat.instance_name()}-{secrets.token_hex(2)}"
    mqtt_sender = MqttSender(
        endpoints.mqtt_url, endpoints.mqtt_version,
        cfg.mqtt.client_id + "-alerts-" + owner if cfg.mqtt.client_id else f"vitalwatch-alerts-{owner}",
        username=endpoints.mqtt_username or None, password=endpoints.mqtt_password or None,
        ca_file=cfg.mqtt.ca_file, cert_file=cfg.mqtt.cert_file, key_file=cfg.mqtt.key_file)
    webhook = WebhookSender(cfg.alerts.webhook_url, cfg.alerts.webhook_timeout_s) if cfg.alerts.webhook_url else None
    transports: dict[str, Any] = {DEST_MQTT: mqtt_sender, **({DEST_WEBHOOK: webhook} if webhook else {})}
    routes = Routes(cfg.mqtt.alerts_topic, webhook=webhook is not None)
    # "monitoring stopped" pages do not go through Redis (it may be what stopped): see outbound.py
    direct = DirectPager(routes, mqtt_sender, webhook)
    direct.start(stop)
    worker = Worker(cfg, client, endpoints.keys, owner=owner, outbound=routes, pager=direct)
    log.info("alert worker %s started (%d room(s) in config, lease %.1f s)", owner, len(cfg.rooms),
             cfg.alerts.owner_ttl_s)
    pagers = start_senders(lambda: connect(endpoints.redis_url), endpoints.keys, owner, transports, stop)
    metrics = serve_metrics(getattr(args, "metrics_port", None), cfg.metrics.alerts_port, cfg.metrics.host,
                            role_registry(AlertsCollector(worker)),
                            lambda token: tokens.allows(client, endpoints.keys, token, "metrics"))
    topup = archive_topup.start(cfg, endpoints.redis_url, endpoints.keys, owner, stop)
    # HL7/FHIR to the EHR: every worker runs the loop; a lease lets one send per destination
    interop = interop_outbound.start(cfg, endpoints.redis_url, endpoints.keys, owner, stop)
    try:
        worker.run(stop, freeze_gc=True)
    finally:
        stop.set()
        for t in [*pagers, topup, *([interop] if interop is not None else [])]:
            t.join(5)
        mqtt_sender.close()
        if metrics is not None:
            metrics.stop()
        client.close()
    log.info("alert worker %s stopped: %d readings, %d events", owner, worker.stats.readings, worker.stats.events)
    return 0
