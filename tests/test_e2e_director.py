"""Whole-system acceptance: a simulated intranasal session, nurse and director, real processes.

What issue 8's acceptance asks, tried as the users would: `vitalwatch simulate` (a Masimo
oximeter on a pty and an MQTT json NIBP on a Mosquitto of our own, hypertensive timeline,
speed 60), `vitalwatch ingest`, `vitalwatch alerts` and `vitalwatch dashboard` run as real
processes on the shared Redis (a clinic of our own). A nurse starts a session with the CLI,
records a pre-dose BP and the dose (at the simulator's dose time), waits for the high SBP
alarm, acknowledges it through the HTTP API with a token, marks the patient ready to leave
and ends the session (which archives it). A director finds the session on /review in
headless Chromium, sees the patient, the episode with its acknowledgement and time to
acknowledge and the summary; exports PDF, PNG and CSV with `vitalwatch export`. The numbers
are checked against the raw Redis stream, and again after the clinic's Redis keys are gone.
Bounded waits only; no timing assertions.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys as KeyPress

from devices.simulators.truth import read_truth
from monitor.model.keys import Keys
from monitor.sessions.review import fmt_duration, fmt_value
from monitor.store.embedded import free_port
from monitor.store.streams import read_range
from tests.configs import config_mapping, mqtt_device, room_entry, serial_device
from tests.configs import write_config as write_config_file
from tests.dashboard_support import chromium, login, wait_page
from tests.mqtt_support import mosquitto_pub
from tests.servers import MosquittoProc, delete_clinic_keys, kill_quietly

pytestmark = pytest.mark.browser

ROOM, PATIENT = "room-1", "MRN-E2E-1"
NURSE_PW, DIRECTOR_PW = "nurse1-pass-e2e", "director-pass-e2e"
SPEED = 60  # 1 wall s = 1 simulated min
DOSE_AT_MIN = 4  # leaves a few wall seconds to open the session and take the pre-dose BP
TIMELINE = f"""
scenarios = ["hypertensive"]
dose_at_min = {DOSE_AT_MIN}
route = "intranasal"
dose_mg = 56
"""
CSV_METRICS = ("hr", "spo2", "sbp", "dbp", "map", "rr", "temp", "pi")


def write_config(tmp: Path, clinic: str, redis_url: str, mqtt_url: str) -> Path:
    """One room: a serial Masimo oximeter (pty) and an MQTT json NIBP (5-simulated-min cycle)."""
    return write_config_file(tmp / "vitalwatch.toml", config_mapping(
        {"id": clinic, "name": "E2E Clinic", "timezone": "UTC"}, redis_url=redis_url, mqtt_url=mqtt_url,
        data_dir=tmp / "data", archive_url=f"sqlite:///{tmp / 'archive.db'}",
        rooms=[room_entry(ROOM, serial_device("oxi-1", port=tmp / "tty" / "oxi-1"),
                    mqtt_device("nibp-1", "json", f"vw-e2e/{clinic}/nibp-1", silence_s=60),
                    name="Treatment Room 1")]))


class Cli:
    """`python -m monitor.app.cli … -c config` as a user types it."""

    def __init__(self, config: Path, tmp: Path) -> None:
        self.config, self.tmp = config, tmp
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.env.pop("VITALWATCH_PASSWORD", None)

    def spawn(self, *args: str) -> subprocess.Popen[str]:
        """A long-running role; its output goes to a log file (a full pipe would block it)."""
        log = open(self.tmp / f"{args[0]}.log", "w")  # noqa: SIM115 - lives as long as the process
        return subprocess.Popen([sys.executable, "-m", "monitor", *args, "-c", str(self.config)],
                                stdout=log, stderr=subprocess.STDOUT, text=True, env=self.env,
                                start_new_session=True)

    def run(self, *args: str, password: str | None = None) -> str:
        """A one-shot command; must exit 0; returns stdout."""
        env = dict(self.env, VITALWATCH_PASSWORD=password) if password else self.env
        p = subprocess.run([sys.executable, "-m", "monitor", *args, "-c", str(self.config)],
                           capture_output=True, text=True, env=env, timeout=60)
        assert p.returncode == 0, f"vitalwatch {' '.join(args)} → {p.returncode}\n{p.stdout}\n{p.stderr}"
        return p.stdout


def raw_readings(client: redis.Redis, keys: Keys, start_ms: int, end_ms: int) -> list[dict[str, str]]:
    """The room stream's entries measured inside the session window, by (ts, stream id)."""
    entries = [(int(f["ts"]), tuple(int(x) for x in i.split("-")), f) for i, f in read_range(client, keys.vitals(ROOM))
               if start_ms <= int(f["ts"]) <= end_ms]
    return [f for *_, f in sorted(entries, key=lambda e: (e[0], e[1]))]


def csv_rows(path: Path) -> list[tuple[Any, ...]]:
    """(ts, dev, values…, flags) per CSV row, values as floats (None when empty)."""
    out = []
    for row in csv.DictReader(io.StringIO(path.read_text())):
        vals = tuple(float(row[m]) if row[m] else None for m in CSV_METRICS)
        out.append((int(row["ts_ms"]), row["dev"], *vals, row["flags"] or ""))
    return out


def stream_rows(entries: list[dict[str, str]]) -> list[tuple[Any, ...]]:
    """The same tuple shape from raw stream entries."""
    return [(int(f["ts"]), f["dev"], *(float(f[m]) if m in f else None for m in CSV_METRICS),
             f.get("flags") or "") for f in entries]


def pdf_text(path: Path) -> str:
    """pdftotext of a PDF (layout kept so table rows stay on one line)."""
    return subprocess.run(["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True,
                          check=True).stdout


def pdf_sbp_max(text: str) -> str:
    """The Max column of the PDF summary's SBP row (Vital, Baseline, Min, Max, …)."""
    row = next(line for line in text.splitlines() if line.strip().startswith("SBP (mmHg)"))
    return re.split(r"\s{2,}", row.strip())[3]


def is_stale(element: Any) -> bool:
    """True once the browser has replaced this element (a callback re-rendered it)."""
    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True


def alert_events(client: redis.Redis, keys: Keys) -> list[dict[str, str]]:
    """Every event of the clinic's alerts stream."""
    return [f for _, f in read_range(client, keys.alerts)]


def test_intranasal_session_nurse_to_director(tmp_path, clinic_id, keys, rclient, redis_url):
    mqtt = MosquittoProc(tmp_path / "mqtt").start()
    config = write_config(tmp_path, clinic_id, redis_url, mqtt.url)
    (tmp_path / "timeline.toml").write_text(TIMELINE)
    truth_file = tmp_path / "truth.jsonl"
    cli = Cli(config, tmp_path)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    procs: list[subprocess.Popen[str]] = []
    driver = None
    try:
        procs.append(cli.spawn("simulate", "--speed", str(SPEED), "--seed", "11", "--truth", str(truth_file),
                               "--scenario", str(tmp_path / "timeline.toml")))
        procs.append(cli.spawn("ingest"))
        procs.append(cli.spawn("alerts"))
        procs.append(cli.spawn("dashboard", "--port", str(port)))

        # --- nurse: open the session before the simulated dose, pre-dose BP by hand -------------
        sid = cli.run("session", "start", "--room", ROOM, "--patient", PATIENT, "--route", "intranasal",
                      "--dose-mg", "56", "--user", "nurse1").strip().splitlines()[-1]
        assert rclient.hget(keys.session(sid), "state") == "open"
        cli.run("session", "bp", "--session", sid, "--sbp", "128", "--dbp", "80", "--user", "nurse1")
        dose = wait_page(lambda: next((r for r in read_truth(truth_file) if r["kind"] == "dose"), None)
                        if truth_file.exists() else None, 30, "the simulator's dose")
        at = datetime.fromtimestamp(dose["ts_ms"] / 1000, UTC).isoformat(timespec="milliseconds")
        cli.run("session", "dose", "--session", sid, "--at", at, "--dose-mg", "56", "--user", "nurse1")
        assert int(rclient.hget(keys.session(sid), "first_dose_ms")) == dose["ts_ms"]

        # accounts while the physiology runs towards its peak
        cli.run("user", "add", "nurse1", "--role", "nurse", "--user", "admin", password=NURSE_PW)
        cli.run("user", "add", "dr-e2e", "--role", "director", "--user", "admin", password=DIRECTOR_PW)
        token = cli.run("user", "token", "nurse1", "--user", "admin").strip().splitlines()[-1]

        # --- the hypertensive surge raises a high SBP alarm ---------------------------------------
        def raised() -> dict[str, str] | None:
            return next((e for e in alert_events(rclient, keys) if e["event"] == "raised" and e.get("metric") == "sbp"
                         and e["priority"] == "high" and e["room"] == ROOM), None)
        alert = wait_page(raised, 75, "a high SBP alert raised")

        # --- acknowledged through the HTTP API with a bearer token --------------------------------
        wait_page(lambda: urllib.request.urlopen(f"{base}/health", timeout=2).status == 200, 30, "dashboard up")
        req = urllib.request.Request(f"{base}/api/v1/alerts/{alert['alert']}/acknowledge", data=b"{}", method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            state = json.load(resp)
        assert state["acknowledged_by"] == "nurse1"
        acked = wait_page(lambda: next((e for e in alert_events(rclient, keys) if e["event"] == "acknowledged"
                                       and e["alert"] == alert["alert"]), None), 10, "acknowledged event")
        assert acked["user"] == "nurse1"

        cli.run("session", "observe", "--session", sid, "--ready-to-leave", "--user", "nurse1")
        # stop the devices first so no reading of the session window is still in flight when it ends
        sim = procs[0]
        sim.send_signal(signal.SIGTERM)
        assert sim.wait(15) == 0, (tmp_path / "simulate.log").read_text()
        # until ingest has drained what it holds: the oximeter's pty is gone once ingest has read
        # to its end, and a malformed probe on the NIBP's topic is refused only after every
        # message published before it (the broker delivers a topic in order)
        wait_page(lambda: rclient.hget(keys.device_status("oxi-1"), "state") != "online", 30, "oxi-1's end read")
        nibp_topic = f"vw-e2e/{keys.clinic}/nibp-1"
        refused_before = sum(1 for _i, f in rclient.xrange(keys.rejects) if f.get("source") == nibp_topic)
        mosquitto_pub(mqtt.port, nibp_topic, "drain probe: not JSON")
        wait_page(lambda: sum(1 for _i, f in rclient.xrange(keys.rejects) if f.get("source") == nibp_topic)
                  > refused_before, 30, "the NIBP drain probe refused")
        out = cli.run("session", "end", "--session", sid, "--user", "nurse1")
        assert "archived" in out
        head = rclient.hgetall(keys.session(sid))
        assert head["state"] == "archived"
        start_ms, end_ms = int(head["started_ms"]), int(head["ended_ms"])

        raw = raw_readings(rclient, keys, start_ms, end_ms)
        sbp_max = max(float(f["sbp"]) for f in raw if "sbp" in f)
        assert sbp_max > 180
        assert {f["dev"] for f in raw} == {"oxi-1", "nibp-1"}
        ack_after = fmt_duration((int(acked["ts"]) - int(alert["ts"])) / 1000)

        # --- director: find the session, open it, check what it shows ----------------------------
        # another patient's session in the same room, so the patient filter has something to hide
        other = cli.run("session", "start", "--room", ROOM, "--patient", "MRN-E2E-OTHER", "--route", "iv",
                        "--user", "nurse1").strip().splitlines()[-1]
        cli.run("session", "end", "--session", other, "--user", "nurse1")

        driver = chromium()
        login(driver, base, "dr-e2e", DIRECTOR_PW, "/review")  # a deep link as the first page
        table = wait_page(lambda: driver.find_element(By.ID, "review-table"), 20, "review list")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#review-table tr.review-row")) == 2
        driver.find_element(By.ID, "review-patient").send_keys(PATIENT, KeyPress.ENTER)
        wait_page(lambda: is_stale(table), 20, "the filtered list")  # the filter callback replaced it
        rows = wait_page(lambda: [r.text for r in driver.find_elements(By.CSS_SELECTOR, "#review-table tr.review-row")],
                        20, "rows")
        assert len(rows) == 1 and PATIENT in rows[0] and ROOM in rows[0], rows
        assert "1/" in rows[0]  # one high-priority episode (the list's H/M/L column)
        driver.find_element(By.CSS_SELECTOR, f"#review-row-{sid} a").click()
        wait_page(lambda: driver.find_element(By.ID, "review-patient-id").text == PATIENT, 20, "session page")
        assert driver.current_url.endswith(f"/review/{sid}")
        assert driver.find_element(By.ID, "review-v-sbp-max").text == fmt_value(sbp_max)
        # the alert log: one row per episode (raised, priority, alert, acknowledged by, after, cleared)
        log_rows = driver.execute_script(
            "return Array.from(document.querySelectorAll('[id$=-by][id^=review-ep-]')).map("
            "e => Array.from(e.parentElement.children).map(td => td.textContent));")
        ours = [r for r in log_rows if r[3] == "nurse1"]
        assert len(ours) == 1, log_rows
        assert ours[0][1] == "high" and ours[0][2].startswith("SBP ") and " > 180 mmHg" in ours[0][2] \
                and ours[0][4] == ack_after, ours
        driver.save_screenshot(str(tmp_path / "review.png"))

        # --- exports from the CLI agree with the raw stream ---------------------------------------
        def export_all(tag: str, formats: tuple[str, ...] = ("csv", "pdf", "png")) -> dict[str, Path]:
            files = {fmt: tmp_path / f"{tag}.{fmt}" for fmt in formats}
            for fmt, path in files.items():
                cli.run("export", "--session", sid, "--format", fmt, "-o", str(path), "--user", "dr-e2e")
            return files

        first = export_all("before")
        assert csv_rows(first["csv"]) == stream_rows(raw)
        text = pdf_text(first["pdf"])
        assert PATIENT in text and pdf_sbp_max(text) == fmt_value(sbp_max) and "nurse1" in text
        assert first["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # --- Redis retention gone: the archive alone still answers --------------------------------
        delete_clinic_keys(rclient, keys)
        second = export_all("after", ("csv", "pdf"))
        assert second["csv"].read_bytes() == first["csv"].read_bytes()
        text2 = pdf_text(second["pdf"])
        assert PATIENT in text2 and pdf_sbp_max(text2) == fmt_value(sbp_max) and "nurse1" in text2
    finally:
        if driver is not None:
            driver.quit()
        for p in reversed(procs):
            kill_quietly(p)
        mqtt.kill()
