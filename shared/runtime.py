"""The composition root: the settings, and every client the entry points use.

Each client is built by its factory (a function of the Services, beside the code it
serves: ``shared.db.database``, ``shared.auth.jwks``, the archive bucket, retention's
sessions, reconcile's Twilio clients) on first use, and kept for the life of the
process: a Lambda environment, a worker. Nothing is built at import, so a cold start
pays only for what its first request uses. Tests build their own Services and hand in
the clients they want (``provided``); nothing else caches a client.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from shared import logs
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.db import Database

Client = TypeVar("Client")
Factory = Callable[["Services"], Client]


@dataclass
class Services:
    settings: Settings
    provided: dict[Callable[[Services], Any], Any] = field(default_factory=dict)
    """Clients already built (or handed in), by the factory that builds them."""
    # Reentrant: a factory may ask for another client (retention's for the bucket).
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def get(self, factory: Factory[Client]) -> Client:
        """The client this factory builds: built on first use, the same one after."""
        with self._lock:
            if factory not in self.provided:
                self.provided[factory] = factory(self)
            return cast("Client", self.provided[factory])

    @property
    def db(self) -> Database:
        from shared.db import database

        return self.get(database)


_current: Services | None = None
_lock = threading.Lock()


def services() -> Services:
    """The process's Services, from the environment on first use."""
    global _current
    with _lock:
        if _current is None:
            settings = Settings.load()
            logs.configure(settings.log_level)
            _current = Services(settings)
        return _current


def use(replacement: Services | None) -> None:
    """Install (or with None, forget) the services entry points use."""
    global _current
    with _lock:
        _current = replacement
