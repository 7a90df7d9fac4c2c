"""The campaign day, driven step by step against the running stack.

Step k ingests wave k while Twilio reports on wave k-1 (reordered, some twice) and
sends the early callbacks of wave k+1, dashboard users read their metrics, reconcile
runs as its schedule would, and the step's fault is injected once the step's traffic
is under way. Without faults, the same day is the baseline.

While the database is unavailable, ingest_sms and twilio_status park what they were
sent in the spill-over queue and answer 202 or 200; the replay consumers make the
parked calls once it is back. A long outage (longer than any client retries) shows it.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
from twilio.request_validator import RequestValidator

from benchmarks.soak import faults
from benchmarks.soak.clients import RetryingClient, Scoreboard
from benchmarks.soak.plan import Plan, Sms
from benchmarks.soak.stack import KEYS, Stack, queue_depth
from tools.relay import can_drop_packets, packets_dropped

Job = Callable[[RetryingClient], object]
GONE = 410  # an erased SMS posted again
QUEUED = 202  # ingest_sms: parked in the spill-over queue while the database is unavailable


# How long the network between the functions and the pooler goes silent: longer than
# any function's deadline (ingest_sms's 11 s), so that each must decide on its own.
SILENCE_SECONDS = 15.0
# How long the database stays unreachable in the long outage: longer than any client
# retries (these clients ~25 s, n8n 5 tries 2 s apart, Twilio 15 s in all).
OUTAGE_SECONDS = 60.0
# A probe that got no answer in this long has hung: a finding, not a figure.
HANG_GUARD_SECONDS = 60.0
# Once the database is back, the spill-over queue must be empty within this long: replay
# hides a call it could not make for 1 minute, then 2, ... (functions/replay/replay.py).
DRAIN_GUARD_SECONDS = 900.0


@dataclass
class Silence:
    """A silent network or an unreachable database, measured from outside by a probe per
    function: one request after another, no retries, each timed to its answer."""

    kind: str  # "mute" (nothing forwarded, nothing said), "drop" (packets dropped), "outage"
    seconds: float
    decided: dict[str, float] = field(default_factory=dict)
    """The longest a request begun during the silence waited for its answer (parked:
    202 or 200; 503 only if the spill-over queue were unreachable too)."""
    answers: dict[str, Counter[int]] = field(default_factory=dict)
    """Each probe's answers to the requests begun during it, by status (0: none)."""
    durations: dict[str, list[float]] = field(default_factory=dict)
    recovered: dict[str, float] = field(default_factory=dict)
    """From the end of the silence to the first request answered from the database
    again, not parked."""
    parked: int = 0
    """The long outage: the spill-over queue's messages when the database came back."""
    hidden: int = 0
    """Of those, the ones replay had tried during the outage and postponed (1 minute
    after a first failed delivery, doubling) or had in hand."""
    drained: float | None = None
    """The long outage: from its end to the spill-over queue empty, every message hidden
    for a later delivery included."""

    def note(self, name: str, seconds: float, status: int) -> None:
        self.decided[name] = max(self.decided.get(name, 0.0), seconds)
        self.answers.setdefault(name, Counter())[status] += 1
        self.durations.setdefault(name, []).append(seconds)

    def line(self) -> str:
        out = f"{self.kind} {self.seconds:.0f} s: " + ", ".join(
            f"{name} decided within {self.decided.get(name, 0):.1f} s"
            f" ({self._answers(name)}) and answered from the database"
            f" {self.recovered[name]:.1f} s after"
            if name in self.recovered
            else f"{name} did not succeed again"
            for name in PROBED
        )
        if self.kind == "outage":
            out += f"; {self.parked} calls parked ({self.hidden} tried and postponed by replay"
            out += f" meanwhile), the queue empty {_seconds(self.drained)} after"
        return out

    def _answers(self, name: str) -> str:
        answers = self.answers.get(name, Counter())
        slow = sum(d > 1.0 for d in self.durations.get(name, []))
        counts = ", ".join(
            f"{n} x {status or 'no answer'}" for status, n in sorted(answers.items())
        )
        return f"{counts}; {slow} over 1 s"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


PROBED = ("ingest_sms", "twilio_status")


@dataclass
class FaultLog:
    sessions_terminated: int = 0
    database_outages: int = 0
    s3_outages: int = 0
    workers_killed: int = 0
    silences: list[Silence] = field(default_factory=list)
    outages: list[Silence] = field(default_factory=list)  # the long ones
    events: list[str] = field(default_factory=list)


class LogTail:
    """The request ids of the calls the functions parked, read from their log as it
    grows: twilio_status answers 200 either way."""

    def __init__(self, path: Any) -> None:
        self._path = path
        self._offset = 0
        self._rest = b""
        self._parked: set[str] = set()
        self._lock = threading.Lock()

    def parked(self, request_id: str) -> bool:
        with self._lock:
            with open(self._path, "rb") as log:
                log.seek(self._offset)
                chunk = log.read()
            self._offset += len(chunk)
            *lines, self._rest = (self._rest + chunk).split(b"\n")
            for line in lines:
                if b"parked for replay" in line:
                    rid = json.loads(line).get("request_id")
                    if rid:
                        self._parked.add(rid)
            return request_id in self._parked


class Driver:
    def __init__(
        self, plan: Plan, stack: Stack, *, inject_faults: bool = True, clients: int = 8,
        seed: int = 1, outage_seconds: float = OUTAGE_SECONDS,
    ) -> None:  # fmt: skip
        self.plan = plan
        self._inject_faults = inject_faults
        self._outage_seconds = outage_seconds
        # Set while the long outage lasts: the dashboard readers and the scheduled
        # reconcile run stand aside (they have no spill-over queue: they would get 503s
        # for longer than any client retries, as they would in production).
        self._database_down = threading.Event()
        self._log = LogTail(stack.log_path)
        self.stack = stack
        self.scoreboard = Scoreboard()
        self.faults = FaultLog()
        self._clients = clients
        self._random = random.Random(seed)
        self._local = threading.local()
        self._validator = RequestValidator(KEYS["TWILIO_AUTH_TOKEN"])
        self._background: list[threading.Thread] = []
        self._all_clients: list[RetryingClient] = []
        self._clients_lock = threading.Lock()

    # --- the day -------------------------------------------------------------------------

    def record_old_sms(self) -> None:
        """Before the day: SMS from last year, due for the archive."""
        old = self.plan.old
        self._run([self._bulk(old[n : n + 500]) for n in range(0, len(old), 500)])

    def campaign(self, progress: Callable[[str], None] = print) -> None:
        stop = threading.Event()
        readers = [
            threading.Thread(target=self._read_metrics, args=(stop, random.Random(n)))
            for n in range(2)
        ]
        for reader in readers:
            reader.start()
        try:
            # Step -1 only sends wave 0's early callbacks; the last two finish the callbacks.
            for step in range(-1, self.plan.waves + 2):
                jobs = self._ingest_jobs(step) + self._callback_jobs(step)
                self._random.shuffle(jobs)
                jobs.append(self._reconcile)
                self._run(jobs, self._scheduled(step))
                progress(f"step {step + 2}/{self.plan.waves + 3}: {len(jobs)} requests")
        finally:
            stop.set()
            for thread in (*readers, *self._background):
                thread.join()

    def drain(self, progress: Callable[[str], None] = print, max_runs: int = 200) -> int:
        """Run reconcile until Twilio has nothing left to tell: the schedule's steady state."""
        client = self._client()
        for run in range(1, max_runs + 1):
            outcome = self._reconcile(client)
            if outcome is not None and outcome["candidates"] == 0:
                progress(f"reconcile: nothing left after {run} runs")
                return run
        self.scoreboard.wrong(f"reconcile still had candidates after {max_runs} runs")
        return max_runs

    # --- traffic ---------------------------------------------------------------------------

    def _ingest_jobs(self, step: int) -> list[Job]:
        jobs: list[Job] = []
        fresh = self.plan.wave(step)
        again = [s for s in self.plan.wave(step - 1) if s.posted_twice]
        for batch in (fresh, again):
            self._random.shuffle(batch)
            bulk = batch[: len(batch) // 2]
            while bulk:  # campaigns post in bulk, of any size up to 500
                size = self._random.randint(20, 500)
                jobs.append(self._bulk(bulk[:size]))
                bulk = bulk[size:]
            jobs.extend(self._single(s) for s in batch[len(batch) // 2 :])
        return jobs

    def _callback_jobs(self, step: int) -> list[Job]:
        forms = [f for s in self.plan.wave(step - 1) if not s.early for f in s.callbacks()]
        forms += [f for s in self.plan.wave(step + 1) if s.early for f in s.callbacks()]
        # Twilio sends some twice: the copy comes a step later.
        forms += [
            self._random.choice(s.callbacks())
            for s in self.plan.wave(step - 2)
            if s.duplicated_callback and not s.early
        ]
        return [self._callback(f) for f in forms]

    def _single(self, sms: Sms, expected: tuple[int, ...] = (200, 201, QUEUED)) -> Job:
        """One SMS posted; an erased one may meet its erasure on the way (410); queued
        (202) while the database is unavailable."""
        accepted = (*expected, GONE) if sms.erased else expected

        def post(client: RetryingClient) -> None:
            response = client.request(
                "ingest_sms", "POST", self.stack.urls["ingest_sms"],
                json=sms.ingest_item(), headers=self._ingest_auth(),
            )  # fmt: skip
            if response is not None and response.status_code not in accepted:
                self.scoreboard.wrong(f"ingest {sms.sid}: {response.text}")

        return post

    def _bulk(self, batch: list[Sms]) -> Job:
        def post(client: RetryingClient) -> None:
            response = client.request(
                "ingest_sms", "POST", self.stack.urls["ingest_sms"],
                json={"messages": [s.ingest_item() for s in batch]},
                headers=self._ingest_auth(),
            )  # fmt: skip
            if response is None:
                return
            if response.status_code not in (200, 201, QUEUED, 207, 422):
                self.scoreboard.wrong(f"bulk ingest: {response.status_code}")
                return
            for sms, result in zip(batch, response.json()["results"], strict=True):
                error = result.get("error")
                if error and not (error["code"] == "gone" and sms.erased):
                    self.scoreboard.wrong(f"bulk ingest {sms.sid}: {error}")

        return post

    def _callback(self, form: dict[str, str]) -> Job:
        url = self.stack.urls["twilio_status"]
        signature = self._validator.compute_signature(url, form)

        def post(client: RetryingClient) -> None:
            response = client.request(
                "twilio_status", "POST", url, data=form,
                headers={"X-Twilio-Signature": signature},
            )  # fmt: skip
            if response is not None and response.status_code != 200:
                self.scoreboard.wrong(f"callback {form['MessageSid']}: {response.status_code}")

        return post

    def _reconcile(self, client: RetryingClient) -> dict[str, Any] | None:
        """One scheduled run; every SMS it asks about is one Twilio's API knows."""
        if self._database_down.is_set():
            # It would fail; the next schedule (here: the next step's run) makes up for it.
            self.faults.events.append("a reconcile run skipped: the database is down")
            return None
        response = client.request("reconcile", "POST", self.stack.urls["reconcile"], json={})
        if response is None or response.status_code != 200:
            self.scoreboard.wrong(f"reconcile: {_status(response)}")
            return None
        run: dict[str, Any] = response.json()
        if run["errors"] or run["not_found"] or run["twilio_unreachable"]:
            self.scoreboard.wrong(f"reconcile: {run}")
        return run

    def _read_metrics(self, stop: threading.Event, rng: random.Random) -> None:
        client = self._client()
        while not stop.is_set():
            if self._database_down.is_set():
                stop.wait(0.2)
                continue
            user = rng.choice(self.plan.users)
            response = client.request(
                "metrics", "GET", self.stack.urls["metrics"],
                params={"series": "day"} if rng.random() < 0.3 else None,
                headers={"Authorization": f"Bearer {self.stack.token(user.user_id)}"},
            )  # fmt: skip
            if response is not None and response.status_code != 200:
                self.scoreboard.wrong(f"metrics: {response.status_code}")
            stop.wait(0.2)

    # --- retention and erasure, in the background of their step ----------------------------

    def _archive(self) -> None:
        """The daily run; if S3 fails it, the next scheduled run (here: a retry) resumes."""
        client = self._client()
        response = client.request(
            "retention", "POST", self.stack.urls["retention"], json={},
            headers={"Authorization": f"Bearer {KEYS['RETENTION_API_KEYS']}"},
        )  # fmt: skip
        if response is None or response.status_code != 200:
            self.scoreboard.wrong(f"retention run: {_status(response)}")
        else:
            self.faults.events.append(f"archive run: {response.json()}")

    def _erase(self, numbers: list[str]) -> None:
        client = self._client()
        request_id = uuid.uuid4().hex  # the same on every retry: one audit record
        response = client.request(
            "erase", "POST", self.stack.urls["erase"],
            json={"phone_numbers": numbers, "requester": "soak-gauntlet"},
            headers={"Authorization": f"Bearer {KEYS['PRIVACY_API_KEYS']}",
                     "X-Request-Id": request_id},
        )  # fmt: skip
        if response is None or response.status_code != 200 or not response.json()["complete"]:
            self.scoreboard.wrong(f"erasure: {_status(response)}")
            return
        # Someone re-runs an old n8n execution: what was erased must not come back.
        replayed = [s for s in self.plan.sms if s.phone in numbers]
        # Parked (202) if a fault has the database unavailable meanwhile: replay then drops
        # it as erased, and the checks find no trace of it either way.
        self._run([self._single(s, expected=(GONE, QUEUED)) for s in replayed])

    def _in_background(self, action: Callable[[], None]) -> None:
        thread = threading.Thread(target=action)
        thread.start()
        self._background.append(thread)

    # --- what happens at a third of each step ---------------------------------------------

    def _scheduled(self, step: int) -> list[Callable[[], None]]:
        """The day's events (the archive run, erasures) and, unless this is the baseline
        day, its faults: each kind at least once, most twice."""
        waves, erasure = self.plan.waves, self.plan.erasure_wave
        events: dict[int, list[Callable[[], None]]] = {
            2: [lambda: self._in_background(self._archive)],
            erasure: [self._erasures],
        }
        faults_at: dict[int, list[Callable[[], None]]] = {
            1: [self._terminate_sessions],
            2: [self._s3_outage],  # starts just before the archive run
            3: [self._database_outage],
            4: [lambda: self._silence("mute")],
            erasure: [self._s3_outage],  # the erasures find the archive unreachable
            erasure + 1: [self._kill_workers],
            erasure + 2: [lambda: self._silence("drop")],
            waves - 2: [self._terminate_sessions],
            # Late in the day: what replay postponed while the database was gone (a
            # minute) comes back once it is, and no later fault postpones it again (the
            # short outage right after finds it hidden still).
            waves - 1: [self._long_outage, self._database_outage],
        }
        planned = faults_at.get(step, []) if self._inject_faults else []
        return planned + events.get(step, [])

    def _terminate_sessions(self) -> None:
        killed = faults.terminate_sessions(self.stack.database_url)
        self.faults.sessions_terminated += killed
        self.faults.events.append(f"pg_terminate_backend: {killed} sessions")

    def _database_outage(self) -> None:
        self.faults.database_outages += 1
        self.faults.events.append("database unreachable for 2 s")
        self.stack.database_link.cut(2.0)

    def _s3_outage(self) -> None:
        self.faults.s3_outages += 1
        # Longer than botocore's own retries last, so that the archive run fails on it.
        self.faults.events.append("S3 unreachable for 6 s")
        self._in_background(lambda: self.stack.s3_link.cut(6.0))
        time.sleep(0.1)

    def _silence(self, kind: str) -> None:
        """The link between the functions and the pooler goes silent, while a probe per
        function measures how long each takes to decide, and to work again after."""
        if kind == "drop" and (reason := can_drop_packets()):
            self.faults.events.append(f"no IP-level drop: {reason}")
            return
        link = self.stack.pooler_link
        silence = Silence(kind, SILENCE_SECONDS)
        if kind == "mute":
            self._probed(silence, lambda: link.mute(SILENCE_SECONDS))
        else:

            def drop() -> None:
                with packets_dropped(link.port):
                    time.sleep(SILENCE_SECONDS)

            self._probed(silence, drop)
        self.faults.silences.append(silence)
        self.faults.events.append(silence.line())

    def _long_outage(self) -> None:
        """The database unreachable (its link cut: connections dropped, new ones reset)
        for longer than any client retries. ingest_sms and twilio_status park what they
        are sent; the replay consumers try, fail and postpone, then drain the queue once
        the database is back. A probe per function times each decision meanwhile."""
        outage = Silence("outage", self._outage_seconds)
        self.faults.database_outages += 1
        self._database_down.set()
        time.sleep(1.0)  # the dashboard readers' requests in flight end first

        def cut() -> None:
            try:
                self.stack.database_link.cut(self._outage_seconds)
            finally:
                self._database_down.clear()
            ended = time.monotonic()
            visible, outage.parked = queue_depth(self.stack.sqs_endpoint, self.stack.queue_url)
            outage.hidden = outage.parked - visible
            self._in_background(lambda: self._watch_the_drain(outage, ended))

        self._probed(outage, cut)
        self.faults.outages.append(outage)

    def _watch_the_drain(self, outage: Silence, ended: float) -> None:
        while time.monotonic() - ended < DRAIN_GUARD_SECONDS:
            _, total = queue_depth(self.stack.sqs_endpoint, self.stack.queue_url)
            if not total:
                outage.drained = time.monotonic() - ended
                break
            time.sleep(0.5)
        self.faults.events.append(outage.line())

    def _probed(self, silence: Silence, fault: Callable[[], None]) -> None:
        began = time.monotonic()
        ended = threading.Event()
        ended_at = [0.0]
        probes = [
            threading.Thread(target=self._probe, args=(name, silence, began, ended, ended_at))
            for name in PROBED
        ]
        for probe in probes:
            probe.start()
        try:
            fault()
        finally:
            ended_at[0] = time.monotonic()
            ended.set()
            for probe in probes:
                probe.join()

    def _probe(
        self, name: str, silence: Silence, began: float, ended: threading.Event,
        ended_at: list[float],
    ) -> None:  # fmt: skip
        """Ask again and again, as a caller with no patience would: an SMS already sent
        (posted again, or its first status reported again: nothing changes)."""
        sms = next(s for s in self.plan.wave(0) if not (s.erased or s.early))
        url = self.stack.urls[name]
        form = sms.callbacks()[0]
        signature = self._validator.compute_signature(url, form)
        request: dict[str, Any] = (
            {"json": sms.ingest_item(), "headers": self._ingest_auth()}
            if name == "ingest_sms"
            else {"data": form, "headers": {"X-Twilio-Signature": signature}}
        )
        with httpx.Client(timeout=HANG_GUARD_SECONDS) as client:
            while time.monotonic() - began < silence.seconds + HANG_GUARD_SECONDS:
                request_id = uuid.uuid4().hex
                headers = request["headers"] | {"X-Request-Id": request_id}
                sent, during = time.monotonic(), not ended.is_set()
                try:
                    status = client.post(url, **(request | {"headers": headers})).status_code
                except httpx.TimeoutException:
                    self.scoreboard.wrong(f"{name}: no answer in {HANG_GUARD_SECONDS:.0f} s")
                    return
                except httpx.TransportError:
                    status = 0  # a worker restarting: ask again
                answered = time.monotonic()
                if during:
                    silence.note(name, answered - sent, status)
                if ended.is_set() and self._from_the_database(name, status, request_id):
                    silence.recovered[name] = answered - ended_at[0]
                    return
                if status not in (0, 200, 201, QUEUED, 503):
                    self.scoreboard.wrong(f"{name} during a {silence.kind}: {status}")
                # Each request parked is one more call to replay: fewer in a long outage.
                time.sleep(1.0 if silence.kind == "outage" else 0.2)
        self.scoreboard.wrong(f"{name}: no success within {HANG_GUARD_SECONDS:.0f} s of a silence")

    def _from_the_database(self, name: str, status: int, request_id: str) -> bool:
        """Answered as usual, not parked: ingest_sms says so (202), twilio_status only
        in its log."""
        if name == "ingest_sms":
            return status in (200, 201)
        return status == 200 and not self._log.parked(request_id)

    def wait_for_the_replay(self, progress: Callable[[str], None] = print) -> float:
        """Once the day is over: until the replay consumers have emptied the spill-over
        queue (what they postponed comes back up to some minutes later). Seconds waited."""
        began = time.monotonic()
        while time.monotonic() - began < DRAIN_GUARD_SECONDS:
            _, total = queue_depth(self.stack.sqs_endpoint, self.stack.queue_url)
            if not total:
                progress(f"spill-over queue empty after {time.monotonic() - began:.1f} s more")
                return time.monotonic() - began
            time.sleep(1.0)
        progress(f"spill-over queue not empty after {DRAIN_GUARD_SECONDS:.0f} s")
        return time.monotonic() - began

    def _erasures(self) -> None:
        numbers = self.plan.erased_numbers
        self._in_background(lambda: self._erase(numbers[:2]))
        self._in_background(lambda: self._erase(numbers[2:]))

    def _kill_workers(self) -> None:
        for name in ("ingest_sms", "twilio_status"):
            killed = faults.kill_workers(self.stack.masters[name])
            self.faults.workers_killed += len(killed)
            self.faults.events.append(f"killed {name}'s {len(killed)} workers mid-traffic")

    # --- plumbing ----------------------------------------------------------------------------

    def _run(self, jobs: list[Job], actions: list[Callable[[], None]] | None = None) -> None:
        """Run the jobs on the client threads; the actions, in order, a third of the way in."""
        done = 0
        lock = threading.Lock()
        third = threading.Event()

        def work(job: Job) -> None:
            nonlocal done
            try:
                job(self._client())
            except Exception as exc:  # an answer the driver could not read is a finding
                self.scoreboard.wrong(f"driver: {type(exc).__name__}: {exc}")
            finally:
                with lock:
                    done += 1
                    if done * 3 >= len(jobs):
                        third.set()

        with ThreadPoolExecutor(self._clients) as pool:
            for job in jobs:
                pool.submit(work, job)  # work never raises
            if actions:
                third.wait()
                for action in actions:
                    action()

    def _client(self) -> RetryingClient:
        """This thread's client: one connection per thread, as n8n's workers have."""
        if not hasattr(self._local, "client"):
            self._local.client = RetryingClient(self.scoreboard)
            with self._clients_lock:
                self._all_clients.append(self._local.client)
        client: RetryingClient = self._local.client
        return client

    def close(self) -> None:
        for client in self._all_clients:
            client.close()

    def _ingest_auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {KEYS['INGEST_API_KEYS']}"}


def _status(response: Any) -> str:
    return "no answer" if response is None else str(response.status_code)
