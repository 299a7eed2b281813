"""`vitalwatch archive backup -o FILE` and `vitalwatch archive purge` (archive maintenance).

backup: a consistent SQLite copy of the archive (SQLite or PostgreSQL source), usable as an
archive itself. purge: deletes sessions that ended more than archive.retention_days ago
(and audit entries older than that), after archiving any pending audit entries.
Both write the audit log.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import sqlalchemy as sa

from monitor.accounts import audit
from monitor.model.clock import now_ms
from monitor.model.config import Config
from monitor.model.redact import redact_text, redact_url
from monitor.sessions import archive
from monitor.store.redis_conn import REDIS_DOWN, connect
from monitor.store.runtime import RuntimeFailure, resolve

DAY_MS = 86_400_000


def _audit(cfg: Config, user: str, action: str, **details: object) -> None:
    try:
        ep = resolve(cfg)
        client = connect(ep.redis_url, timeout_s=2.0)
        audit.record(client, ep.keys, user, action, **details)
        archive.archive_audit(client, ep.keys, archive.open_archive(cfg.archive.url))
        client.close()
    except (RuntimeFailure, *REDIS_DOWN) as e:
        print(f"warning: audit entry not written to Redis ({e}); action {action} {details}", file=sys.stderr)


def run(args: argparse.Namespace, cfg: Config) -> int:
    """Dispatch `archive backup|purge`."""
    try:
        arch = archive.open_archive(cfg.archive.url)
        if args.action == "backup":
            counts = archive.backup(arch, Path(args.output))
            print(f"backup written to {args.output}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
            _audit(cfg, args.user, "archive.backup", file=args.output, **counts)
            return 0
        if args.action == "purge":
            cutoff = now_ms() - cfg.archive.retention_days * DAY_MS
            out = archive.purge(arch, cutoff)
            print(f"purged data older than {cfg.archive.retention_days} days: "
                  + ", ".join(f"{k} {v}" for k, v in out.items()))
            _audit(cfg, args.user, "archive.purge", retention_days=cfg.archive.retention_days, **out)
            return 0
    except sa.exc.SQLAlchemyError as e:
        print(f"vitalwatch archive {args.action}: archive failed ({redact_url(cfg.archive.url)}): "
              f"{redact_text(str(e))}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"vitalwatch archive {args.action}: {e}", file=sys.stderr)
        return 1
    print(f"vitalwatch archive: unknown action {args.action!r}", file=sys.stderr)
    return 2
