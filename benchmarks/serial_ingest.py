"""Serial ingest figures: parser throughput per protocol, and devices per ingest process.

1. Frames/s one core parses, per protocol (valid streams fed in 4 KiB reads), and the
   time to swallow 1,000,000 random bytes.
2. A real `vitalwatch ingest` process carrying N Nonin DF7 oximeters on ptys, each fed at
   the device's real rate (75 frames/s, paced per frame by a separate feeder process), on
   a private Redis: its CPU share of one core over a window, readings stored, and the
   implied number of such devices one process (one core: the GIL) can carry.

Usage: .venv/bin/python benchmarks/serial_ingest.py [--devices 20] [--seconds 10]
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from devices.protocols.ansar_b import AnsarBParser  # noqa: E402
from devices.protocols.masimo_ascii import MasimoParser  # noqa: E402
from devices.protocols.nibp_un300 import NibpParser, encode_reply  # noqa: E402
from devices.protocols.nonin_df7 import NoninParser, make_packet  # noqa: E402

CAPTURE = Path(__file__).resolve().parents[1] / "tests" / "data" / "ivy450c-ansarb.bin"
CHUNK = 4096


def streams() -> dict[str, tuple[type, bytes, str]]:
    masimo = b"".join(b"01/02/24 10:00:%02d SN=0123456789 SPO2=%03d%% BPM=%03d PI=02.30%% SPCO=01.0%% "
                      b"ALARM=0000 EXC=000800\r\n" % (i % 60, 90 + i % 10, 60 + i % 40) for i in range(20000))
    nonin = b"".join(make_packet(60 + i % 40, 90 + i % 10) for i in range(4000))
    nibp = b"".join(encode_reply(i % 2, "00", 120, 80, 93, 70, i) for i in range(20000))
    ansar = CAPTURE.read_bytes()[252:] * 80
    return {
        "masimo-ascii": (MasimoParser, masimo, "lines"),
        "nonin-df7": (NoninParser, nonin, "5-byte frames"),
        "nibp-un300": (NibpParser, nibp, "replies"),
        "ansar-b": (AnsarBParser, ansar, "messages"),
    }


def parse_throughput() -> None:
    print("== parser throughput (one core) ==")
    rng = random.Random(1)
    noise = rng.randbytes(1_000_000)
    for name, (cls, data, unit) in streams().items():
        parser = cls(name)
        t0 = time.perf_counter()
        for i in range(0, len(data), CHUNK):
            parser.feed(data[i:i + CHUNK])
        dt = time.perf_counter() - t0
        p2 = cls(name)
        t1 = time.perf_counter()
        for i in range(0, len(noise), CHUNK):
            p2.feed(noise[i:i + CHUNK])
        dn = time.perf_counter() - t1
        print(f"{name:13} {parser.frames / dt:>10,.0f} {unit}/s  ({len(data) / dt / 1e6:5.2f} MB/s)   "
              f"1 MB random: {dn:.2f} s")


def feeder(n: int, directory: Path) -> None:
    """Child process: N Nonin ptys at dir/tty-i, 75 frames/s each, paced per frame."""
    sys.path.insert(0, str(ROOT))
    from tests.fake_serial import PtyDevice

    devs = [PtyDevice(directory / f"tty-{i}") for i in range(n)]
    packet = make_packet(72, 97)
    frames = [packet[i:i + 5] for i in range(0, len(packet), 5)]
    (directory / "ready").touch()
    period = 1 / 75
    k = 0
    t = time.monotonic()
    while True:
        for d in devs:
            try:
                d.write(frames[k % 25])
            except OSError:
                pass
        k += 1
        t += period
        delay = t - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def devices_per_process(n: int, seconds: float) -> None:
    import redis

    from tests.servers import RedisProc

    print(f"\n== one ingest process, {n} Nonin DF7 devices at 75 frames/s ==")
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        srv = RedisProc(tmp / "redis").start()
        feed = subprocess.Popen([sys.executable, __file__, "--feeder", str(n), str(tmp)])
        ingest = None
        try:
            while not (tmp / "ready").exists():
                time.sleep(0.05)
            cfg = [f'[clinic]\nid = "bench"\n[redis]\nurl = "{srv.url}"\n[mqtt]\nurl = "mqtt://127.0.0.1:1883"\n'
                   f'[data]\ndir = "{tmp / "data"}"\n[[rooms]]\nid = "room-1"\n']
            for i in range(n):
                cfg.append(f'[[rooms.devices]]\nid = "oxi-{i}"\nprotocol = "nonin-df7"\ntransport = "serial"\n'
                           f'port = "{tmp / f"tty-{i}"}"\n')
            (tmp / "vw.toml").write_text("\n".join(cfg))
            ingest = subprocess.Popen([sys.executable, "-m", "monitor", "ingest", "-c", str(tmp / "vw.toml")],
                                      cwd=ROOT, stderr=subprocess.DEVNULL)
            r = redis.Redis.from_url(srv.url, decode_responses=True)
            time.sleep(3)  # warm up: ports open, first packets
            frames = lambda: sum(int(r.hget(f"vw:{{bench}}:device:oxi-{i}", "frames") or 0)  # noqa: E731
                                 for i in range(n))
            c0, w0 = cpu_s(ingest.pid), time.monotonic()
            n0, f0 = r.xlen("vw:{bench}:vitals:room-1"), frames()
            time.sleep(seconds)
            c1, w1 = cpu_s(ingest.pid), time.monotonic()
            n1, f1 = r.xlen("vw:{bench}:vitals:room-1"), frames()
            share = (c1 - c0) / (w1 - w0)
            rejects = r.xlen("vw:{bench}:rejects")
            print(f"frames parsed: {(f1 - f0) / (w1 - w0) / n:.1f} /s per device (device sends 75)")
            print(f"ingest CPU: {share * 100:.1f} % of one core over {w1 - w0:.1f} s")
            print(f"readings stored: {n1 - n0} in the window (expected ≈ {n * (w1 - w0):.0f}: 1/s/device); "
                  f"rejects entries: {rejects}")
            per_device = share / n
            print(f"CPU per device: {per_device * 100:.2f} % of a core → one process carries "
                  f"≈ {int(0.7 / per_device) if per_device else 0} such devices at 70 % of a core")
        finally:
            if ingest:
                ingest.terminate()
                ingest.wait(30)
            feed.terminate()
            feed.wait(10)
            srv.stop()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, default=20)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--feeder", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.feeder:
        feeder(int(a.feeder[0]), Path(a.feeder[1]))
        return
    parse_throughput()
    devices_per_process(a.devices, a.seconds)


if __name__ == "__main__":
    main()
