"""Exports from the archive alone (Redis emptied): CSV rows = readings, PDF text, PNG."""

from __future__ import annotations

import csv
import subprocess
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from monitor.accounts import audit
from monitor.app.cli import main
from monitor.sessions import archive, review
from monitor.sessions.review import fmt_duration, fmt_value
from tests.archive_fixtures import sqlite_url  # noqa: F401
from tests.configs import config_mapping, mqtt_device, room_entry, serial_device, write_config
from tests.servers import delete_clinic_keys
from tests.session_seed import seed_session


def _config_file(tmp_path: Path, clinic: str, redis_url: str, archive_url: str) -> str:
    return str(write_config(tmp_path / "vw.toml", config_mapping(
        {"id": clinic, "timezone": "America/Denver"}, redis_url=redis_url, mqtt_url="mqtt://127.0.0.1:1883",
        archive_url=archive_url,
        rooms=[room_entry("room-1", serial_device("oxi-1"), mqtt_device("nibp-1", "json", "vw/room-1/nibp-1"))])))


@pytest.fixture
def ended(rclient, keys, redis_url, sqlite_url, tmp_path):  # noqa: F811
    from monitor.model.config import load_config

    conf = _config_file(tmp_path, keys.clinic, redis_url, sqlite_url)
    cfg = load_config(conf)
    sd = seed_session(rclient, keys, cfg, duration_min=130, end=True)
    raw = [f for f in sd.readings if sd.t0_ms <= int(f["ts"]) <= sd.end_ms]
    # Redis is emptied: everything below comes from the archive alone
    delete_clinic_keys(rclient, keys)
    return conf, cfg, sd, raw


def test_csv_rows_equal_the_sessions_readings(ended, rclient, keys, tmp_path):
    conf, cfg, sd, raw = ended
    out = tmp_path / "s.csv"
    assert main(["export", "-c", conf, "--user", "dr-who", "--session", sd.sid, "--format", "csv", "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == len(raw)
    for r, f in zip(rows, raw, strict=True):
        assert (r["ts_ms"], r["dev"], r["flags"]) == (f["ts"], f["dev"], f.get("flags", ""))
        for m in review.READING_METRICS:
            assert r[m] == f.get(m, "")
    # local time in the clinic's zone, with the offset of that instant (MST or MDT by the date)
    first = datetime.fromtimestamp(int(rows[0]["ts_ms"]) / 1000, ZoneInfo("America/Denver"))
    assert rows[0]["time_local"].startswith(first.strftime("%Y-%m-%d"))
    assert rows[0]["time_local"].endswith(first.isoformat()[-6:])
    # the export itself was audited (Redis is reachable, just empty)
    assert audit.entries(rclient, keys)[0]["action"] == "session.export"


def test_pdf_holds_patient_and_summary_values(ended, tmp_path):
    conf, cfg, sd, _ = ended
    out = tmp_path / "s.pdf"
    assert main(["export", "-c", conf, "--user", "dr-who", "--session", sd.sid, "--format", "pdf", "-o", str(out)]) == 0
    text = subprocess.run(["pdftotext", "-layout", str(out), "-"], capture_output=True, text=True, check=True).stdout
    s = review.summarize(archive.load_session(archive.open_archive(cfg.archive.url), sd.sid))
    assert sd.patient in text and sd.sid in text
    for v in s["vitals"].values():
        assert f"{v['short']} ({v['unit']})" in text  # "SpO2 (%)", never "SPO2"
        for key in ("min", "max"):
            assert fmt_value(v[key]) in text
        assert fmt_duration(v["above_s"]) in text
    # the numbers the seed guarantees, written out so a wrong summary cannot pass
    assert s["vitals"]["sbp"]["max"] == 192 and "192" in text
    assert "SBP high 192 > 180" in text and "nurse-amy" in text and "45 s" in text
    assert "SPO2" not in text and "–—" not in text and "-0 min" not in text
    assert "Physiological alarms" in text and "high 1, medium 0, low 0" in text
    # BP pre-dose: the nurse's manual check 3 min before dose, not the NIBP cycled 30 s later
    assert "126/78 mmHg (manual, -3 min)" in text
    assert "188/102 mmHg" in text  # the manual check at dose + 41 min is closest to 40
    assert "Total minutes monitored" in text and "125 (session 130)" in text
    assert "Minutes until ready to leave" in text and "118" in text
    assert "dissociation: yes" in text


def test_png_chart(ended, tmp_path):
    conf, _, sd, _ = ended
    out = tmp_path / "s.png"
    assert main(["export", "-c", conf, "--session", sd.sid, "--format", "png", "-o", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000


def test_unknown_session_exit_2(ended, tmp_path, capsys):
    conf, *_ = ended
    assert main(["export", "-c", conf, "--session", "nope", "--format", "csv", "-o", str(tmp_path / "x")]) == 2
    assert "unknown session 'nope'" in capsys.readouterr().err
