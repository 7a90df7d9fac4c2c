"""The reliability gauntlet's short variant (benchmarks/soak): about 1,000 SMS through
every function at once, with each kind of fault, and nothing lost or wrong.

The database's long outage lasts 30 s here (60 s in the full run), longer than any of
its clients retries. The day takes about 3 min 15 s: the two 15 s silences, the outage,
and replay's back-off (what the consumers tried during the outage comes back a minute
later, two if it had failed before); a shorter outage does not make it shorter."""

from __future__ import annotations

from benchmarks.soak import gauntlet

SHORT_OUTAGE_SECONDS = 30.0


def test_a_short_campaign_day_with_faults_loses_nothing() -> None:
    report = gauntlet.run(
        1000, workers=2, outage_seconds=SHORT_OUTAGE_SECONDS, progress=lambda _: None
    )
    faults = report.faults
    assert faults.sessions_terminated >= 1
    assert faults.database_outages >= 1
    assert faults.s3_outages >= 1
    assert faults.workers_killed >= 1
    # The network to the pooler went mute (and dropped its packets, where the machine
    # allows it): every probe was answered, and worked again after.
    assert faults.silences, faults.events
    for silence in faults.silences:
        assert set(silence.decided) == set(silence.recovered) == {"ingest_sms", "twilio_status"}
    # The database gone for longer than any client retries: ingest_sms and twilio_status
    # parked what they were sent (every probe's answer a success), went back to the
    # database after, and replay emptied the spill-over queue.
    (outage,) = faults.outages
    assert set(outage.decided) == set(outage.recovered) == {"ingest_sms", "twilio_status"}
    assert outage.answers["ingest_sms"].keys() == {202}, outage.answers
    assert outage.answers["twilio_status"].keys() == {200}, outage.answers
    assert outage.parked >= 1
    assert outage.drained is not None
    spillover = report.spillover
    assert spillover.parked >= outage.parked
    assert spillover.replayed + spillover.erased >= spillover.parked
    assert spillover.refused == 0
    endpoints = report.scoreboard.endpoints
    # The faults bit: the archive run failed while S3 was down and was run again, and
    # requests died with their worker.
    assert endpoints["retention"].retries >= 1
    assert endpoints["erase"].retries >= 1  # incomplete (503), then finished by the same request
    assert sum(e.transport_errors for e in endpoints.values()) >= 1
    assert report.findings.checked_hot >= 950
    assert report.findings.checked_archived >= 1
    assert report.clean, "\n".join(report.lines())
