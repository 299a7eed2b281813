"""What page modules receive from the app: the signed-in user, the config, the data reader.

Kept apart from dashboard/app.py so a page module imports these without importing the app.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from monitor.accounts.users import has_role
from monitor.model.clock import Clock, now_ms
from monitor.model.config import Config
from monitor.model.keys import Keys

if TYPE_CHECKING:
    from dashboard.data import Data


@dataclass(frozen=True, slots=True)
class User:
    """The signed-in user of one request (from the session cookie or an API token)."""

    name: str
    role: str
    via: str = "cookie"  # "cookie" | "token"
    session_id: str = ""  # sha256 of the session cookie (a cookie sign-in), never the cookie
    token: str = ""  # sha256 of the API token (a token sign-in)
    scopes: frozenset[str] | None = None  # a token's scopes; None: a person's sign-in (all)
    epoch: int = 0  # the account's epoch the sign-in belongs to

    def can(self, min_role: str) -> bool:
        """True when this user's role is at least `min_role`."""
        return has_role(self.role, min_role)

    def allows(self, scope: str) -> bool:
        """True when a token sign-in carries `scope` (a person's sign-in carries every scope)."""
        return self.scopes is None or scope in self.scopes


# Set by the auth middleware for every request; Dash runs callbacks in a copy of this context.
CURRENT_USER: contextvars.ContextVar[User | None] = contextvars.ContextVar("vw_user", default=None)


def current_user() -> User | None:
    """The user of the request being served (None outside a request)."""
    return CURRENT_USER.get()


@dataclass
class AppContext:
    """Shared by all pages for the app's lifetime (given to `register_callbacks`)."""

    cfg: Config
    keys: Keys
    data: Data
    clock_ms: Clock = now_ms
    current_user: Callable[[], User | None] = current_user


@dataclass
class PageContext:
    """One page request (given to `layout`)."""

    app: AppContext
    user: User | None
    now_ms: int
    query: dict[str, str] = field(default_factory=dict)

    @property
    def cfg(self) -> Config:
        """The validated config."""
        return self.app.cfg

    @property
    def data(self) -> Data:
        """The Redis reader (dashboard/data.py)."""
        return self.app.data

    @property
    def keys(self) -> Keys:
        """Key names of this clinic."""
        return self.app.keys
