"""`vitalwatch run`: embedded servers + ingest + alerts + dashboard from one config; a
terminal Ctrl-C (SIGINT to the whole process group) stops roles first, then the servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

from monitor.store.embedded import free_port
from tests.configs import config_mapping, mqtt_device, room_entry, write_config
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]


def test_run_supervises_roles_and_stops_in_order(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    conf = write_config(tmp_path / "clinic.toml", config_mapping(
        {"id": "runtest"}, data_dir=data, archive_url=f"sqlite:///{tmp_path / 'archive.db'}",
        dashboard={"port": port}, rooms=[room_entry("room-1", mqtt_device("mon-1", "json", "vitalwatch/room-1/mon-1"))]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITALWATCH_")}
    log = tmp_path / "run.log"
    with open(log, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "monitor", "run", "-c", str(conf)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
    try:
        def healthy() -> dict | None:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return json.loads(r.read())

        def roles_beating() -> bool:
            try:
                h = healthy()
            except OSError:  # not listening yet, or 503 while roles come up
                return False
            return bool(h and {"alerts", "ingest", "dashboard"} <= set(h.get("heartbeat_age_s", {})))

        wait_for(roles_beating, 60, "all three roles heartbeating")
        embedded = json.loads((data / "embedded.json").read_text())
        assert embedded["redis_url"].startswith("unix://")
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        assert proc.wait(40) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    text = log.read_text()
    stop_at = text.find("stopping")
    assert stop_at >= 0
    # roles stopped while Redis was still there: none lost Redis during shutdown
    assert "Redis unreachable" not in text[stop_at:], text[stop_at:]
    # `run` exited 0; its children must all be gone too (waited for: they may take a moment to be reaped)
    def left_behind() -> str:
        return subprocess.run(["pgrep", "-f", str(data)], capture_output=True, text=True).stdout.strip()

    wait_for(lambda: left_behind() == "", 15, "no process of this run left behind")
