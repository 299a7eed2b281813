"""One logging set-up for every role: text or JSON lines, room and device in each line."""

from __future__ import annotations

import json
import logging

import pytest

from monitor.app.logs import setup_logging


@pytest.fixture(autouse=True)
def _restore_root():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_role_room_device(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("ingest", "info", "json")
    logging.getLogger("devices.supervisor").warning("offline: %s", "EOF", extra={"room": "room-1", "device": "oxi-1"})
    logging.getLogger("x").debug("not shown at info")
    line = capsys.readouterr().err.strip()
    obj = json.loads(line)
    assert obj["role"] == "ingest" and obj["level"] == "warning" and obj["msg"] == "offline: EOF"
    assert obj["room"] == "room-1" and obj["device"] == "oxi-1"


def test_text_lines(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("alerts", "debug", "text")
    logging.getLogger("monitor.alarms").info("raised", extra={"room": "room-2"})
    logging.getLogger("plain").info("no context")
    err = capsys.readouterr().err.splitlines()
    assert "INFO alerts monitor.alarms room=room-2: raised" in err[0]
    assert err[1].endswith("INFO alerts plain: no context")
