"""The reliability gauntlet: a campaign day replayed against every function at once,
with faults, then the whole state checked against the driver's ground truth.

    python -m benchmarks.soak [--sms 20000] [--workers 2] [--seed 1] [--outage 60]

See benchmarks/README.md ("soak") for what it does and the figures it gave.
"""
