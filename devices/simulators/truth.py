"""Ground-truth log: every reading a simulator emitted and every fault it injected (JSON lines).

Records (one JSON object a line, `kind` first):
- `run`: seed, speed, scenario, start ts_ms — once at the top.
- `dose`: room, route, dose_mg, sim_s and the wall ts_ms it happens at.
- `reading`: room, device, protocol, ts_ms (host time it was sent), sim_s, values, flags
  (what the contract says ingest should store), `expect` = `stored` | `refused` | `lost`,
  optional `fault` (why not stored) and `device_ts_ms` (the device's own clock, if skewed).
- `fault`: room, device, fault, phase `start`|`end`, ts_ms — every injected fault episode.
- `noise`: room, device, what (garbage|cut|bad_checksum|invalid_json|…), ts_ms, bytes.
- `link`: room, device, event (opened|closed|no_listener), path, ts_ms, dropped_bytes.
Tests and benchmarks read it back with `read_truth(path)`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


class TruthLog:
    """Thread-safe JSON-lines writer (or an in-memory list when no path is given)."""

    def __init__(self, path: str | Path | None = None, keep: bool = True) -> None:
        self.path = Path(path) if path else None
        # kept in memory too, for fixtures and tests (`keep`); a long-running `vitalwatch
        # simulate` keeps none (20 rooms would grow ~46 MB an hour: benchmarks/soak.py)
        self.keep = keep
        self.records: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._fh: IO[str] | None = None
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8")

    def write(self, kind: str, **fields: Any) -> None:
        """Append one record."""
        rec = {"kind": kind, **fields}
        line = json.dumps(rec, separators=(",", ":"), sort_keys=False)
        with self._lock:
            if self.keep:
                self.records.append(rec)
            if self._fh:
                self._fh.write(line + "\n")
                self._fh.flush()  # a reader (test, benchmark) may tail it while we run

    def of(self, kind: str, device: str | None = None) -> list[dict[str, Any]]:
        """Records of one kind (optionally one device) written so far (none unless `keep`)."""
        with self._lock:
            return [r for r in self.records if r["kind"] == kind and (device is None or r.get("device") == device)]

    def close(self) -> None:
        """Flush and close the file."""
        with self._lock:
            if self._fh:
                self._fh.close()
                self._fh = None


def read_truth(path: str | Path) -> Iterator[dict[str, Any]]:
    """The records of a truth log file, in order."""
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)
