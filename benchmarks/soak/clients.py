"""Clients that behave as n8n and Twilio do: retry on 5xx and timeouts, with backoff,
and keep score of every attempt."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx

RETRYABLE = frozenset({429, 500, 502, 503, 504})


@dataclass
class EndpointStats:
    attempts: int = 0
    retries: int = 0
    server_errors: int = 0  # 5xx answers
    transport_errors: int = 0  # reset, refused, timed out
    unrecovered: int = 0  # gave up with no success
    latencies: list[float] = field(default_factory=list)


class Scoreboard:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.endpoints: dict[str, EndpointStats] = defaultdict(EndpointStats)
        self.unexpected: list[str] = []  # answers the ground truth says are wrong

    def attempt(self, endpoint: str, seconds: float, outcome: int | None) -> None:
        with self._lock:
            stats = self.endpoints[endpoint]
            stats.attempts += 1
            stats.latencies.append(seconds)
            if outcome is None:
                stats.transport_errors += 1
            elif outcome >= 500:
                stats.server_errors += 1
            if outcome == 500:  # the faults make 503s and resets; a 500 is a defect
                self.unexpected.append(f"{endpoint}: 500 Internal Server Error")

    def retried(self, endpoint: str) -> None:
        with self._lock:
            self.endpoints[endpoint].retries += 1

    def gave_up(self, endpoint: str) -> None:
        with self._lock:
            self.endpoints[endpoint].unrecovered += 1

    def wrong(self, what: str) -> None:
        with self._lock:
            self.unexpected.append(what)


class RetryingClient:
    """One per thread. Retries as n8n's "retry on fail" and Twilio's callback retries do:
    on a 5xx, 429, a reset or a timeout; up to `attempts` tries, with jittered backoff."""

    def __init__(
        self, scoreboard: Scoreboard, *, attempts: int = 10, timeout: float = 30.0
    ) -> None:
        self._scoreboard = scoreboard
        self._attempts = attempts
        self._http = httpx.Client(timeout=timeout)
        self._random = random.Random()

    def request(self, endpoint: str, method: str, url: str, **kwargs: Any) -> httpx.Response | None:
        """The first answer that is not worth retrying, or None after the last try."""
        for attempt in range(self._attempts):
            if attempt:
                self._scoreboard.retried(endpoint)
                time.sleep(min(5.0, 0.2 * 2**attempt) * self._random.uniform(0.5, 1.0))
            started = time.perf_counter()
            try:
                response = self._http.request(method, url, **kwargs)
            except httpx.TransportError:
                self._scoreboard.attempt(endpoint, time.perf_counter() - started, None)
                continue
            self._scoreboard.attempt(endpoint, time.perf_counter() - started, response.status_code)
            if response.status_code not in RETRYABLE:
                return response
        self._scoreboard.gave_up(endpoint)
        return None

    def close(self) -> None:
        self._http.close()
