"""`vitalwatch user add|passwd|role|disable|enable|token|list` — account management.

Passwords come from `$VITALWATCH_PASSWORD` or a prompt (read here, at the CLI edge only).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Callable, Mapping

import redis

from monitor.accounts import users
from monitor.model.clock import now_ms
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.store.redis_conn import REDIS_DOWN, connect
from monitor.store.runtime import redis_url_for

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def read_password(env: Mapping[str, str], prompt: Callable[[str], str] = getpass.getpass) -> str:
    """$VITALWATCH_PASSWORD, else asked twice on the terminal."""
    if env.get("VITALWATCH_PASSWORD"):
        return env["VITALWATCH_PASSWORD"]
    first = prompt("Password: ")
    if prompt("Repeat password: ") != first:
        raise users.UserError("passwords do not match")
    return first


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Dispatch one `vitalwatch user` action; exit 0 ok, 2 refused input, 1 Redis failure."""
    redis_url = redis_url_for(cfg)
    client = connect(redis_url)
    try:
        return _dispatch(args, client, Keys(cfg.clinic.id), os.environ)
    except users.UserError as e:
        print(f"vitalwatch user {args.action}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except REDIS_DOWN as e:
        print(f"vitalwatch user {args.action}: Redis unreachable at {redis_url}: {e}",
              file=sys.stderr)
        return EXIT_FAIL
    finally:
        client.close()


def _dispatch(args: argparse.Namespace, client: redis.Redis, keys, env: Mapping[str, str]) -> int:  # noqa: ANN001
    actor = getattr(args, "user", None) or "unknown"
    action = args.action
    if action == "add":
        rec = users.create_user(client, keys, args.name, args.role, read_password(env), actor=actor)
        print(f"added {rec['name']} ({rec['role']})")
    elif action == "passwd":
        users.set_password(client, keys, args.name, read_password(env), actor=actor)
        print(f"password changed for {args.name}")
    elif action == "role":
        users.set_role(client, keys, args.name, args.role, actor=actor)
        print(f"{args.name} is now {args.role}")
    elif action in ("disable", "enable"):
        users.set_disabled(client, keys, args.name, action == "disable", actor=actor)
        print(f"{args.name} {action}d")
    elif action == "unlock":
        was = users.unlock(client, keys, args.name, actor=actor)
        print(f"{args.name} unlocked" if was else f"{args.name} was not locked")
    elif action == "token":
        token = users.issue_token(client, keys, args.name, actor=actor)
        print(f"API token for {args.name} (shown once; send as 'Authorization: Bearer <token>'):")
        print(token)
    elif action == "list":
        rows = users.list_users(client, keys)
        print(f"{'name':<20} {'role':<9} state")
        for r in rows:
            state = "disabled" if r.get("disabled") else "enabled"
            if int(r.get("locked_until_ms") or 0) > now_ms():
                state += ", locked out"
            print(f"{r['name']:<20} {r['role']:<9} {state}")
    else:
        print(f"vitalwatch user: unknown action {action!r}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
