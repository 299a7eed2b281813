"""The MLLP listener against real sockets and Redis: answers after storage, refusals, re-sends
stored once, a monitor that never reads its ACKs, 50 concurrent connections, device status."""

from __future__ import annotations

import socket
import threading

import pytest

from devices import hl7_listener
from monitor.model.mllp import frame
from tests.hl7_support import BPM, HR, PCT, SPO2, ListenerRig, MllpPeer, hl7_config, msa, nm, now_ms, oru, rig
from tests.waiting import wait_for


def vitals(rclient, keys, room="room-1"):
    return [f for _id, f in rclient.xrange(keys.vitals(room))]


def rejects(rclient, keys):
    return [f for _id, f in rclient.xrange(keys.rejects)]


def test_aa_only_once_the_reading_is_in_redis(make_config, keys, tmp_path, redis_proc):
    """Redis down: no answer (the monitor keeps the message); Redis back: AA, stored once."""
    cfg = hl7_config(make_config)
    with ListenerRig(cfg, redis_proc.url, keys, tmp_path) as r:
        peer = r.peer()
        assert peer.ask(oru("c0", now_ms() - 1000, [nm(HR, 70, BPM)])) == ("AA", "c0")
        redis_proc.kill()
        peer.send(oru("c1", now_ms() - 500, [nm(HR, 71, BPM)]))
        peer.sock.settimeout(1.5)
        with pytest.raises(TimeoutError):
            peer.answer()  # nothing while the reading is not stored
        redis_proc.start()
        peer.sock.settimeout(30)
        assert msa(peer.answer()) == ("AA", "c1")
        import redis as redis_lib
        c = redis_lib.Redis.from_url(redis_proc.url, decode_responses=True)
        assert [f["hr"] for _i, f in c.xrange(keys.vitals("room-1"))] == ["70", "71"]


def test_unknown_source_ae_and_garbage_ar_go_to_rejects(make_config, redis_url, keys, rclient, tmp_path):
    with rig(make_config, redis_url, keys, tmp_path) as r:
        peer = r.peer()
        assert peer.ask(oru("u1", now_ms(), [nm(HR, 70, BPM)], app="STRANGER", pv1="X^^9")) == ("AE", "u1")
        peer.send_raw(b"\x0bthis is not hl7\x1c\r")
        assert msa(peer.answer()) == ("AR", "")
        peer.send_raw(b"line noise outside any frame\r\n")  # no answer possible: a reject only
        assert peer.ask(oru("ok", now_ms(), [nm(HR, 70, BPM)])) == ("AA", "ok")
        got = {f["reason"] for f in wait_for(lambda: rejects(rclient, keys)
                                             if len(rejects(rclient, keys)) >= 3 else None)}
        assert got == {"unknown_source", "bad_hl7", "mllp_garbage"}
        assert len(vitals(rclient, keys)) == 1


def test_a_resent_message_is_stored_once(make_config, redis_url, keys, rclient, tmp_path):
    with rig(make_config, redis_url, keys, tmp_path) as r:
        with_time = oru("t1", now_ms() - 3000, [nm(HR, 70, BPM)])
        no_time = oru("n1", None, [nm(HR, 80, BPM)])  # the receive time is all there is
        for _ in range(3):
            peer = r.peer()  # a re-send comes on a new connection, as after a dropped link
            assert peer.ask(with_time)[0] == "AA"
            assert peer.ask(no_time)[0] == "AA"
            peer.close()
        assert sorted(f["hr"] for f in vitals(rclient, keys)) == ["70", "80"]


def test_two_messages_with_the_same_time_are_both_kept(make_config, redis_url, keys, rclient, tmp_path):
    ts = now_ms() - 2000
    with rig(make_config, redis_url, keys, tmp_path) as r:
        peer = r.peer()
        assert peer.ask(oru("a", ts, [nm(HR, 70, BPM)]))[0] == "AA"
        assert peer.ask(oru("b", ts, [nm(SPO2, 95, PCT)]))[0] == "AA"  # NIBP-style: another message, same second
        assert peer.ask(oru("a", ts, [nm(HR, 70, BPM)]))[0] == "AA"  # a re-send of the first
        got = vitals(rclient, keys)
        assert [(f.get("hr"), f.get("spo2")) for f in got] == [("70", None), (None, "95")]
        assert int(got[1]["ts"]) == int(got[0]["ts"]) + 1


def test_a_monitor_that_never_reads_its_acks(make_config, redis_url, keys, rclient, tmp_path, monkeypatch):
    """Its ACKs pile up unread; the listener stops reading it (TCP slows it) instead of holding
    unbounded memory, keeps serving others, stores everything it took, and answers in order."""
    monkeypatch.setattr(hl7_listener, "MAX_UNACKED", 200)
    n = 4000
    base = now_ms() - n * 1000  # one message a second of device time, as a monitor sends
    with rig(make_config, redis_url, keys, tmp_path) as r:
        deaf = socket.create_connection(("127.0.0.1", r.port))
        deaf.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sent = threading.Event()
        count = [0]

        def blast() -> None:
            for i in range(n):
                deaf.sendall(frame(oru(f"d{i}", base + i * 1000, [nm(HR, 60 + i % 50, BPM)])))
                count[0] = i + 1
            sent.set()

        t = threading.Thread(target=blast, daemon=True)
        t.start()
        # others are served meanwhile
        other = r.peer()
        assert other.ask(oru("x1", now_ms(), [nm(HR, 99, BPM)], app="MON^ABC123")) == ("AA", "x1")
        # the deaf one is held back: not read while its answers pile up, so memory stays bounded
        wait_for(lambda: r.listener.stats.held_back > 0, what="the listener to stop reading the deaf monitor")
        for c in r.listener._conns:
            assert len(c.queue) <= hl7_listener.MAX_UNACKED + hl7_listener.READ_CHUNK // 50
            assert c.writer.transport.get_write_buffer_size() < 4 * hl7_listener.ACK_BUFFER_HIGH
        # now it reads: every answer arrives, in order, and every reading is stored once
        peer = MllpPeer.__new__(MllpPeer)
        peer.sock, peer.framer, peer.frames = deaf, __import__("monitor.model.mllp", fromlist=["x"]).MllpFramer(), []
        deaf.settimeout(30)
        got = [msa(peer.answer())[1] for _ in range(n)]
        assert got == [f"d{i}" for i in range(n)]
        assert sent.wait(30)
        assert len(vitals(rclient, keys)) == n + 1


def test_fifty_concurrent_connections(make_config, redis_url, keys, rclient, tmp_path):
    per = 20
    base = now_ms() - 30_000
    devices = [{"id": f"mon-{i}", "protocol": "hl7", "transport": "mllp", "source": f"SRC{i}"} for i in range(50)]
    with rig(make_config, redis_url, keys, tmp_path, devices=devices) as r:
        errors: list[str] = []

        def monitor(i: int) -> None:
            try:
                peer = r.peer()
                for k in range(per):
                    code, ctrl = peer.ask(oru(f"{i}-{k}", base + k * 1000, [nm(HR, 60 + k, BPM)], app=f"X^SRC{i}"))
                    if (code, ctrl) != ("AA", f"{i}-{k}"):
                        errors.append(f"{i}-{k}: {code} {ctrl}")
                peer.close()
            except OSError as e:
                errors.append(f"{i}: {e}")

        threads = [threading.Thread(target=monitor, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        got = vitals(rclient, keys)
        assert len(got) == 50 * per
        assert len({(f["dev"], f["ts"]) for f in got}) == 50 * per
        assert r.listener.stats.connections == 50


def test_device_status_online_silent_offline(make_config, redis_url, keys, rclient, tmp_path):
    status = lambda: rclient.hgetall(keys.device_status("mon-1"))  # noqa: E731
    with rig(make_config, redis_url, keys, tmp_path, hl7={"silence_s": 1.0}) as r:
        peer = r.peer()
        assert peer.ask(oru("s1", now_ms(), [nm(HR, 70, BPM)]))[0] == "AA"
        wait_for(lambda: status().get("state") == "online", what="online")
        st = status()
        assert st["transport"] == "mllp" and st["protocol"] == "hl7" and st["peer"].startswith("127.0.0.1:")
        wait_for(lambda: status().get("state") == "offline", what="offline after silence")
        # messages without a usable value: the device is there, but silent
        stop = threading.Event()

        def chatter() -> None:
            i = 0
            while not stop.is_set():
                peer.ask(oru(f"e{i}", now_ms(), ["NM|108^MNDRY_ECG_PAUSE_RATE^99MNDRY||0|" + BPM]))
                i += 1
                stop.wait(0.2)

        t = threading.Thread(target=chatter, daemon=True)
        t.start()
        try:
            wait_for(lambda: status().get("state") == "silent", what="silent")
        finally:
            stop.set()
            t.join(5)
        assert int(status().get("rejects:no_values", 0)) >= 1
    wait_for(lambda: status().get("state") == "offline" and status().get("detail") == "ingest stopped",
             what="offline at stop")


def test_refusals_are_rate_limited_but_counted(make_config, redis_url, keys, rclient, tmp_path):
    with rig(make_config, redis_url, keys, tmp_path) as r:
        peer = r.peer()
        for i in range(200):
            peer.send_raw(frame(b"nonsense %d" % i))
        answers = [msa(peer.answer())[0] for _ in range(200)]
        assert set(answers) == {"AR"}

        def summary():
            entries = [f for f in rejects(rclient, keys) if f["reason"] == "bad_hl7"]
            return entries if any("suppressed" in f["detail"] for f in entries) else None

        entries = wait_for(summary, what="a summary of the suppressed refusals")
        assert len(entries) < 20
        counted = sum(int(f["detail"].split("+")[1].split()[0]) for f in entries if "+" in f["detail"])
        assert counted + len(entries) >= 200 - 1
