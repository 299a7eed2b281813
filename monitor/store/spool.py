"""An append-only on-disk queue of stream entries: the oldest part of a writer's queue.

The writer keeps accepted entries in memory while Redis takes them. When Redis refuses or
is away for more than a moment, when memory is full, and at shutdown, the oldest entries
move here, in order, and are replayed from here first — by this process once Redis is
back, or by the next start. One JSON object per line:
    {"key": stream key, "fields": {...}, "dedup": bool, "acc": accepted ms, "chk": ms?}
(`chk`: the entry may already be in Redis, stored no earlier than this host time).

Crash safety:
- appends are fsynced; a failed append (disk full, file size limit) is cut back to the last
  whole line, so the file never keeps half an entry it reported as not written;
- a torn last line (a crash mid-append) is cut off when the spool is opened and kept aside
  in `<spool>.torn` — it is never counted, so a drained spool is really empty;
- the read offset lives in `<spool>.offset`, replaced atomically (write, fsync, rename,
  fsync the directory); a drained spool is truncated and fsynced before the offset goes;
- a line that does not parse is logged, kept in `<spool>.corrupt` and skipped (counted).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

READ_CHUNK = 256 * 1024
LEGACY_MARGIN_MS = 600_000


@dataclass(slots=True)
class Item:
    """One queued stream entry (the callback, if any, is kept by the writer)."""

    key: str
    fields: dict[str, str]
    dedup: bool  # a reading: stored once per identity (dev, ts, digest; model/codec.py)
    accepted_ms: int  # when the writer accepted it (host clock)
    check_from_ms: int | None = None  # may already be stored, no earlier than this; None: never sent
    # (not persisted) read back from a spool an earlier process wrote; and the host time by
    # which a stored copy must have been written (None: it may be written right up to now)
    prior: bool = False
    check_until_ms: int | None = None

    def to_line(self) -> bytes:
        """The spool line for this item."""
        d: dict[str, object] = {"key": self.key, "fields": self.fields, "dedup": self.dedup,
                                "acc": self.accepted_ms}
        if self.check_from_ms is not None:
            d["chk"] = self.check_from_ms
        return json.dumps(d, separators=(",", ":")).encode() + b"\n"

    @classmethod
    def from_line(cls, line: bytes, default_ms: int) -> Item:
        """Parse a spool line (older lines without `acc` get `default_ms`); ValueError if bad."""
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise ValueError("not an object")
        key, fields = obj.get("key"), obj.get("fields")
        if not isinstance(key, str) or not isinstance(fields, dict) or \
                not all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items()):
            raise ValueError("bad key or fields")
        acc = obj.get("acc", default_ms)
        chk = obj.get("chk")
        if not isinstance(acc, int) or (chk is not None and not isinstance(chk, int)):
            raise ValueError("bad times")
        return cls(key, fields, bool(obj.get("dedup")), acc, chk)


class SpoolError(OSError):
    """The spool could not be written (disk full, file too large, I/O error)."""


class Spool:
    """A file of pending entries, read from a saved offset, truncated when drained."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._offset_path = path.with_name(path.name + ".offset")
        created = not self.path.exists()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        if created:
            _fsync_dir(self.path.parent)  # the file itself survives a crash, not only its data
        self._read_offset = self._load_offset()
        self.count = self._repair_and_count()
        # lines present at open were written by an earlier process: each may have been sent
        st = os.fstat(self._fd)
        self._prior_end = st.st_size
        # lines of an older format carry no acceptance time: take the file's last change,
        # less a margin for entries that waited in memory before they were spooled
        self._legacy_acc_ms = int(st.st_mtime * 1000) - LEGACY_MARGIN_MS
        self.corrupt = 0  # unreadable lines skipped (kept in <spool>.corrupt)

    # --- open ---------------------------------------------------------------------
    def _load_offset(self) -> int:
        try:
            return int(self._offset_path.read_text())
        except FileNotFoundError:
            return 0
        except (OSError, ValueError) as e:
            log.error("spool %s: offset file unreadable (%s); replaying from the start", self.path, e)
            return 0

    def _repair_and_count(self) -> int:
        """Cut a torn last line (kept aside); count the whole lines after the offset."""
        size = os.fstat(self._fd).st_size
        if self._read_offset > size:
            # drained and truncated, crashed before the offset file went: nothing pending
            self._read_offset = 0
        n = 0
        last_nl = self._read_offset - 1
        pos = self._read_offset
        while pos < size:
            chunk = os.pread(self._fd, min(READ_CHUNK, size - pos), pos)
            if not chunk:
                break
            n += chunk.count(b"\n")
            i = chunk.rfind(b"\n")
            if i >= 0:
                last_nl = pos + i
            pos += len(chunk)
        end = last_nl + 1
        if end < size:
            torn = os.pread(self._fd, size - end, end)
            with open(self.path.with_name(self.path.name + ".torn"), "ab") as fh:
                fh.write(torn + b"\n")
            os.ftruncate(self._fd, end)
            os.fsync(self._fd)
            log.warning("spool %s: cut a torn last line of %d bytes (a crash mid-append; kept in %s.torn)",
                        self.path, size - end, self.path.name)
        return n

    # --- write --------------------------------------------------------------------
    def append(self, items: list[Item]) -> None:
        """Add items at the end and fsync; on failure nothing of them stays (SpoolError)."""
        if not items:
            return
        data = b"".join(it.to_line() for it in items)
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as e:
            try:
                os.ftruncate(self._fd, start)  # no half line, no lines we report unwritten
            except OSError as e2:
                log.error("spool %s: cannot cut back a failed append (%s); repaired at next open", self.path, e2)
            raise SpoolError(e.errno, f"cannot write spool {self.path}: {e.strerror or e}") from e
        self.count += len(items)

    # --- read ---------------------------------------------------------------------
    def peek(self, max_entries: int) -> tuple[list[Item | None], int]:
        """The oldest lines (up to `max_entries`) as items, None for an unreadable line
        (logged and kept aside), and the offset just past them."""
        out: list[Item | None] = []
        size = os.fstat(self._fd).st_size
        buf, i, base = b"", 0, self._read_offset  # base: file offset of buf[0]
        while len(out) < max_entries:
            nl = buf.find(b"\n", i)
            if nl < 0:
                read_at = base + len(buf)
                if read_at >= size:
                    break  # no whole line left (a torn tail is cut at open)
                chunk = os.pread(self._fd, min(READ_CHUNK, size - read_at), read_at)
                if not chunk:
                    break
                buf, base, i = buf[i:] + chunk, base + i, 0
                continue
            line, start, i = buf[i:nl + 1], base + i, nl + 1
            try:
                item = Item.from_line(line, default_ms=self._legacy_acc_ms)
            except ValueError as e:
                self._keep_corrupt(line, start, e)
                out.append(None)
                continue
            if start < self._prior_end:
                item.prior = True
                if item.check_from_ms is None:
                    item.check_from_ms = item.accepted_ms  # from an earlier process: maybe sent
            out.append(item)
        return out, base + i

    def _keep_corrupt(self, line: bytes, offset: int, why: Exception) -> None:
        self.corrupt += 1
        log.error("spool %s: unreadable line at offset %d skipped (%s); kept in %s.corrupt",
                  self.path, offset, why, self.path.name)
        try:
            with open(self.path.with_name(self.path.name + ".corrupt"), "ab") as fh:
                fh.write(line)
        except OSError as e:
            log.error("spool %s: cannot keep the unreadable line: %s", self.path, e)

    def commit(self, offset: int, lines: int) -> None:
        """Mark lines up to `offset` as stored; truncate the file once all are (durably)."""
        self._read_offset = offset
        self.count = max(0, self.count - lines)
        if self.count == 0:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self._read_offset = 0
            self._prior_end = 0
            if self._offset_path.exists():
                self._offset_path.unlink()
                _fsync_dir(self.path.parent)
        else:
            tmp = self._offset_path.with_name(self._offset_path.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.write(fd, str(offset).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, self._offset_path)
            _fsync_dir(self.path.parent)

    def close(self) -> None:
        """Close the file; pending entries stay on disk for the next start."""
        os.close(self._fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename/unlink in `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
