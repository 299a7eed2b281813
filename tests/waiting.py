"""The one way tests wait: poll a condition until it holds, or fail saying what and what was seen.

A wait is never a timing assertion: `timeout_s` only bounds how long a broken build takes to
fail, so it is generous. Tests wait for the state they then assert, never sleep before a count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(pred: Callable[[], T], timeout_s: float = 30.0, what: str = "condition", *,
             ignoring: tuple[type[BaseException], ...] = (), interval_s: float = 0.05) -> T:
    """Poll `pred()` until it returns something truthy and return that value.

    Exceptions of the types in `ignoring` count as "not yet" (a page being redrawn, a server
    not yet listening). On timeout raise AssertionError naming `what` and the last value (or
    exception) `pred` gave, so the failure says what was waited for and how far it got.
    """
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            last = pred()
        except ignoring as e:
            last = e
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}; last seen: {last!r}")
        time.sleep(interval_s)
