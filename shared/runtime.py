"""What an entry point needs at run time, built once, lazily, on first use.

Nothing is built at import: a cold start pays only for what the first request uses.
Tests hand in their own with ``use``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shared import logs
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.db import Database


@dataclass
class Services:
    settings: Settings
    _db: Database | None = None
    _db_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def db(self) -> Database:
        with self._db_lock:
            if self._db is None:
                from shared.db import database_from_settings

                self._db = database_from_settings(self.settings)
            return self._db


_current: Services | None = None
_lock = threading.Lock()


def services() -> Services:
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
