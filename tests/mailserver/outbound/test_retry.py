"""The retry schedule: exponential backoff with bounded jitter, capped, never past expiry."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailboxkit.mailserver.outbound.retry import RetryPolicy

NOW = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempts", "expected"), [(1, 60), (2, 120), (3, 240), (6, 1920), (7, 3600), (500, 3600)]
)
def test_delays_double_up_to_the_cap(attempts: int, expected: float) -> None:
    policy = RetryPolicy(first_delay=60, max_delay=3600, jitter=0)
    assert policy.delay(attempts, random.Random(1)) == expected


@given(attempts=st.integers(1, 10_000), seed=st.integers(0, 2**32))
def test_jitter_stays_within_its_fraction(attempts: int, seed: int) -> None:
    policy = RetryPolicy(first_delay=60, max_delay=3600, jitter=0.2)
    base = min(3600, 60 * 2 ** min(attempts - 1, 32))
    assert base * 0.8 <= policy.delay(attempts, random.Random(seed)) <= base * 1.2


def test_jitter_spreads_a_burst() -> None:
    policy, rng = RetryPolicy(jitter=0.2), random.Random(7)
    assert len({round(policy.delay(1, rng), 3) for _ in range(50)}) > 40


def test_no_attempt_is_scheduled_past_expiry() -> None:
    policy = RetryPolicy(first_delay=60, max_delay=3600, jitter=0)
    expires = NOW + timedelta(seconds=100)
    assert policy.next_attempt(NOW, 1, expires, random.Random()) == NOW + timedelta(seconds=60)
    assert policy.next_attempt(NOW, 2, expires, random.Random()) == expires
    assert policy.next_attempt(expires, 3, expires, random.Random()) is None
