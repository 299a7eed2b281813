"""An append-only on-disk queue of stream entries, for when Redis is away too long.

The writer keeps accepted entries in memory first; past its memory bound, and at shutdown
while Redis is unreachable, they go here, and are replayed in order on the next flush or
the next start. One JSON object per line: {"key": stream key, "fields": {...}, "dedup": bool}.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

Entry = tuple[str, dict[str, str], bool]  # (stream key, fields, dedup by (dev, ts))


class Spool:
    """A file of pending entries, read from a saved offset, truncated when drained."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._offset_path = path.with_suffix(path.suffix + ".offset")
        self._fh = open(self.path, "ab")
        self._read_offset = self._load_offset()
        self.count = self._count_pending()

    def _load_offset(self) -> int:
        try:
            return int(self._offset_path.read_text())
        except (OSError, ValueError):
            return 0

    def _count_pending(self) -> int:
        n = 0
        with open(self.path, "rb") as fh:
            fh.seek(self._read_offset)
            for _ in fh:
                n += 1
        return n

    def append(self, entries: list[Entry]) -> None:
        """Add entries at the end and fsync, so they survive a crash of this process."""
        lines = b"".join(
            json.dumps({"key": k, "fields": f, "dedup": d}, separators=(",", ":")).encode() + b"\n"
            for k, f, d in entries
        )
        self._fh.write(lines)
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.count += len(entries)

    def prepend(self, entries: list[Entry]) -> None:
        """Put entries *before* everything pending (they are older), atomically."""
        if not entries:
            return
        rest, _ = self.peek(self.count)
        self._fh.close()
        tmp = self.path.with_suffix(".rewrite")
        with open(tmp, "wb") as fh:
            for k, f, d in entries + rest:
                fh.write(json.dumps({"key": k, "fields": f, "dedup": d}, separators=(",", ":")).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
        self._offset_path.unlink(missing_ok=True)
        self._read_offset = 0
        self.count = len(entries) + len(rest)
        self._fh = open(self.path, "ab")

    def peek(self, max_entries: int) -> tuple[list[Entry], int]:
        """Up to `max_entries` oldest entries and the offset just past them."""
        out: list[Entry] = []
        with open(self.path, "rb") as fh:
            fh.seek(self._read_offset)
            while len(out) < max_entries:
                line = fh.readline()
                if not line:
                    break
                if not line.endswith(b"\n"):
                    break  # a torn last line from a crash mid-append: never half-read it
                try:
                    obj = json.loads(line)
                    out.append((obj["key"], obj["fields"], bool(obj.get("dedup"))))
                except (ValueError, KeyError, TypeError):
                    log.error("spool %s: unreadable line at offset %d skipped", self.path, fh.tell())
            return out, fh.tell()

    def commit(self, offset: int, n: int) -> None:
        """Mark entries up to `offset` as stored; truncate the file once all are."""
        self._read_offset = offset
        self.count = max(0, self.count - n)
        if self.count == 0:
            self._fh.truncate(0)
            self._read_offset = 0
            self._offset_path.unlink(missing_ok=True)
        else:
            tmp = self._offset_path.with_suffix(".tmp")
            tmp.write_text(str(offset))
            os.replace(tmp, self._offset_path)

    def close(self) -> None:
        """Close the file handle; pending entries stay on disk."""
        self._fh.close()

    def __iter__(self) -> Iterator[Entry]:  # pragma: no cover - debugging aid
        entries, _ = self.peek(self.count)
        return iter(entries)
