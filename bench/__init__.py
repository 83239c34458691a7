"""The benchmark suite of sms-consumer: `python -m bench` (or `make bench`).

Every system under test (the service, and the two ceilings it is compared with) runs in a process of its own,
as does the fake provider, so CPU seconds and peak RSS are those of that process alone. See `bench.cli`.
"""
