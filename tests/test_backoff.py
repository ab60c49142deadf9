"""common/backoff: the one retry schedule (doubling, capped, with a deterministic jitter)."""

import pytest

from forever_slurm.common import backoff


@pytest.mark.parametrize("attempt, seconds", [(0, 0.0), (-3, 0.0), (1, 10.0), (2, 20.0), (3, 40.0), (4, 80.0),
                                              (5, 100.0), (500, 100.0)])
def test_doubles_from_base_up_to_the_cap(attempt, seconds):
    assert backoff.delay(attempt, 10, 100) == seconds


def test_jitter_takes_at_most_its_fraction_and_is_the_same_for_the_same_key():
    plain = backoff.delay(3, 10, 1000)
    jittered = [backoff.delay(3, 10, 1000, key="svc-%d" % n, jitter=0.5) for n in range(50)]
    assert all(plain * 0.5 <= s <= plain for s in jittered)
    assert len(set(jittered)) > 10, "different keys spread out"
    assert backoff.delay(3, 10, 1000, key="svc-1", jitter=0.5) == jittered[1], "deterministic"


def test_no_jitter_without_a_key_or_a_fraction():
    assert backoff.delay(2, 5, 60, key="", jitter=0.9) == 10.0
    assert backoff.delay(2, 5, 60, key="x", jitter=0.0) == 10.0


def test_a_huge_attempt_number_does_not_overflow():
    assert backoff.delay(10 ** 6, 1, 30, key="k", jitter=0.1) <= 30.0
