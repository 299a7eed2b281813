"""An ingest of serial/HL7 devices needs no MQTT broker: with `mqtt.url = "embedded"` and no
embedded broker running it starts and stores; one with an MQTT device still refuses, saying why."""

from __future__ import annotations

import argparse
import threading
import time

import pytest

from devices import ingest
from monitor.store.embedded import free_port
from monitor.store.runtime import RuntimeFailure, resolve
from tests.hl7_support import PCT, SPO2, MllpPeer, hl7_config, nm, oru
from tests.servers import wait_port
from tests.waiting import wait_for


def test_resolve_needs_the_broker_only_when_asked(make_config) -> None:
    cfg = make_config()  # mqtt.url defaults to "embedded"; none runs for this data dir
    assert resolve(cfg, need_mqtt=False).mqtt_url == ""
    with pytest.raises(RuntimeFailure, match="no embedded broker is running"):
        resolve(cfg)


def test_hl7_only_ingest_starts_and_stores_without_a_broker(make_config, rclient, keys) -> None:
    port = free_port()
    cfg = hl7_config(make_config, hl7={"listen": f"127.0.0.1:{port}"})
    stop = threading.Event()
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(
        ingest.run(argparse.Namespace(room=[], device=[]), cfg, stop)), daemon=True)
    t.start()
    try:
        wait_port(port, 20)
        peer = MllpPeer(port)
        code, _ = peer.ask(oru("m1", int(time.time() * 1000), [nm(SPO2, 97, PCT)]))
        peer.close()
        assert code == "AA"
        wait_for(lambda: rclient.xlen(keys.vitals("room-1")) == 1, 5, "the reading stored")
    finally:
        stop.set()
        t.join(15)
    assert rc == [0]
