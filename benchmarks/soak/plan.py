"""The campaign day the gauntlet replays, decided up front: the driver's ground truth.

Every SMS's fate is drawn here from a seeded random generator, before any traffic:
what n8n posts, which callbacks Twilio sends and in what order, what Twilio's API
answers, and so what the database must hold at the end.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tools.fake_twilio import status_callback

ACCOUNT_SID = "AC" + "5" * 32
AGENTS = ("louis", "arthur", "alexandra")
MESSAGE_TYPES = ("appointment_reminder", "marketing", "notification", "transactional")
# ErrorCodes Twilio reports with undelivered / failed.
UNDELIVERED_CODES = (30003, 30005, 30006)
FAILED_CODES = (30007, 21610)
MARGIN = Decimal("0.0200")
CONTENT_MARK = "rendez-vous"  # in every text: the log check looks for it


@dataclass(frozen=True)
class Tenant:
    client_id: str
    name: str
    deployments: tuple[tuple[str, str], ...]  # (deployment id, agent type)


@dataclass(frozen=True)
class User:
    user_id: str
    clients: tuple[str, ...]


@dataclass
class Sms:
    sid: str
    client_id: str
    deployment_id: str
    phone: str
    posted_phone: str  # as n8n sends it: E.164 or the French national format
    content: str
    message_type: str
    sent_at: datetime
    price: Decimal  # what Twilio charges (its API reports it negated)
    cost_at_ingest: Decimal | None  # n8n knows the price only sometimes
    final: str  # delivered | undelivered | failed
    done_at: datetime  # the carrier's RawDlrDoneDate (minute precision)
    error_code: int | None
    wave: int | None  # None: an SMS from last year, archived during the run
    early: bool = False  # every callback comes before the ingest
    final_lost: bool = False  # Twilio never sends the final callback
    posted_twice: bool = False
    duplicated_callback: bool = False
    erased: bool = False

    @property
    def old(self) -> bool:
        return self.wave is None

    @property
    def status(self) -> str:
        return "delivered" if self.final == "delivered" else "failed"

    @property
    def workflow_id(self) -> str:
        return f"wf-{self.message_type}"

    @property
    def provider_cost(self) -> Decimal:
        return self.cost_at_ingest if self.cost_at_ingest is not None else self.price

    def ingest_item(self) -> dict[str, Any]:
        item: dict[str, Any] = {
            "deployment_id": self.deployment_id,
            "phone_number": self.posted_phone,
            "message_content": self.content,
            "message_type": self.message_type,
            "provider_message_sid": self.sid,
            "provider_status": self.final if self.old else "queued",
            "sent_at": self.sent_at.isoformat(),
            "voipia_margin": str(MARGIN),
            "currency": "EUR",
            "workflow_id": self.workflow_id,
            "workflow_execution_id": uuid.uuid4().hex[:12],
        }
        if self.cost_at_ingest is not None:
            item["provider_cost"] = str(self.cost_at_ingest)
        return item

    def callbacks(self) -> list[dict[str, str]]:
        """The form parameters of each status callback Twilio sends, in sending order."""
        statuses = (
            ["queued", "failed"] if self.final == "failed" else ["queued", "sent", self.final]
        )
        if self.final_lost:
            statuses.pop()
        forms = []
        for status in statuses:
            extra = {"To": self.phone}
            if status in ("delivered", "undelivered"):
                extra["RawDlrDoneDate"] = self.done_at.strftime("%y%m%d%H%M")
            if status in ("undelivered", "failed"):
                extra["ErrorCode"] = str(self.error_code)
            forms.append(status_callback(ACCOUNT_SID, self.sid, status, **extra))
        return forms

    def api_message(self) -> dict[str, Any]:
        """What Twilio's Messages API answers about it (FakeTwilio.add's fields)."""
        return {
            "status": self.final,
            "error_code": self.error_code,
            "price": str(-self.price),
            "price_unit": "EUR",
            "date_updated": self.done_at.strftime("%a, %d %b %Y %H:%M:%S +0000"),
        }


@dataclass
class Plan:
    tenants: list[Tenant]
    users: list[User]
    sms: list[Sms]
    waves: int
    erased_numbers: list[str]
    erasure_wave: int
    started: datetime
    by_sid: dict[str, Sms] = field(init=False)

    def __post_init__(self) -> None:
        self.by_sid = {s.sid: s for s in self.sms}

    def wave(self, number: int) -> list[Sms]:
        return [s for s in self.sms if s.wave == number]

    @property
    def old(self) -> list[Sms]:
        return [s for s in self.sms if s.old]


def make_plan(total: int, *, waves: int = 10, seed: int = 1) -> Plan:
    rng = random.Random(seed)
    started = datetime.now(UTC).replace(microsecond=0)
    tenants = [
        Tenant(
            client_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            name=f"Client {n}",
            deployments=tuple(
                (str(uuid.UUID(int=rng.getrandbits(128), version=4)), agent)
                for agent in AGENTS[: 1 + n % 3]
            ),
        )
        for n in range(4)
    ]
    users = [User(str(uuid.uuid4()), (t.client_id,)) for t in tenants]
    users.append(User(str(uuid.uuid4()), (tenants[0].client_id, tenants[2].client_id)))
    # Valid French mobiles (06 12 xx xx xx): ingest refuses numbers outside assigned ranges.
    phones = [f"+33612{n:06d}" for n in rng.sample(range(10**6), 20 + total // 5)]
    erased_numbers = phones[:3]
    erasure_wave = waves // 2
    old_count = max(30, total // 20)

    def one(wave: int | None, phone: str) -> Sms:
        tenant = rng.choice(tenants)
        deployment_id, _ = rng.choice(tenant.deployments)
        if wave is None:  # 13 to 15 months ago: due for the archive
            sent_at = started - timedelta(days=rng.uniform(400, 460))
        else:  # earlier today
            sent_at = started - timedelta(hours=rng.uniform(0.1, 20))
        sent_at = sent_at.replace(microsecond=0)
        final = rng.choices(["delivered", "undelivered", "failed"], [90, 7, 3])[0]
        done_at = (sent_at + timedelta(minutes=1 + rng.randrange(5))).replace(second=0)
        price = Decimal("0.0750") * rng.choice([1, 1, 1, 2, 3])
        error_code = (
            rng.choice(UNDELIVERED_CODES) if final == "undelivered"
            else rng.choice(FAILED_CODES) if final == "failed" else None
        )  # fmt: skip
        national = "0" + phone[3:4] + " " + " ".join(phone[n : n + 2] for n in range(4, 12, 2))
        return Sms(
            sid="SM" + rng.getrandbits(128).to_bytes(16, "big").hex(),
            client_id=tenant.client_id,
            deployment_id=deployment_id,
            phone=phone,
            posted_phone=national if rng.random() < 0.2 else phone,
            content=f"Bonjour, votre {CONTENT_MARK} est confirmé. Réf {rng.randrange(10**6)}"
            + " Merci." * rng.randrange(30),
            message_type=rng.choice(MESSAGE_TYPES),
            sent_at=sent_at,
            price=price,
            cost_at_ingest=price if rng.random() < 0.7 or wave is None else None,
            final="delivered" if wave is None else final,
            done_at=done_at,
            error_code=None if wave is None else error_code,
            wave=wave,
            early=wave is not None and rng.random() < 0.03,
            final_lost=wave is not None and rng.random() < 0.02,
            posted_twice=wave is not None and rng.random() < 0.05,
            duplicated_callback=wave is not None and rng.random() < 0.05,
        )

    sms = [
        one(None, erased_numbers[n % 3] if n < 3 else rng.choice(phones)) for n in range(old_count)
    ]
    for n in range(total):
        wave = n * waves // total
        # Numbers to be erased get SMS only before the erasure, and at least one each.
        pool = phones if wave < erasure_wave else phones[len(erased_numbers) :]
        phone = erased_numbers[n] if n < len(erased_numbers) else rng.choice(pool)
        sms.append(one(wave, phone))
    for s in sms:
        s.erased = s.phone in erased_numbers
    return Plan(tenants, users, sms, waves, erased_numbers, erasure_wave, started)
