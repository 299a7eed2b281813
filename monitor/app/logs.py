"""One logging set-up for every role: level, text or JSON lines, room and device in each line.

Adapters log with `extra={"room": …, "device": …}`; the formatters print them when present.
Patient identifiers never go to logs: log session ids, not patient ids. Secrets never do
either: every formatted line passes through `redact_text`, which masks the password of any
URL in it (a Redis or archive URL inside an exception message included).
"""

from __future__ import annotations

import json
import logging
import sys
import time

from monitor.model.redact import redact_text


class _Context(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for attr in ("room", "device"):
            if not hasattr(record, attr):
                setattr(record, attr, "")
        return True


class _RoleFormatter(logging.Formatter):
    """A formatter that names the process's role on every line."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role


class TextFormatter(_RoleFormatter):
    """`2026-11-27T10:00:00Z INFO role room=… device=… message`"""

    def format(self, record: logging.LogRecord) -> str:
        t = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        ctx = "".join(
            f" {k}={getattr(record, k)}" for k in ("room", "device") if getattr(record, k, "")
        )
        line = f"{t}Z {record.levelname} {self.role} {record.name}{ctx}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact_text(line)


class JsonFormatter(_RoleFormatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        obj = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "role": self.role,
            "logger": record.name,
            "msg": redact_text(record.getMessage()),
        }
        for k in ("room", "device"):
            if getattr(record, k, ""):
                obj[k] = getattr(record, k)
        if record.exc_info:
            obj["exc"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(obj, ensure_ascii=False)


def setup_logging(role: str, level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger for this process (stderr)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context())
    handler.setFormatter(JsonFormatter(role) if fmt == "json" else TextFormatter(role))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("werkzeug", "urllib3", "asyncio", "transitions", "amqtt", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
