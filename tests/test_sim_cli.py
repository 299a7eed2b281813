"""`vitalwatch simulate` argument handling and a demo-style start/stop (SIGTERM, ptys removed)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from monitor.app.cli import main
from tests.configs import config_mapping, room_entry, serial_device, write_config
from tests.waiting import wait_for


def _config(tmp: Path) -> Path:
    return write_config(tmp / "sim.toml", config_mapping({"id": "simcli"}, rooms=[room_entry(
        "room-1", serial_device("oxi-1", port=tmp / "tty" / "oxi-1"),
        serial_device("nibp-1", "nibp-un300", tmp / "tty" / "nibp-1"))]))


def test_bad_scenario_and_speed_exit_2(tmp_path, capsys):
    cfg = str(_config(tmp_path))
    assert main(["simulate", "-c", cfg, "--scenario", "hypertension"]) == 2
    assert "unknown scenario 'hypertension'" in capsys.readouterr().err
    assert main(["simulate", "-c", cfg, "--speed", "0"]) == 2
    assert main(["simulate", "-c", cfg, "--scenario", str(tmp_path / "missing.toml")]) == 2


def test_duration_run_writes_truth_and_cleans_up(tmp_path, capsys):
    truth = tmp_path / "t.jsonl"
    assert main(["simulate", "-c", str(_config(tmp_path)), "--duration", "0.5", "--truth", str(truth),
                 "--seed", "9", "--scenario", "sensor-off"]) == 0
    out = capsys.readouterr().out
    assert "seed 9" in out and "first dose at 2 simulated min" in out and "room-1: iv" in out
    assert not (tmp_path / "tty" / "oxi-1").exists()
    kinds = [line.split('"kind":"')[1].split('"')[0] for line in truth.read_text().splitlines()]
    assert kinds[0] == "run" and kinds[-1] == "stop" and "dose" in kinds


def test_sigterm_stops_cleanly_and_removes_ptys(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "monitor", "simulate", "-c", str(_config(tmp_path)),
                             "--speed", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("simulating 2 device(s)")
        wait_for(lambda: (tmp_path / "tty" / "nibp-1").is_symlink(), what="pty")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (tmp_path / "tty" / "oxi-1").exists() and not (tmp_path / "tty" / "nibp-1").exists()
