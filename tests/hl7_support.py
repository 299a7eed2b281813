"""HL7 test helpers: an MLLP peer (a monitor, or an EHR that answers), a listener rig, messages."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis

from devices.hl7_listener import Hl7Listener
from devices.statusboard import StatusBoard
from monitor.model.clock import now_ms  # noqa: F401 - re-exported for the HL7 tests
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.model.mllp import MllpFramer, frame
from monitor.store.streams import StreamWriter

DATA = Path(__file__).parent / "data" / "hl7"


def dtm(ms: int) -> str:
    """HL7 DTM in UTC with the offset."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y%m%d%H%M%S") + "+0000"


def oru(control: str, ts_ms: int | None, obx: list[str], *, app: str = "MON^ABC123^EUI-64",
        version: str = "2.6", pv1: str = "ICU^^5", obr_ts: int | None = None) -> bytes:
    """An ORU^R01 with the given OBX bodies (each `type|code|sub|value|unit|...` after `OBX|n|`).

    `ts_ms` goes into OBX-14 of every OBX unless an OBX text already carries fields past OBX-11.
    """
    t = dtm(ts_ms) if ts_ms is not None else ""
    segs = [f"MSH|^~\\&|{app}|FAC|||{t}||ORU^R01^ORU_R01|{control}|P|{version}",
            "PID|||^^^H^PI", f"PV1||I|{pv1}",
            f"OBR|1|||182777000^monitoring of patient^SCT|||{dtm(obr_ts) if obr_ts else ''}"]
    for i, body in enumerate(obx, start=1):
        parts = body.split("|")
        if len(parts) < 12 and t:
            parts += [""] * (11 - len(parts)) + ["", t]
        segs.append(f"OBX|{i}|" + "|".join(parts))
    return ("\r".join(segs) + "\r").encode()


def nm(code: str, value: object, unit: str, status: str = "F") -> str:
    """An NM OBX body: `NM|code||value|unit|||||status`."""
    return f"NM|{code}||{value}|{unit}|||||{status}"


HR = "147842^MDC_ECG_HEART_RATE^MDC"
SPO2 = "150456^MDC_PULS_OXIM_SAT_O2^MDC"
BPM = "264864^MDC_DIM_BEAT_PER_MIN^MDC"
PCT = "262688^MDC_DIM_PERCENT^MDC"


def msa(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of an answer."""
    for seg in ack.decode().split("\r"):
        if seg.startswith("MSA"):
            f = seg.split("|")
            return f[1], f[2]
    raise AssertionError(f"no MSA in {ack!r}")


class MllpPeer:
    """A blocking MLLP client: send messages, read answers."""

    def __init__(self, port: int, host: str = "127.0.0.1", timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        self.framer = MllpFramer()
        self.frames: list[bytes] = []

    def send(self, message: bytes) -> None:
        self.sock.sendall(frame(message))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> bytes:
        """The next answer frame (waits up to the socket timeout)."""
        while not self.frames:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by the listener")
            self.frames += [p for p in self.framer.feed(data) if isinstance(p, bytes)]
        return self.frames.pop(0)

    def ask(self, message: bytes) -> tuple[str, str]:
        self.send(message)
        return msa(self.answer())

    def close(self) -> None:
        self.sock.close()


class ListenerRig:
    """An Hl7Listener on a free port with a real writer and status board on the test Redis."""

    def __init__(self, cfg: Config, redis_url: str, keys: Keys, tmp: Path) -> None:
        self.client = redis.Redis.from_url(redis_url, decode_responses=True)
        self.writer = StreamWriter(redis_url, keys, retention_ms=3600_000, spool_path=tmp / "spool.jsonl")
        self.board = StatusBoard(self.client, keys, interval_s=0.1).start()
        self.stop = threading.Event()
        self.listener = Hl7Listener(cfg, keys, self.writer, self.board, cfg.devices(), self.stop,
                                    client=self.client)

    def __enter__(self) -> ListenerRig:
        self.listener.start()
        assert self.listener.bound.wait(10), "listener did not bind"
        return self

    @property
    def port(self) -> int:
        assert self.listener.bound_port is not None
        return self.listener.bound_port

    def peer(self) -> MllpPeer:
        return MllpPeer(self.port)

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.listener.join(10)
        self.writer.close()
        self.board.stop()
        self.client.close()


def hl7_config(make_config: Callable[..., Config], devices: list[dict[str, Any]] | None = None,
               **extra: Any) -> Config:
    """A config with one room of HL7 devices and the listener on a free port."""
    devs = devices or [{"id": "mon-1", "protocol": "hl7", "transport": "mllp", "source": "ABC123"}]
    return make_config(rooms=[{"id": "room-1", "devices": devs}],
                       hl7={"listen": "127.0.0.1:0", **extra.pop("hl7", {})}, **extra)


@contextmanager
def rig(make_config: Callable[..., Config], redis_url: str, keys: Keys, tmp: Path,
        devices: list[dict[str, Any]] | None = None, **extra: Any) -> Iterator[ListenerRig]:
    with ListenerRig(hl7_config(make_config, devices, **extra), redis_url, keys, tmp) as r:
        yield r
