"""The reliability gauntlet's short variant (benchmarks/soak): about 1,000 SMS through
every function at once, with each kind of fault, and nothing lost or wrong."""

from __future__ import annotations

from benchmarks.soak import gauntlet


def test_a_short_campaign_day_with_faults_loses_nothing() -> None:
    report = gauntlet.run(1000, workers=2, progress=lambda _: None)
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
    endpoints = report.scoreboard.endpoints
    # The faults bit: the archive run failed while S3 was down and was run again, the
    # database's absence answered 503s, and requests died with their worker.
    assert endpoints["retention"].retries >= 1
    assert endpoints["erase"].retries >= 1  # incomplete (503), then finished by the same request
    assert endpoints["ingest_sms"].server_errors + endpoints["twilio_status"].server_errors >= 1
    assert sum(e.transport_errors for e in endpoints.values()) >= 1
    assert report.findings.checked_hot >= 950
    assert report.findings.checked_archived >= 1
    assert report.clean, "\n".join(report.lines())
