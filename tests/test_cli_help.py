"""`vitalwatch … --help` lists every action a subcommand has, and the CLI accepts what docs/cli.md documents."""

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
