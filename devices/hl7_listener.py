"""The MLLP listener: HL7 ORU^R01 from monitors and central stations → Redis, ACK after storage.

`vitalwatch ingest` runs one when `[hl7] listen` is set and its selection has HL7 devices
(`start()`). One asyncio loop in its own thread serves every connection:

- bytes → `MllpFramer` (resyncs on garbage) → `hl7_oru.decode` (pure) → StreamWriter;
- the answer to each message leaves only once every entry it produced (readings and rejects)
  is in Redis — the writer's `on_stored` callbacks, as the MQTT adapter's manual PUBACKs —
  and answers leave in the order the messages came on that connection;
- a re-sent message (same MSH-10) is stored once: readings carry the device's time and the
  writer skips a (device, ts) it already holds; a message whose values had no usable device
  time gets the receive time recorded for its MSH-3 + MSH-10 (`Keys.hl7_receipt`, 24 h), so a
  copy re-sent after an ingest crash gets the same time. Two *different* messages of one
  device with the same time are kept apart by moving the later one's ts by 1 ms;
- flow control: a connection with `MAX_UNACKED` messages waiting for storage, or whose ACKs
  pile up unread (a monitor that never reads its socket), is not read from until that
  clears; one silent for `[hl7] idle_timeout_s` is closed. Memory stays bounded and the
  sender is slowed by TCP, nothing is dropped;
- refusals go to `rejects`, at most one per second per source and reason (a summary counts
  the rest); device status (connecting/online/silent/offline) like other transports, with
  `transport = mllp` and the last peer address.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import tzinfo
from typing import cast
from zoneinfo import ZoneInfo

import redis

from devices.mqtt_adapter import device_state
from devices.protocols import hl7_oru
from devices.statusboard import StatusBoard
from monitor.model.clock import now_ms
from monitor.model.codec import reject_fields
from monitor.model.config import Config, DeviceConfig, RoomConfig
from monitor.model.keys import Keys
from monitor.model.mllp import Garbage, MllpFramer, frame
from monitor.model.ratelimit import RateLimiter
from monitor.model.readings import Reading, Refusal
from monitor.observe import collectors as observe
from monitor.store.redis_conn import REDIS_DOWN
from monitor.store.streams import StreamWriter

log = logging.getLogger(__name__)

MAX_UNACKED = 1000  # per connection (memory bound; re-sends after a crash are checked against the streams)
RECEIPT_TTL_S = 24 * 3600
STATUS_TICK_S = 1.0
READ_CHUNK = 65536
SEND_BUFFER_BYTES = 64 * 1024  # kernel send buffer per connection
ACK_BUFFER_HIGH = 64 * 1024  # asyncio's default high-water mark: drain() waits above it
RECENT_TS_MAX = 20_000  # (device, ts) → message, per device, to tell re-sends from collisions


@dataclasses.dataclass
class ListenerStats:
    """Counters for logs, benchmarks and tests."""

    connections: int = 0
    open_connections: int = 0
    messages: int = 0
    readings: int = 0
    aa: int = 0
    ae: int = 0
    ar: int = 0
    garbage: int = 0
    acks_sent: int = 0
    held_back: int = 0  # times a connection was not read: its answers backed up, or too many messages awaited storage


@dataclasses.dataclass
class _Device:
    room: str
    device: str
    source: str
    silence_ms: int
    state: str = "connecting"
    since_ms: int = 0
    last_valid_ms: int | None = None
    last_msg_ms: int | None = None
    last_ts: int | None = None
    peer: str = ""
    recent: collections.OrderedDict[int, str] = dataclasses.field(default_factory=collections.OrderedDict)


class _Pending:
    """One message waiting for its entries to be stored before its answer may leave."""

    __slots__ = ("ack", "left")

    def __init__(self, ack: bytes, left: int) -> None:
        self.ack, self.left = ack, left


class _Conn:
    """Per-connection state: the answers waiting, in arrival order."""

    def __init__(self, writer: asyncio.StreamWriter, peer: str) -> None:
        self.writer = writer
        self.peer = peer
        self.queue: collections.deque[_Pending] = collections.deque()
        self.room = asyncio.Event()
        self.room.set()
        self.closed = False

    def release(self, stats: ListenerStats) -> None:
        """Send the answers whose messages are fully stored, in order (loop thread)."""
        while self.queue and self.queue[0].left <= 0:
            p = self.queue.popleft()
            if not self.closed:
                self.writer.write(frame(p.ack))
                stats.acks_sent += 1
        if len(self.queue) < MAX_UNACKED:
            self.room.set()


class Hl7Listener:
    """Serves `[hl7] listen` for the HL7 `devices` of this ingest process."""

    def __init__(self, cfg: Config, keys: Keys, writer: StreamWriter, board: StatusBoard,
                 devices: list[tuple[RoomConfig, DeviceConfig]], stop_event: threading.Event,
                 *, client: redis.Redis | None = None, clock: Callable[[], int] = now_ms) -> None:
        if not cfg.hl7.listen:
            raise ValueError("[hl7] listen is not set")
        self.cfg, self.keys, self.writer, self.board = cfg, keys, writer, board
        self.stop_event = stop_event
        self.client = client
        self.clock = clock
        host, _, port = cfg.hl7.listen.rpartition(":")
        self.host, self.port = host.strip("[]"), int(port)
        self.tz: tzinfo = ZoneInfo(cfg.clinic.timezone)
        started = clock()
        self.devices: dict[str, _Device] = {
            d.id: _Device(r.id, d.id, d.source or "", int((d.silence_s or cfg.hl7.silence_s) * 1000), since_ms=started)
            for r, d in devices if d.transport == "mllp"}
        self.sources: dict[str, tuple[str, str]] = {d.source: (d.room, d.device) for d in self.devices.values()}
        # configured HL7 devices another ingest process runs: say so instead of "unknown source"
        self.elsewhere = {d.source or "" for _r, d in cfg.devices() if d.transport == "mllp" and d.id not in self.devices}
        self.stats = ListenerStats()
        self.limiter = RateLimiter(1.0)
        self.bound = threading.Event()
        self.bound_port: int | None = None
        self._listening = False
        self._listen_error = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self._thread = threading.Thread(target=self._run, name="hl7-listener", daemon=True)

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> Hl7Listener:
        """Start the loop thread (binding is retried with backoff if the port is busy)."""
        for d in self.devices.values():
            self.board.set(d.device, {"room": d.room, "protocol": "hl7", "transport": "mllp",
                                      "source": d.source, "listen": self.cfg.hl7.listen or ""})
        self._thread.start()
        return self

    def stop(self) -> None:
        """Ask the listener to stop (open connections are closed; unanswered messages are
        the senders' to re-send)."""
        self.stop_event.set()

    def join(self, timeout: float | None = None) -> None:
        """Wait for the listener thread to end."""
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except Exception:  # noqa: BLE001 - say why HL7 ingest died; the statuses show it offline
            log.exception("HL7 listener stopped on an error")
        finally:
            self._publish(final=True)

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        backoff = 0.5
        tick = asyncio.create_task(self._ticker())
        try:
            while not self.stop_event.is_set():
                if self._server is None:
                    try:
                        self._server = await asyncio.start_server(
                            self._serve, self.host, self.port, limit=READ_CHUNK, reuse_address=True,
                            backlog=self.cfg.hl7.max_connections)
                    except OSError as e:
                        self._listen_error = f"cannot listen on {self.cfg.hl7.listen}: {e.strerror or e}"
                        log.error("%s; retrying in %.1f s", self._listen_error, backoff)
                        await asyncio.sleep(backoff)
                        backoff = min(backoff * 2, 5.0)
                        continue
                    sock = self._server.sockets[0]
                    self.bound_port = sock.getsockname()[1]
                    self._listening, self._listen_error = True, ""
                    log.info("HL7 MLLP listener on %s:%d for %d device(s)", self.host, self.bound_port,
                             len(self.devices))
                    self.bound.set()
                await asyncio.sleep(0.1)
        finally:
            self._listening = False
            if self._server is not None:
                self._server.close()
            for c in list(self._conns):
                c.closed = True
                c.writer.close()
            tick.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await tick
            if self._server is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._server.wait_closed(), 2.0)

    # --- one connection ----------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername)
        label = f"hl7:{peername[0]}" if isinstance(peername, tuple) else "hl7"
        if len(self._conns) >= self.cfg.hl7.max_connections:
            log.warning("HL7 connection from %s refused: %d connections open", peer, len(self._conns))
            self._refuse(Refusal(label, "too_many_connections",
                                 f"more than {self.cfg.hl7.max_connections} connections"), None)
            writer.close()
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:  # answers are small: a monitor not reading them is noticed soon
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER_BYTES)
        conn = _Conn(writer, peer)
        self._conns.add(conn)
        self.stats.connections += 1
        self.stats.open_connections = len(self._conns)
        framer = MllpFramer(self.cfg.hl7.max_message_bytes)
        idle_s = self.cfg.hl7.idle_timeout_s
        try:
            while not self.stop_event.is_set():
                # Flow control before reading more: answers must be leaving (a monitor that
                # never reads its ACKs fills the socket; drain() then waits) and not too many
                # messages may wait for storage.
                low, _high = writer.transport.get_write_buffer_limits()
                if writer.transport.get_write_buffer_size() > low:
                    self.stats.held_back += 1  # drain() waits if the transport paused writing
                await asyncio.wait_for(writer.drain(), idle_s)
                if not conn.room.is_set():
                    self.stats.held_back += 1  # too many messages wait for storage
                await asyncio.wait_for(conn.room.wait(), idle_s)
                data = await asyncio.wait_for(reader.read(READ_CHUNK), idle_s)
                if not data:
                    break
                for piece in framer.feed(data):
                    if isinstance(piece, Garbage):
                        self._garbage(piece, conn, label)
                    else:
                        await self._message(piece, conn, label)
        except TimeoutError:
            log.info("HL7 connection %s idle or not reading its answers for %g s: closed", peer, idle_s)
        except (ConnectionError, OSError) as e:
            log.info("HL7 connection %s lost: %s", peer, e)
        finally:
            conn.closed = True
            self._conns.discard(conn)
            self.stats.open_connections = len(self._conns)
            if framer.pending:
                self._refuse(Refusal(label, "mllp_garbage", f"connection closed inside a frame "
                                     f"({framer.pending} bytes)"), None)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def _garbage(self, g: Garbage, conn: _Conn, label: str) -> None:
        self.stats.garbage += 1
        if g.reason == "too_large":
            # answer it if its MSH can be read, so the sender does not wait for nothing
            res = hl7_oru.Hl7Result("AR", hl7_oru._peek_header(g.data),
                                    errors=[hl7_oru.AckError("100", "Segment sequence error", "MSH^1",
                                                             f"message over {self.cfg.hl7.max_message_bytes} bytes")])
            ref = Refusal(label, "too_large", f"MLLP frame of {g.size} bytes > {self.cfg.hl7.max_message_bytes}",
                          g.data)
            self._enqueue(conn, res, [ref], [], None)
            return
        what = "bytes outside an MLLP frame" if g.reason == "outside_frame" else "an MLLP frame cut off by a new start"
        self._refuse(Refusal(label, "mllp_garbage", f"{g.size} {what}", g.data), None)

    async def _message(self, raw: bytes, conn: _Conn, label: str) -> None:
        recv = self.clock()
        self.stats.messages += 1
        res = hl7_oru.decode(raw, recv, self.sources, self.tz, source_label=label)
        if res.used_receive_time and res.header.control_id and self.client is not None:
            first = await self._receipt(res.header, recv)
            if first is not None and first != recv:
                res = hl7_oru.decode(raw, first, self.sources, self.tz, source_label=label)
        if res.ack == "AE" and any(r.reason == "unknown_source" for r in res.refusals):
            res = self._explain_elsewhere(res)
        msg_key = f"{res.header.sending_app}|{res.header.control_id}"
        readings = [self._distinct_ts(r, msg_key) for r in res.readings]
        self._note(res, readings, conn.peer, recv)
        self._enqueue(conn, res, res.refusals, readings, res.header.control_id)

    def _enqueue(self, conn: _Conn, res: hl7_oru.Hl7Result, refusals: list[Refusal], readings: list[Reading],
                 control_id: str | None) -> None:
        """Hand the entries to the writer; the answer waits until they are stored."""
        setattr(self.stats, res.ack.lower(), getattr(self.stats, res.ack.lower()) + 1)
        rejects = [f for ref in refusals if (f := self._limited(ref)) is not None]
        ack = hl7_oru.ack_message(res, self.clock(), app=self.cfg.hl7.outbound.sending_application
                                  if self.cfg.hl7.outbound else "VITALWATCH", facility=self.cfg.clinic.id)
        pending = _Pending(ack, len(readings) + len(rejects))
        conn.queue.append(pending)
        if len(conn.queue) >= MAX_UNACKED:
            conn.room.clear()
        loop = cast(asyncio.AbstractEventLoop, self._loop)

        def stored() -> None:  # writer thread
            loop.call_soon_threadsafe(self._stored, conn, pending)

        try:
            for r in readings:
                self.writer.write(r, on_stored=stored)
            for fields in rejects:
                self.writer.append(self.keys.rejects, fields, on_stored=stored)
        except RuntimeError as e:  # writer closed: we are stopping; no answer, the sender re-sends
            log.warning("HL7 message %s not stored (%s); its sender will re-send it", control_id, e)
            conn.closed = True
            return
        self.stats.readings += len(readings)
        conn.release(self.stats)

    def _stored(self, conn: _Conn, pending: _Pending) -> None:
        pending.left -= 1
        conn.release(self.stats)

    # --- helpers ------------------------------------------------------------------------
    async def _receipt(self, header: hl7_oru.Header, recv: int) -> int | None:
        """The receive time first given to this message (a re-send gets the same), or None."""
        assert self.client is not None
        key = self.keys.hl7_receipt(header.sending_app[:100], header.control_id[:100])
        client = self.client

        def lookup() -> int | None:
            pipe = client.pipeline(transaction=False)
            pipe.set(key, str(recv), nx=True, ex=RECEIPT_TTL_S)
            pipe.get(key)
            _, value = pipe.execute()
            return int(value) if value else None

        try:
            return await asyncio.to_thread(lookup)
        except (*REDIS_DOWN, ValueError) as e:
            log.warning("HL7 receipt time not recorded (%s): a re-send of %s may be stored twice",
                        e, header.control_id)
            return None

    def _explain_elsewhere(self, res: hl7_oru.Hl7Result) -> hl7_oru.Hl7Result:
        if not self.elsewhere:
            return res
        for i, r in enumerate(res.refusals):
            if r.reason == "unknown_source" and any(s in r.detail for s in self.elsewhere):
                res.refusals[i] = dataclasses.replace(
                    r, reason="not_this_ingest",
                    detail=r.detail + " — configured, but run by another ingest process (--room/--device); "
                                      "run every HL7 device in the ingest process that listens")
        return res

    def _distinct_ts(self, r: Reading, msg_key: str) -> Reading:
        """Keep (device, ts) unique across different messages (a re-send keeps its ts)."""
        d = self.devices.get(r.device)
        if d is None:
            return r
        ts = r.ts_ms
        while (owner := d.recent.get(ts)) is not None and owner != msg_key:
            ts += 1
        d.recent[ts] = msg_key
        d.recent.move_to_end(ts)
        while len(d.recent) > RECENT_TS_MAX:
            d.recent.popitem(last=False)
        return r if ts == r.ts_ms else dataclasses.replace(r, ts_ms=ts)

    def _note(self, res: hl7_oru.Hl7Result, readings: list[Reading], peer: str, recv: int) -> None:
        for dev_id in res.devices:
            d = self.devices.get(dev_id)
            if d is not None:
                d.last_msg_ms, d.peer = recv, peer
        for r in readings:
            d = self.devices[r.device]
            d.last_valid_ms = recv
            d.last_ts = max(d.last_ts or 0, r.ts_ms)
            if d.state != "online":  # at once, not at the next status tick
                log.info("%s → online", d.state, extra={"room": d.room, "device": d.device})
                d.state = "online"
                self.board.set(d.device, {"state": "online", "since_ms": recv, "detail": "", "updated_ms": recv,
                                          "peer": d.peer, "last_ts": d.last_ts},
                               urgent=True)
            self.board.incr(r.device, "frames")
            self.board.incr(r.device, "readings")
        if res.ignored:
            for dev_id in res.devices:
                self.board.incr(dev_id, "hl7_obx_ignored", res.ignored)
        for ref in res.refusals:
            if ref.source in self.devices:
                self.board.incr(ref.source, f"rejects:{ref.reason}")

    def _limited(self, ref: Refusal) -> dict[str, str] | None:
        observe.rejected(ref.reason)
        allowed, held = self.limiter.allow((ref.source, ref.reason), time.monotonic())
        if not allowed:
            return None
        if held:
            ref = dataclasses.replace(ref, detail=f"{ref.detail} (+{held} more suppressed before this)")
        return reject_fields(ref, self.clock())

    def _refuse(self, ref: Refusal, _conn: _Conn | None) -> None:
        fields = self._limited(ref)
        if fields is not None:
            try:
                self.writer.append(self.keys.rejects, fields)
            except RuntimeError as e:
                log.warning("reject not written (%s): %s %s", e, ref.reason, ref.detail)

    def in_flight(self) -> int:
        """Messages received and not yet answered (their ACK waits for Redis); any thread."""
        for _ in range(3):
            try:
                return sum(len(c.queue) for c in list(self._conns))
            except RuntimeError:  # the loop thread changed the set while it was copied
                continue
        return 0

    # --- status -----------------------------------------------------------------------
    async def _ticker(self) -> None:
        while True:
            self._publish()
            await asyncio.sleep(STATUS_TICK_S)

    def _publish(self, final: bool = False) -> None:
        now = self.clock()
        for d in self.devices.values():
            state, detail = device_state(
                broker_up=self._listening, reported=None, last_valid_ms=d.last_valid_ms,
                last_msg_ms=d.last_msg_ms, up_since_ms=d.since_ms, now_ms=now, silence_ms=d.silence_ms)
            if final:
                state, detail = "offline", "ingest stopped"
            elif not self._listening:
                detail = self._listen_error or f"opening the MLLP listener on {self.cfg.hl7.listen}"
            if state != d.state:
                log.log(logging.INFO if state == "online" else logging.WARNING, "%s → %s %s", d.state, state,
                        detail, extra={"room": d.room, "device": d.device})
                d.state = state
                self.board.set(d.device, {"state": state, "since_ms": now}, urgent=True)
            fields: dict[str, str | int | float] = {"detail": detail, "updated_ms": now, "peer": d.peer}
            if d.last_ts is not None:
                fields["last_ts"] = d.last_ts
            self.board.set(d.device, fields)
        try:
            for key, n in self.limiter.drain(time.monotonic()):
                source, reason = cast(tuple[str, str], key)
                self.writer.reject(Refusal(source, reason, f"+{n} more like this suppressed (rate limit 1/s)"), now)
        except RuntimeError as e:
            log.warning("rate-limited reject summaries not written: %s", e)


def start(cfg: Config, keys: Keys, writer: StreamWriter, board: StatusBoard,
          devices: list[tuple[RoomConfig, DeviceConfig]], stop_event: threading.Event,
          client: redis.Redis | None = None) -> Hl7Listener | None:
    """Start the listener when `[hl7] listen` is set and `devices` has HL7 devices."""
    hl7_devs = [(r, d) for r, d in devices if d.transport == "mllp"]
    if not hl7_devs:
        return None
    if not cfg.hl7.listen:  # config validation forbids this; be loud if it ever happens
        log.error("HL7 devices %s configured without [hl7] listen: NOT ingesting them",
                  ", ".join(d.id for _, d in hl7_devs))
        return None
    return Hl7Listener(cfg, keys, writer, board, hl7_devs, stop_event, client=client).start()
