"""Outbound to the EHR: the durable outbox, ORU^R01 to a real MLLP listener that answers AA,
AE, then nothing; FHIR export, API and POST; everything we produce read by hl7apy/fhir.resources."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from devices.protocols import hl7_oru
from monitor.app.cli import main
from monitor.interop import fhir, rows
from monitor.model.codec import to_fields
from monitor.model.mllp import MllpFramer, frame
from monitor.model.readings import Reading
from monitor.sessions import lifecycle, outbound
from monitor.store.outbox import Delivered, Outbox, OutboxSender, Refused, Retry
from tests.configs import config_mapping, write_config
from tests.waiting import wait_for


# --- a scripted EHR ---------------------------------------------------------------------------
class Ehr:
    """An MLLP listener that answers each message as its script says: "AA", "AE", "AR" or "none"."""

    def __init__(self, script: list[str], default: str = "AA") -> None:
        self.script, self.default = list(script), default
        self.received: list[str] = []
        self.srv = socket.socket()
        self.srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(8)
        self.port = self.srv.getsockname()[1]
        self.stop = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        self.srv.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.srv.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        framer = MllpFramer()
        with conn:
            while not self.stop.is_set():
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for p in framer.feed(data):
                    if not isinstance(p, bytes):
                        continue
                    text = p.decode()
                    self.received.append(text)
                    what = self.script.pop(0) if self.script else self.default
                    if what == "none":
                        continue
                    ctrl = text.split("\r")[0].split("|")[9]
                    err = "\rERR||PID^1^3|204^Unknown key identifier^HL70357|E||||unknown patient" if what != "AA" else ""
                    ack = f"MSH|^~\\&|EHR|HOSP|VITALWATCH|c|20260101000000||ACK^R01^ACK|A{ctrl}|P|2.6\rMSA|{what}|{ctrl}{err}\r"
                    conn.sendall(frame(ack.encode()))

    def close(self) -> None:
        self.stop.set()
        self.srv.close()


@pytest.fixture
def ehr():
    made: list[Ehr] = []

    def make(script: list[str], default: str = "AA") -> Ehr:
        e = Ehr(script, default)
        made.append(e)
        return e

    yield make
    for e in made:
        e.close()


def ended_session(rclient, keys, cfg, patient="MRN-4711", n=20, with_bp=True) -> tuple[str, list[Reading]]:
    """A session with `n` one-second readings, ended and archived."""
    sid = lifecycle.start_session(rclient, keys, cfg, "room-1", patient, "intranasal", "nurse-amy")
    t0 = int(rclient.hget(keys.session(sid), "started_ms"))
    readings = []
    for i in range(n):
        vals: dict[str, float] = {"hr": 70 + i % 7, "spo2": 97, "rr": 14, "temp": 36.6}
        if with_bp and i % 10 == 0:
            vals.update(sbp=120 + i, dbp=80, map=93)
        r = Reading("room-1", "mon-1", t0 + 100 + i * 10, vals, frozenset({"artifact"}) if i == 3 else frozenset())
        rclient.xadd(keys.vitals("room-1"), to_fields(r))
        readings.append(r)
    time.sleep(0.01)  # end after the last reading's time (ms clock)
    lifecycle.end_session(rclient, keys, cfg, sid, "nurse-amy", now_ms=t0 + 100 + n * 10 + 5)
    return sid, readings


def hl7_cfg(make_config, port: int, **hl7_extra: Any):
    return make_config(rooms=[{"id": "room-1", "devices": [
        {"id": "mon-1", "protocol": "hl7", "transport": "mllp", "source": "ABC"}]}],
        hl7={"listen": "127.0.0.1:0", "outbound": {"url": f"mllp://127.0.0.1:{port}", "timeout_s": 1,
                                                   "sending_facility": "LONEROCK", **hl7_extra}})


def run_until(runner: outbound.InteropRunner, pred, timeout_s: float = 20, what: str = "condition"):
    """Step the runner until `pred()` holds (looked at before each step)."""
    def done_or_step() -> bool:
        if pred():
            return True
        runner.step()
        return False

    wait_for(done_or_step, timeout_s, what, interval_s=0.02)


def obx_values(message: str) -> list[tuple[int, str, str]]:
    """(OBX-14 ms, device, metric=value) read back with our own inbound parser's time rules."""
    out = []
    for seg in message.split("\r"):
        f = seg.split("|")
        if f[0] == "OBX":
            out.append((hl7_oru.parse_dtm(f[14], None, hl7_oru.timezone.utc), f[18].split("^")[0], f"{f[3].split('^')[1]}={f[5]}"))
    return out


def expected_obx(readings: list[Reading]) -> list[tuple[int, str, str]]:
    from monitor.model.codec import fmt_value
    from monitor.model.vitalcodes import SEND

    out = []
    for r in readings:
        for m in ("hr", "spo2", "sbp", "dbp", "map", "rr", "temp", "pi"):
            if m in r.values:
                out.append((r.ts_ms, r.device, f"{SEND[m].mdc_name}={fmt_value(r.values[m])}"))
    return out


# --- the outbox itself --------------------------------------------------------------------------
def test_outbox_order_dedup_lease_refusal_resend_and_restart(rclient, keys):
    box = Outbox(rclient, keys, "pager")
    ids = [box.enqueue(f"m{i}", kind="t", dedup_key=f"k{i}") for i in range(4)]
    assert box.enqueue("again", kind="t", dedup_key="k1") is None  # idempotent
    answers = iter([Delivered("ok"), Retry("down"), Refused("AE: no", "MSA|AE"), Delivered(), Delivered(), Delivered()])
    seen: list[str] = []

    def send(m):
        seen.append(m.body)
        return next(answers)

    a = OutboxSender(box, send, owner="a", backoff_start_s=0.05)
    b = OutboxSender(Outbox(rclient, keys, "pager"), lambda m: pytest.fail("b must not send"), owner="b")
    assert a.holds_lease()
    assert b.step() > 0 and not b.holds_lease()  # one sender per destination: b waits
    a.step()  # m0 delivered
    a.step()  # m1: retry, backoff
    assert box.state()["last_error"] == "down" and box.next().body == "m1"
    wait_for(lambda: a.step() == 0.0, what="m1 after the backoff")  # m1 refused: kept, the queue moves on
    a.step()  # m2
    # a "restart": new objects, same Redis
    box2 = Outbox(rclient, keys, "pager")
    failed = box2.failed()
    assert [(f.message.body, f.reason, f.answer) for f in failed] == [("m1", "AE: no", "MSA|AE")]
    new_id = box2.resend(failed[0].message.id)
    with pytest.raises(KeyError):
        box2.resend(failed[0].message.id)
    a2 = OutboxSender(box2, send, owner="a")
    a2.step()  # m3
    a2.step()  # the resent m1
    assert seen == ["m0", "m1", "m1", "m2", "m3", "m1"]
    assert box2.next() is None and box2.failed() == [] and new_id > ids[-1]
    assert box2.state()["delivered"] == "4" and box2.state()["refused"] == "1"


# --- HL7 to the EHR ---------------------------------------------------------------------------
def test_session_end_reaches_the_ehr_then_ae_is_kept_and_resent(make_config, rclient, keys, ehr):
    listener = ehr(["AA", "AE"])
    cfg = hl7_cfg(make_config, listener.port)
    runner = outbound.InteropRunner(cfg, rclient, keys, "w1")
    sid, readings = ended_session(rclient, keys, cfg)
    run_until(runner, lambda: len(listener.received) == 1, what="the ORU at the EHR")
    msg = listener.received[0]
    m = parse_message(msg, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)  # a second library
    assert m.validate()
    assert m.children[1].children[0].pid.pid_3.pid_3_1.value == "MRN-4711"
    assert obx_values(msg) == expected_obx(readings)
    assert "NTE|1|L|flags: artifact" in msg
    box = Outbox(rclient, keys, "hl7")
    run_until(runner, lambda: box.state().get("delivered") == "1", what="settled")
    # a second session: the EHR answers AE — kept with its answer, shown, resent after the fix
    sid2, _ = ended_session(rclient, keys, cfg, patient="MRN-0002", n=5)
    run_until(runner, lambda: box.failed(), what="the refusal kept")
    f = box.failed()[0]
    assert f.message.key == sid2 and f.reason.startswith("AE: ") and "unknown patient" in f.reason
    assert "MSA|AE|" in f.answer
    assert main(["outbox", "resend", "--dest", "hl7", f.message.id, "-c", _write(cfg, make_config)]) == 0
    run_until(runner, lambda: len(listener.received) == 3, what="the resend")
    assert listener.received[2] == listener.received[1]  # the same message, same MSH-10
    run_until(runner, lambda: box.state().get("delivered") == "2", what="the resend delivered")
    assert box.failed() == []
    actions = [json.loads(f["details"]) for _i, f in rclient.xrange(keys.audit) if f["action"] == "outbox.resend"]
    assert actions and actions[0]["message"] == f.message.id


def _write(cfg, make_config) -> str:
    """The test config as a file, for the CLI."""
    return str(write_config(Path(cfg.data.dir).parent / "cfg.toml", config_mapping(
        cfg.clinic.id, redis_url=cfg.redis.url, mqtt_url="mqtt://127.0.0.1:1", data_dir=cfg.data.dir,
        archive_url=cfg.archive.url,
        hl7={"outbound": {"url": cfg.hl7.outbound.url if cfg.hl7.outbound else "mllp://x:1"}})))


def test_a_silent_ehr_is_retried_and_a_restart_loses_nothing(make_config, rclient, keys, ehr):
    listener = ehr(["none", "none"])
    cfg = hl7_cfg(make_config, listener.port)
    first = outbound.InteropRunner(cfg, rclient, keys, "w1")
    sid, readings = ended_session(rclient, keys, cfg)
    run_until(first, lambda: len(listener.received) >= 1, what="a first try")
    box = Outbox(rclient, keys, "hl7")
    run_until(first, lambda: int(box.state().get("attempts") or 0) >= 1, what="the retry recorded")
    assert "no answer" in box.state()["last_error"]
    # the alerts worker stops (its lease given back); another takes over and finishes the job
    first.close()
    second = outbound.InteropRunner(cfg, rclient, keys, "w2")
    run_until(second, lambda: box.state().get("delivered") == "1", timeout_s=30, what="delivered by w2")
    assert len(listener.received) == 3 and len(set(listener.received)) == 1  # the same message each time
    assert obx_values(listener.received[-1]) == expected_obx(readings)


def test_live_mode_sends_each_reading_once(make_config, rclient, keys, ehr, monkeypatch):
    listener = ehr([])
    cfg = hl7_cfg(make_config, listener.port, on="live")
    monkeypatch.setattr(outbound, "LIVE_EVERY_S", 0.2)
    runner = outbound.InteropRunner(cfg, rclient, keys, "w1")
    sid = lifecycle.start_session(rclient, keys, cfg, "room-1", "MRN-9", "iv", "nurse-amy")
    t0 = int(rclient.hget(keys.session(sid), "started_ms"))
    sent: list[Reading] = []
    for k in range(3):
        for i in range(4):
            r = Reading("room-1", "mon-1", t0 + 10 + k * 100 + i, {"hr": 60 + i})
            rclient.xadd(keys.vitals("room-1"), to_fields(r))
            sent.append(r)
        run_until(runner, lambda k=k: len(listener.received) == k + 1, what=f"live message {k}")
    lifecycle.end_session(rclient, keys, cfg, sid, "nurse-amy", now_ms=t0 + 1000)
    for _ in range(20):
        runner.step()
    got = [v for msg in listener.received for v in obx_values(msg)]
    assert got == expected_obx(sent)


# --- FHIR --------------------------------------------------------------------------------------
def test_export_fhir_validates_and_counts_match(make_config, rclient, keys, tmp_path, capsys):
    cfg = hl7_cfg(make_config, 1)
    sid, readings = ended_session(rclient, keys, cfg, n=30)
    out = tmp_path / "s.json"
    assert main(["export", "--session", sid, "--format", "fhir", "-o", str(out), "-c", _write(cfg, make_config),
                 "--user", "dr-lee"]) == 0
    bundle = json.loads(out.read_text())
    b = Bundle.model_validate(bundle)  # R4 models (fhir.resources' R4B package: R4-compatible)
    assert b.type == "collection"
    obs = [Observation.model_validate(e["resource"]) for e in bundle["entry"]]
    values = sum(len(r.values) for r in readings)
    bp_readings = sum(1 for r in readings if "sbp" in r.values)
    assert len(obs) == values - bp_readings == fhir.expected_observations(rows.from_readings(readings))
    assert f"{len(obs)} observations" in capsys.readouterr().out
    panels = [o for o in obs if o.code.coding[0].code == "85354-9"]
    assert len(panels) == bp_readings
    assert [c.code.coding[0].code for c in panels[0].component] == ["8480-6", "8462-4"]
    assert {c.valueQuantity.code for c in panels[0].component} == {"mm[Hg]"}
    hr = next(o for o in obs if o.code.coding[0].code == "8867-4")
    assert hr.valueQuantity.system == "http://unitsofmeasure.org" and hr.valueQuantity.code == "/min"
    assert hr.subject.identifier.value == "MRN-4711" and hr.category[0].coding[0].code == "vital-signs"
    spo2 = next(o for o in obs if o.code.coding[0].code == "59408-5")
    assert spo2.valueQuantity.code == "%"
    temp = next(o for o in obs if o.code.coding[0].code == "8310-5")
    assert temp.valueQuantity.code == "Cel"
    audit = [json.loads(f["details"]) for _i, f in rclient.xrange(keys.audit) if f["action"] == "session.export"]
    assert audit and audit[-1]["format"] == "fhir"


class _Fhir(BaseHTTPRequestHandler):
    answers: list[tuple[int, str]] = []
    got: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).got.append(json.loads(body))
        code, text = type(self).answers.pop(0) if type(self).answers else (200, '{"resourceType":"Bundle"}')
        self.send_response(code)
        self.send_header("Content-Type", "application/fhir+json")
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args: Any) -> None:
        pass


def test_fhir_transaction_post_at_session_end(make_config, rclient, keys):
    _Fhir.got, _Fhir.answers = [], [
        (503, ""), (400, '{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"invalid",'
                         '"diagnostics":"unknown patient"}]}')]
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Fhir)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        cfg = make_config(fhir={"url": f"http://127.0.0.1:{srv.server_address[1]}/fhir", "timeout_s": 2})
        runner = outbound.InteropRunner(cfg, rclient, keys, "w1")
        sid, readings = ended_session(rclient, keys, cfg, n=12)
        box = Outbox(rclient, keys, "fhir")
        run_until(runner, lambda: box.failed(), what="503 retried, then 400 kept")
        assert len(_Fhir.got) == 2 and box.failed()[0].reason == "HTTP 400: unknown patient"
        box.resend(box.failed()[0].message.id)
        run_until(runner, lambda: box.state().get("delivered") == "1", what="accepted after the resend")
        bundle = _Fhir.got[-1]
        Bundle.model_validate(bundle)
        assert bundle["type"] == "transaction"
        assert all(e["request"]["method"] == "POST" and e["request"]["ifNoneExist"].startswith("identifier=")
                   for e in bundle["entry"])
        assert len(bundle["entry"]) == fhir.expected_observations(rows.from_readings(readings))
    finally:
        srv.shutdown()
