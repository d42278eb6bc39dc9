"""The token bucket behind the HTTP API's per-app rate limits."""

from __future__ import annotations

from pyserver.ratelimit import TokenBucket


def test_a_full_second_of_budget_then_refills_with_time() -> None:
    bucket = TokenBucket(4, now=0.0)
    assert [bucket.take(1, 0.0) for _ in range(5)] == [True, True, True, True, False]
    assert bucket.seconds_until(1) == 0.25
    assert not bucket.take(1, 0.2)
    assert bucket.take(1, 0.25)
    assert bucket.take(4, 10.0)  # refills up to the rate, no more
    assert not bucket.take(1, 10.0)


def test_a_refusal_spends_nothing_and_a_cost_above_the_rate_needs_a_full_bucket() -> None:
    bucket = TokenBucket(10, now=0.0)
    assert bucket.take(6, 0.0)
    assert not bucket.take(6, 0.0)
    assert bucket.take(4, 0.0)
    assert not bucket.take(100, 0.5)
    assert bucket.take(100, 1.0)  # e.g. one event to 100 channels under a limit of 10
    assert bucket.allowance == 0
