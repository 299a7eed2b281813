"""Password hashing (argon2id) and the bounded pool that runs the checks.

A password check costs ~20 ms of one core by design. Run on the request-serving threads, a
flood of sign-in attempts would take every thread and starve the nurses' screens; so the
dashboard runs checks on `HashPool`: a fixed number of worker threads (argon2-cffi releases
the GIL while hashing) and a bounded queue. When the queue is full a new attempt is refused
at once ("busy, try again") instead of waiting: the cost of a flood stays one or two cores'
worth of hashing, whatever its size.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

T = TypeVar("T")

# OWASP's argon2id baseline (19 MiB, t=2, p=1): ~20 ms a check here, so logins stay quick
# on a shared 2-core box while an offline guess stays expensive.
HASHER = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1)
# Verified against when the user does not exist, so timing does not reveal who exists.
DUMMY_HASH = HASHER.hash("not-a-real-password")


def hash_password(password: str) -> str:
    """An argon2id hash of `password` (random salt)."""
    return HASHER.hash(password)


def verify(pw_hash: str | None, password: str) -> bool:
    """True when `password` matches `pw_hash`; a missing hash costs the same as a real check."""
    try:
        return HASHER.verify(pw_hash or DUMMY_HASH, password or "") and pw_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(pw_hash: str) -> bool:
    """True when the stored hash uses weaker parameters than HASHER's."""
    try:
        return HASHER.check_needs_rehash(pw_hash)
    except InvalidHashError:
        return False


class HashPool:
    """`workers` threads for password checks and at most `queue` checks waiting for them."""

    def __init__(self, workers: int = 1, queue: int = 16) -> None:
        self.workers, self.queue = workers, queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pwcheck")
        self._slots = threading.BoundedSemaphore(workers + queue)
        self.refused = 0  # checks refused because the queue was full (for /metrics and tests)

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T] | None:
        """Run `fn(*args)` on the pool; None (nothing queued) when the queue is full."""
        if not self._slots.acquire(blocking=False):
            self.refused += 1
            return None
        try:
            fut = self._executor.submit(fn, *args)
        except RuntimeError:  # shut down
            self._slots.release()
            return None
        fut.add_done_callback(lambda _f: self._slots.release())
        return fut

    def shutdown(self) -> None:
        """Stop the workers (queued checks still run)."""
        self._executor.shutdown(wait=False)
