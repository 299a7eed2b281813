"""`vitalwatch user add|passwd|role|disable|enable|unlock|token|tokens|revoke|list` — accounts.

Passwords come from `$VITALWATCH_PASSWORD` or a prompt (read here, at the CLI edge only).
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from collections.abc import Callable, Mapping

import redis

from monitor.accounts import tokens, users
from monitor.model.clock import now_ms
from monitor.model.config import Config
from monitor.model.keys import Keys
from monitor.model.redact import redact_text, redact_url
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
    except BrokenPipeError:
        raise  # our stdout was closed (`… | head`): not Redis; main() ends quietly
    except REDIS_DOWN as e:
        print(f"vitalwatch user {args.action}: Redis unreachable at {redact_url(redis_url)}: "
              f"{redact_text(str(e))}",
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
        scopes = ",".join(args.scope) if args.scope else None
        token = tokens.issue_token(client, keys, args.name, actor=actor, scopes=scopes, days=args.days,
                                   label=args.label)
        tid = tokens.token_digest(token)[:tokens.ID_LEN]
        print(f"API token {tid} for {args.name} (shown once; send as 'Authorization: Bearer <token>'):")
        print(token)
    elif action == "tokens":
        print(f"{'id':<13} {'user':<16} {'scopes':<26} {'expires (UTC)':<17} {'state':<8} label")
        for t in tokens.list_tokens(client, keys, args.name):
            exp = time.strftime("%Y-%m-%d %H:%M", time.gmtime(t["expires_ms"] / 1000)) if t["expires_ms"] else "never"
            print(f"{t['id']:<13} {t['name']:<16} {','.join(t['scopes']) or '-':<26} {exp:<17} {t['state']:<8} "
                  f"{t['label']}")
    elif action == "revoke":
        if args.token:
            found = [t for t in tokens.list_tokens(client, keys, args.name) if t["id"].startswith(args.token.lower())]
            if len(found) != 1 or not tokens.revoke_token(client, keys, found[0]["id"], actor=actor):
                print(f"vitalwatch user revoke: {args.name} has no token {args.token!r}", file=sys.stderr)
                return EXIT_USAGE
            print(f"revoked token {found[0]['id']} of {args.name}")
        else:
            print(f"revoked {tokens.revoke_tokens(client, keys, args.name, actor=actor)} token(s) of {args.name}")
    elif action == "list":
        rows = users.list_users(client, keys)
        print(f"{'name':<20} {'role':<9} state")
        for r in rows:
            state = "disabled" if r.get("disabled") else "enabled"
            if int(r.get("locked_until_ms") or 0) > now_ms():
                state += ", signing in backs off"
            if r.get("failures"):
                state += f", {r['failures']} failed sign-in(s)"
            print(f"{r['name']:<20} {r['role']:<9} {state}")
    else:
        print(f"vitalwatch user: unknown action {action!r}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
