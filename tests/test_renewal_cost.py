"""Renewal costs one overlap, not N (issue 24, C7): the loop's planner against a simulated cluster for
17 simulated hours (two renewals of 8-hour jobs) — harness/renewal_sim.py."""

import pytest

from harness import renewal_sim


@pytest.mark.parametrize("instances", [1, 8, 64])
def test_renewal_gives_up_a_small_share_of_job_hours_whatever_the_instances(instances):
    result = renewal_sim.simulate(instances, hours=17, step=15.0)
    assert result.below_seconds == 0, result
    assert result.given_up <= 0.05 and result.limit_unused <= 0.05, result
    assert result.lead < 600, "the lead does not grow with the instances: %r" % (result,)


def test_a_busy_queue_makes_the_lead_longer_not_the_service_shorter():
    """Replacements wait 2-3 minutes in the queue (C1): the lead learns it, nothing falls below N."""
    result = renewal_sim.simulate(8, hours=17, step=15.0, queue_wait=lambda rng: rng.uniform(120, 180))
    assert result.below_seconds == 0 and result.given_up <= 0.05, result
    assert result.lead >= 180 + 20, result
