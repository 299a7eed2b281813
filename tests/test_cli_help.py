"""The command line as a user meets it: `--help` lists every action, the documented options parse, and a closed stdout is not a Redis outage."""

from __future__ import annotations

import argparse

import pytest

from monitor.app.cli import build_parser


def _action_groups(parser: argparse.ArgumentParser) -> dict[str, argparse._SubParsersAction]:
    """Every subcommand that has actions of its own (session, user, alert, ...), by name."""
    top = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name, sub in top.choices.items():
        for a in sub._actions:
            if isinstance(a, argparse._SubParsersAction):
                out[name] = a
    return out


def test_every_action_is_listed_in_its_subcommand_help() -> None:
    """With metavar="ACTION", argparse lists only the actions that have a help text: an
    action without one (session end, alert ack, user add, ...) is invisible in `--help`."""
    parser = build_parser()
    groups = _action_groups(parser)
    assert {"session", "user", "alert", "archive", "outbox"} <= set(groups)
    top = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = []
    for command, group in groups.items():
        help_text = top.choices[command].format_help()
        for action in group.choices:
            if f"\n    {action} " not in help_text and f"\n    {action}\n" not in help_text:
                missing.append(f"{command} {action}")
    assert not missing, f"not listed in --help: {missing}"


@pytest.mark.parametrize("dest", ["hl7", "fhir", "pager-mqtt", "pager-webhook"])
def test_outbox_resend_accepts_every_documented_destination(dest: str) -> None:
    """docs/cli.md: `outbox resend --dest hl7|fhir|pager-mqtt|pager-webhook MESSAGE_ID` — the
    pages to MQTT and the webhook are outboxes too (`outbox list` shows them)."""
    args = build_parser().parse_args(["outbox", "resend", "--dest", dest, "1-0"])
    assert args.dest == dest


@pytest.mark.parametrize("argv", [["session", "list"], ["outbox", "list"], ["user", "list"]])
def test_a_closed_stdout_is_not_reported_as_redis_unreachable(argv, rclient, clinic_id, redis_url, tmp_path):
    """`vitalwatch session list | head`: the reader goes away. A BrokenPipeError is an OSError,
    which the commands' Redis handlers caught: they printed "Redis unreachable" (with Redis up)."""
    import os
    import subprocess
    import sys

    from tests.configs import config_mapping, room_entry, serial_device, write_config

    conf = write_config(tmp_path / "vw.toml", config_mapping(
        {"id": clinic_id}, redis_url=redis_url, mqtt_url="mqtt://127.0.0.1:1883",
        archive_url=f"sqlite:///{tmp_path / 'archive.db'}", rooms=[room_entry("room-1", serial_device("oxi-1"))]))
    r, w = os.pipe()
    os.close(r)  # nobody reads: the first write gets EPIPE
    try:
        proc = subprocess.run([sys.executable, "-m", "monitor", *argv, "-c", str(conf)], stdout=w,
                              stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(w)
    err = proc.stderr.decode()
    assert "Redis unreachable" not in err and "Traceback" not in err, err
    assert proc.returncode == 1
