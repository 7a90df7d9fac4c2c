"""The composition root: each client built once, on first use; handed-in clients used."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from shared.db import database
from shared.runtime import Services
from shared.settings import Settings

SETTINGS = Settings(database_url="postgresql://nobody@127.0.0.1:1/none")  # type: ignore[arg-type]


def test_a_client_is_built_on_first_use_and_then_kept() -> None:
    built: list[object] = []

    def factory(services: Services) -> object:
        client = object()
        built.append(client)
        return client

    services = Services(SETTINGS)
    assert built == []
    first = services.get(factory)
    assert services.get(factory) is first
    assert built == [first]


def test_threads_asking_at_once_share_one_client() -> None:
    started = threading.Barrier(8)
    count = [0]

    def slow_factory(services: Services) -> int:
        count[0] += 1
        return count[0]

    services = Services(SETTINGS)

    def ask(_: int) -> int:
        started.wait()
        return services.get(slow_factory)

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(ask, range(8))) == {1}


def test_a_factory_may_ask_for_another_client() -> None:
    def bucket(services: Services) -> str:
        return "bucket"

    def context(services: Services) -> tuple[str, str]:
        return ("context", services.get(bucket))

    assert Services(SETTINGS).get(context) == ("context", "bucket")


def test_a_handed_in_client_is_used_and_nothing_is_built() -> None:
    stand_in = object()
    services = Services(SETTINGS, provided={database: stand_in})
    assert services.db is stand_in
