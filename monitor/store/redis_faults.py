"""What a Redis error means for a writer: wait and retry, or refuse this one entry.

Three classes (the writer's reaction in brackets):
- `unreachable` / `timeout`: no answer, or the connection broke — the outcome of what was in
  flight is unknown [keep the entries, reconnect with backoff, check identities on retry];
- `refused`: Redis answered with an error that concerns the server, not the entry — out of
  memory (OOM), read-only replica (READONLY), cannot persist (MISCONF), loading (LOADING),
  a script blocks it (BUSY), credentials (NOAUTH, WRONGPASS), ACL (NOPERM), too few
  replicas (NOREPLICAS), cluster trouble [keep the entries, retry with backoff];
- `entry`: an error about this entry only [send the entry to `rejects` with the reason, go
  on]. Only an error Redis returned for one command inside an executed transaction counts:
  the key holds another type (WRONGTYPE) or another per-command error, while its neighbours
  in the same EXEC were applied. An error for the whole batch (raised, or EXECABORT because
  a command was refused when queued, e.g. a syntax Redis does not know) is `refused`:
  holding entries while the cause is shown is safer than diverting every reading to
  `rejects` on an error that would hit them all.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass

import redis
from redis.sentinel import MasterNotFoundError

UNREACHABLE, TIMEOUT, REFUSED, ENTRY = "unreachable", "timeout", "refused", "entry"

# error code (first word of the reply) → (StorageState code, words for people)
_REFUSED: dict[str, tuple[str, str]] = {
    "OOM": ("oom", "Redis out of memory"),
    "READONLY": ("readonly", "Redis is a read-only replica"),
    "MISCONF": ("misconf", "Redis cannot persist to disk and refuses writes"),
    "LOADING": ("loading", "Redis is loading its dataset"),
    "BUSY": ("busy", "Redis is blocked by a long-running script"),
    "NOAUTH": ("auth", "Redis refused our credentials"),
    "WRONGPASS": ("auth", "Redis refused our credentials"),
    "NOPERM": ("noperm", "Redis user lacks permission to write"),
    "NOREPLICAS": ("replicas", "Redis has too few replicas to accept writes"),
    "MASTERDOWN": ("replicas", "Redis replica lost its master"),
    "CLUSTERDOWN": ("cluster", "Redis cluster is down"),
    "TRYAGAIN": ("cluster", "Redis cluster is resharding"),
    # redirections the cluster client did not follow (e.g. inside a transaction): the slot
    # moves or moved; retrying sends the batch to its new master
    "MOVED": ("cluster", "Redis cluster slot moved"),
    "ASK": ("cluster", "Redis cluster slot is moving"),
    "CROSSSLOT": ("cluster", "Redis cluster refuses keys of different slots in one command"),
    "UNBLOCKED": ("readonly", "Redis changed role (failover)"),
    "EXECABORT": ("refused", "Redis aborted the transaction"),
}
REPLY_WORDS: dict[str, str] = {code: words for code, (_state, words) in _REFUSED.items()}
"""Error code → what it means, in the words the writer's causes use (role loops say the same)."""
# redis-py prefixes pipeline errors with where they happened: keep only Redis's own words
_ANNOTATION = re.compile(r"^Command # \d+ \(.*?\) of pipeline caused error: ", re.DOTALL)
_ARGS_REPR = re.compile(r"^\((?:'(.*)'|\"(.*)\"),\)$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Fault:
    """A classified Redis error: `kind` (unreachable|timeout|refused|entry), `code` (the
    StorageState code), `cause` (words for people, with Redis's reply)."""

    kind: str
    code: str
    cause: str


def reply_text(exc: BaseException) -> str:
    """Redis's error reply (or the exception's text) without redis-py's pipeline prefix."""
    text = _ANNOTATION.sub("", str(exc.args[0]) if exc.args else str(exc)).strip()
    # redis.asyncio's pipeline puts the reply's args tuple into its prefix: "('BUSY …',)"
    wrapped = _ARGS_REPR.match(text)
    if wrapped is None:
        return text
    return wrapped.group(1) if wrapped.group(1) is not None else wrapped.group(2)


# redis-py strips the code from replies it maps to a class of its own
_CLASS_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (redis.exceptions.OutOfMemoryError, "OOM"),
    (redis.exceptions.ReadOnlyError, "READONLY"),
    (redis.exceptions.NoPermissionError, "NOPERM"),
    (redis.exceptions.ExecAbortError, "EXECABORT"),
    (redis.exceptions.MasterDownError, "MASTERDOWN"),
    (redis.exceptions.ClusterDownError, "CLUSTERDOWN"),
    (redis.exceptions.TryAgainError, "TRYAGAIN"),
    (redis.exceptions.MovedError, "MOVED"),
    (redis.exceptions.AskError, "ASK"),
    (redis.exceptions.ClusterCrossSlotError, "CROSSSLOT"),
)

REDIS_FAILURES: tuple[type[BaseException], ...] = (redis.RedisError, redis.exceptions.RedisClusterException)
"""Every error a Redis client raises: redis-py's cluster client also raises a few that are not
RedisError (no node serves a slot yet after a master's loss: SlotNotCoveredError)."""


def error_code(exc: BaseException) -> str:
    """The first word of an error reply ("OOM", "READONLY", …), or "" if none is known."""
    status = getattr(exc, "status_code", None)
    if status:
        return str(status)
    for cls, code in _CLASS_CODES:
        if isinstance(exc, cls):
            return code
    text = reply_text(exc)
    word = text.split(" ", 1)[0] if text else ""
    return word if word.isupper() and word.isalpha() else ""


def classify(exc: BaseException, *, in_exec: bool = False) -> Fault:
    """Classify an exception raised by a Redis command or pipeline, or (`in_exec`) returned
    for one command in the result of an executed transaction."""
    text = reply_text(exc)[:300]
    if isinstance(exc, redis.AuthenticationError):
        return Fault(REFUSED, "auth", f"Redis refused our credentials ({text})")
    if isinstance(exc, redis.BusyLoadingError):
        return Fault(REFUSED, "loading", f"Redis is loading its dataset ({text})")
    if isinstance(exc, MasterNotFoundError) or (isinstance(exc, redis.ConnectionError)
                                                and text.startswith("No master found")):
        return Fault(UNREACHABLE, "unreachable", f"Redis unreachable: no master (Sentinel failover?) ({text})")
    if isinstance(exc, redis.ConnectionError) and "previous master is now a slave" in text:
        return Fault(UNREACHABLE, "unreachable", "Redis unreachable: the master was demoted "
                     "(Sentinel failover); finding the new one")
    if isinstance(exc, (redis.TimeoutError, socket.timeout, TimeoutError)):
        return Fault(TIMEOUT, "timeout", f"Redis not answering in time ({text or type(exc).__name__})")
    if isinstance(exc, (redis.ConnectionError, ConnectionError, OSError)):
        return Fault(UNREACHABLE, "unreachable", f"Redis unreachable ({text or type(exc).__name__})")
    if isinstance(exc, redis.ResponseError):
        code = error_code(exc)
        if code in _REFUSED:
            state_code, words = _REFUSED[code]
            detail = text[len(code):].strip() if text.startswith(code) else text
            return Fault(REFUSED, state_code, f"{words} ({code} {detail})".replace(" )", ")"))
        if in_exec:
            return Fault(ENTRY, "refused", text)
        return Fault(REFUSED, "refused", f"Redis refused the write ({text})")
    if isinstance(exc, redis.RedisError):
        return Fault(UNREACHABLE, "unreachable", f"Redis error ({type(exc).__name__}: {text})")
    if isinstance(exc, redis.exceptions.RedisClusterException):  # e.g. no node serves the slot yet
        return Fault(UNREACHABLE, "unreachable", f"Redis cluster unreachable ({type(exc).__name__}: {text})")
    return Fault(REFUSED, "internal", f"unexpected writer error ({type(exc).__name__}: {text})")


def outcome_unknown(fault: Fault) -> bool:
    """True when what was sent may or may not have been applied (connection lost mid-way)."""
    return fault.kind in (UNREACHABLE, TIMEOUT) or fault.code == "internal"
