"""The composition root: the settings, and every client the entry points use.

Each client is built by its factory (a function of the Services, beside the code it
serves: ``shared.db.database``, ``shared.auth.jwks``, the archive bucket, retention's
sessions, reconcile's Twilio clients) on first use, and kept for the life of the
process: a Lambda environment, a worker. Nothing is built at import, so a cold start
pays only for what its first request uses. Tests build their own Services and hand in
the clients they want (``provided``); nothing else caches a client.

The settings come from the environment and, in AWS, from the secrets it names
(shared.secrets), read again when they are older than SECRETS_MAX_AGE_SECONDS, or at
once when a credential is refused (``Services.renew``): when they changed, the process
gets new Services and the old clients are closed. No redeploy follows a rotation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar, cast

from shared import logs, secrets
from shared.errors import ConfigurationError
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.db import Database

log = logging.getLogger("sms.runtime")

Client = TypeVar("Client")
Factory = Callable[["Services"], Client]

# How old the secrets a process works with may grow: a rotated secret reaches every
# environment within this long, refused credential or not.
SECRETS_MAX_AGE_SECONDS = 300.0
# How often a refused credential may make a process read its secrets again: anyone can
# send a badly signed callback, and each read past the extension's cache is a call to
# Secrets Manager.
RENEW_INTERVAL_SECONDS = 30.0


def _nothing_to_renew() -> Services | None:
    return None


@dataclass
class Services:
    settings: Settings
    provided: dict[Callable[[Services], Any], Any] = field(default_factory=dict)
    """Clients already built (or handed in), by the factory that builds them."""
    # Reentrant: a factory may ask for another client (retention's for the bucket).
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    renew: Callable[[], Services | None] = field(default=_nothing_to_renew, repr=False)
    """After a refused credential: read the secrets again, past every cache (at most
    every RENEW_INTERVAL_SECONDS), and return the process's new Services if they
    changed; None if there is nothing newer to try."""

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

    def close(self) -> None:
        """Close every client that holds something open (the database's pool)."""
        with self._lock:
            for client in self.provided.values():
                if callable(close := getattr(client, "close", None)):
                    close()


@dataclass
class _Process:
    """What the process's Services were built from, and when."""

    services: Services
    environment: dict[str, str]
    read_at: float
    renewed_at: float = float("-inf")


_process: _Process | None = None
_lock = threading.RLock()
# The last first read of the secrets that failed, and when: every request asks for the
# services before any key or signature is checked, so a failing read is tried again at
# most every RENEW_INTERVAL_SECONDS, not once per request.
_failed_read: tuple[float, ConfigurationError] | None = None


def services() -> Services:
    """The process's Services: built on first use, built again when its secrets change."""
    global _process, _failed_read
    with _lock:
        if _process is None:
            if _failed_read and time.monotonic() - _failed_read[0] < RENEW_INTERVAL_SECONDS:
                raise _failed_read[1]
            try:
                environment = secrets.environment_with_secrets()
            except ConfigurationError as exc:
                _failed_read = (time.monotonic(), exc)
                raise
            _failed_read = None
            _process = _Process(_build(environment), environment, time.monotonic())
        elif _reads_secrets() and time.monotonic() - _process.read_at > SECRETS_MAX_AGE_SECONDS:
            try:
                _reload(fresh=False)
            except ConfigurationError as exc:
                # The values in hand worked until now: keep them, and try again later.
                log.warning("secrets not read again: %s", exc)
                _process.read_at = time.monotonic()
        return _process.services


def use(replacement: Services | None) -> None:
    """Install (or with None, forget) the services entry points use."""
    global _process, _failed_read
    with _lock:
        _process = None if replacement is None else _Process(replacement, {}, time.monotonic())
        _failed_read = None


def _build(environment: dict[str, str]) -> Services:
    settings = Settings.load(environment)
    logs.configure(settings.log_level)
    renew = _renew if secrets.SECRET_IDS in environment else _nothing_to_renew
    return Services(settings, renew=renew)


def _reads_secrets() -> bool:
    return _process is not None and secrets.SECRET_IDS in _process.environment


def _reload(*, fresh: bool) -> bool:
    """Read the secrets; when they changed, new Services replace the old, closed."""
    assert _process is not None
    environment = secrets.environment_with_secrets(fresh=fresh)
    _process.read_at = time.monotonic()
    if environment == _process.environment:
        return False
    old = _process.services
    _process.services, _process.environment = _build(environment), environment
    log.info("secrets changed: the clients are built again")
    old.close()
    return True


def _renew() -> Services | None:
    with _lock:
        if _process is None or not _reads_secrets():
            return None
        now = time.monotonic()
        if now - _process.renewed_at < RENEW_INTERVAL_SECONDS:
            return None
        _process.renewed_at = now
        try:
            changed = _reload(fresh=True)
        except ConfigurationError as exc:
            log.error("secrets could not be read again: %s", exc)
            return None
        return _process.services if changed else None
