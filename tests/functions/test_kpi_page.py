"""The KPI page (web/) in a real browser: Debian's chromium driven by Playwright, against
the metrics function served over HTTP on real Postgres, as a signed-in user of one
client. Every number the page shows is held to the endpoint's JSON for the same user
and period. Screenshots go to build/screenshots/."""

from __future__ import annotations

import json
import shutil
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jwt
import psycopg
import pytest

from shared import runtime
from shared.db import PostgresDatabase, database
from shared.settings import Settings
from tests.support.builders import JWT_SECRET, Tenants, forget_every_sms, insert_sms
from tests.support.served import serve
from tools import kpi_page
from tools.loopback import LoopbackServer

SCREENSHOTS = Path(__file__).resolve().parents[2] / "build" / "screenshots"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    assert executable, (
        "Debian's chromium is needed: make test installs it (apt-get install chromium)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def metrics_url() -> Iterator[str]:
    for function in serve("metrics"):
        yield function.url


@pytest.fixture(scope="module")
def page_url(metrics_url: str) -> Iterator[str]:
    with LoopbackServer(kpi_page.app(metrics_url)) as server:
        yield server.url + "/"


@pytest.fixture(autouse=True)
def services(database_url: str, shared_db: PostgresDatabase, page_url: str) -> Iterator[None]:
    settings = Settings(
        database_url=database_url,  # type: ignore[arg-type]
        supabase_jwt_secret=JWT_SECRET,  # type: ignore[arg-type]
        cors_allowed_origins=page_url.rstrip("/"),  # type: ignore[arg-type]
    )
    runtime.use(runtime.Services(settings, provided={database: shared_db}))
    yield
    runtime.use(None)


@pytest.fixture
def recent(clean: psycopg.Connection, tenants: Tenants) -> Tenants:
    """Three weeks of SMS for both clients, as the default period (30 days) sees them."""
    forget_every_sms(clean)
    now = datetime.now(UTC).replace(microsecond=0)
    kinds = ["transactional", "marketing", "appointment_reminder"]
    for day in range(21):
        sent = now - timedelta(days=day, hours=1)
        for n in range(1 + day % 3):
            status = ("delivered", "failed", "sent")[(day + n) % 3]
            extra: dict[str, Any] = {}
            if status == "delivered":
                extra["delivered_at"] = sent + timedelta(seconds=3 + n)
            if status == "failed":
                extra |= {"failed_at": sent + timedelta(seconds=5), "failure_reason": "Unreachable"}
            insert_sms(clean, tenants.deployments_a[n % len(tenants.deployments_a)],
                       sent_at=sent, status=status, message_type=kinds[(day + n) % 3],
                       phone_number=f"+3361234{day:02d}{n:02d}", provider_cost="0.0512",
                       voipia_margin="0.0200", **extra)  # fmt: skip
    # Another client's SMS and its deployment's name, which the viewer must never see.
    clean.execute("UPDATE public.agent_deployments SET name = 'B secret' WHERE id = %s",
                  (tenants.deployment_b,))  # fmt: skip
    insert_sms(clean, tenants.deployment_b, sent_at=now - timedelta(days=2))
    return tenants


def token(user: uuid.UUID, *, expires_in: int = 3600) -> str:
    now = int(time.time())
    claims = {"sub": str(user), "role": "authenticated", "aud": "authenticated",
              "iat": now - 10, "exp": now + expires_in}  # fmt: skip
    return jwt.encode(claims, JWT_SECRET, algorithm="HS256")


def open_page(chromium: Any, page_url: str, bearer: str, *, width: int = 1280) -> tuple[Any, Any]:
    """The page opened with a token in its fragment; the metrics answer it loaded."""
    context = chromium.new_context(viewport={"width": width, "height": 900}, locale="fr-FR")
    page = context.new_page()
    answers: list[Any] = []
    page.on("response", lambda r: answers.append(r) if "series=" in r.url else None)
    page.goto(f"{page_url}#access_token={bearer}")
    page.wait_for_selector("#status:not([data-state='loading'])", timeout=30_000)
    return page, answers


def value_at(body: Any, key: str) -> Any:
    for part in key.split("."):
        body = body[int(part)] if isinstance(body, list) else body.get(part)
        if body is None:
            return None
    return body


def same(shown: str, expected: Any) -> bool:
    if expected is None:
        return shown in ("null", "")
    if isinstance(expected, int | float) and not isinstance(expected, bool):
        return abs(float(shown) - float(expected)) < 1e-9
    return shown == str(expected)


def test_every_number_shown_is_the_endpoints_for_the_same_user_and_period(
    chromium: Any, page_url: str, recent: Tenants
) -> None:
    page, answers = open_page(chromium, page_url, token(recent.viewer_a))
    assert page.get_attribute("#status", "data-state") == "ready"
    (answer,) = [a for a in answers if a.status == 200][-1:]
    body = answer.json()
    assert "access_token" not in page.url  # the fragment is gone from the address bar

    shown = page.eval_on_selector_all(
        "[data-key]",
        "els => els.map(e => [e.dataset.key, e.dataset.value, e.dataset.derivedFrom || null,"
        " e.textContent.trim()])",
    )
    compared = 0
    for key, value, derived_from, text in shown:
        if key.startswith(("change.", "change_pct.")):
            assert derived_from, key
            if derived_from.startswith("comparison."):
                assert same(value, value_at(body, derived_from)), (key, value)
            else:  # "current_period.K - previous_period.K"
                current, previous = (value_at(body, p.strip()) for p in derived_from.split(" - "))
                if current is None or previous is None:
                    assert value == "null", key
                else:
                    assert abs(float(value) - (current - previous)) < 0.011, (key, value)
        else:
            assert same(value, value_at(body, key)), (key, value, value_at(body, key))
            assert text, key  # shown, not only carried
        compared += 1
    assert compared >= 60
    assert len(body["series"]) >= 21
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "kpi-page-1280.png"), full_page=True)
    page.context.close()


def test_a_user_of_one_client_is_offered_no_other_client(
    chromium: Any, page_url: str, recent: Tenants
) -> None:
    page, _ = open_page(chromium, page_url, token(recent.viewer_a))
    clients = page.eval_on_selector_all("#client option", "os => os.map(o => [o.value, o.text])")
    deployments = page.eval_on_selector_all("#deployment option", "os => os.map(o => o.text)")
    page.context.close()

    assert {value for value, _ in clients if value} == {str(recent.client_a)}
    assert "B secret" not in deployments
    assert len([d for d in deployments if d]) >= 1


def test_an_expired_token_shows_the_sign_in_message(
    chromium: Any, page_url: str, recent: Tenants
) -> None:
    page, _ = open_page(chromium, page_url, token(recent.viewer_a, expires_in=-60))
    state, text = page.get_attribute("#status", "data-state"), page.inner_text("#status")
    page.context.close()

    assert state == "expired"
    assert "sign in" in text.lower()


def test_the_page_works_at_a_phones_width(chromium: Any, page_url: str, recent: Tenants) -> None:
    page, _ = open_page(chromium, page_url, token(recent.viewer_a), width=375)
    assert page.get_attribute("#status", "data-state") == "ready"
    overflow = page.evaluate("document.scrollingElement.scrollWidth - window.innerWidth")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "kpi-page-375.png"), full_page=True)
    cards = page.eval_on_selector_all(
        "[data-key='current_period.total_sms']",
        "els => els.map(e => e.getBoundingClientRect().width)",
    )
    page.context.close()

    assert overflow <= 0  # nothing wider than the screen: tables scroll inside their box
    assert cards
    assert all(0 < width <= 375 for width in cards)
    assert json.dumps(cards)  # measured, not assumed
