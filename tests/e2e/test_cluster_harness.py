"""The local Slurm cluster harness behaves like the real clusters forever-slurm relies on."""

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from harness.shared_cluster import parse_time

pytestmark = pytest.mark.e2e

SQUEUE_FORMAT = "%i|%t|%j|%N|%L|%e|%k|%l"
TIME_LIMIT_DEADLINE = 120  # 1-minute limit + slurmctld's 30 s limit sweep + slack
_script_numbers = itertools.count()


def submit(cluster, workdir, body, args=(), extra_env=None):
    """Submit a bash batch script with body; returns the job id."""
    script = os.path.join(str(workdir), "job-%d.sh" % next(_script_numbers))
    with open(script, "w") as f:
        f.write("#!/bin/bash\n" + body + "\n")
    done = cluster.run(["sbatch", "--parsable", "-D", str(workdir), "-o", "%j.out"] + list(args) + [script],
                       extra_env=extra_env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def squeue_row(cluster, job_id):
    """The job's squeue row as a dict, or None when squeue does not list it."""
    done = cluster.run(["squeue", "--me", "-h", "-t", "all", "-j", job_id, "-o", SQUEUE_FORMAT])
    fields = ("id", "state", "name", "node", "left", "end", "comment", "limit")
    for line in done.stdout.splitlines():
        row = dict(zip(fields, line.split("|")))
        if row["id"] == job_id:
            return row
    return None


def wait_for(predicate, timeout, interval=0.3):
    """Poll predicate until it returns something truthy (returned) or timeout passes (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return None


def wait_running(cluster, job_id, timeout=20, check=lambda row: True):
    row = wait_for(lambda: (lambda r: r if r and r["state"] == "R" and check(r) else None)(
        squeue_row(cluster, job_id)), timeout)
    assert row is not None, "job %s not running: %r\n%s" % (job_id, squeue_row(cluster, job_id),
                                                           cluster.log_tail(15))
    return row


@pytest.fixture(scope="module")
def limited_job(local_cluster, tmp_path_factory):
    """A job with a 1-minute limit from SBATCH_TIMELIMIT, submitted early so its expiry overlaps other tests."""
    submitted = time.monotonic()
    job_id = submit(local_cluster, tmp_path_factory.mktemp("limited"), "sleep 600",
                    extra_env={"SBATCH_TIMELIMIT": "1"})
    yield job_id, submitted
    local_cluster.run(["scancel", job_id])


def test_every_node_is_idle(local_cluster):
    local_cluster.wait_idle(timeout=30)
    states = local_cluster.node_states()
    assert sorted(states) == ["node1", "node2", "node3"]
    assert set(states.values()) == {"idle"}


def test_start_from_another_handle_reuses_the_running_cluster(local_cluster):
    again = type(local_cluster)(local_cluster.base_dir)
    started = time.monotonic()
    assert again.start(timeout=30) is False
    assert time.monotonic() - started < 5
    assert again.is_up()
    assert "slurmctld" in again.log_tail(5)


def test_sbatch_timelimit_env_sets_a_one_minute_limit(local_cluster, limited_job):
    row = wait_running(local_cluster, limited_job[0])
    assert row["limit"] == "1:00"
    minutes, seconds = row["left"].split(":")
    assert 0 < int(minutes) * 60 + int(seconds) <= 60


def test_job_publishes_its_url_in_its_comment(local_cluster, tmp_path):
    job_id = submit(local_cluster, tmp_path,
                    "scontrol update JobId=$SLURM_JOB_ID Comment=traefik,x,http://$(hostname):1234\n"
                    "sleep 120", args=["-J", "harness-comment"])
    try:
        row = wait_running(local_cluster, job_id, check=lambda r: r["comment"].startswith("traefik,"))
        assert row["comment"] == "traefik,x,http://%s:1234" % socket.gethostname()
        assert row["name"] == "harness-comment"
        assert row["node"] in local_cluster.node_names
    finally:
        local_cluster.run(["scancel", job_id])


def test_short_job_ends_by_itself_and_leaves_squeue(local_cluster, tmp_path):
    job_id = submit(local_cluster, tmp_path, "sleep 1")
    # MinJobAge=5: the record lingers a few seconds after the job completes, then disappears.
    assert wait_for(lambda: squeue_row(local_cluster, job_id) is None, timeout=30), \
        squeue_row(local_cluster, job_id)
    assert os.path.exists(os.path.join(str(tmp_path), "%s.out" % job_id))


def test_controller_outage_fails_squeue_but_jobs_survive(local_cluster, tmp_path):
    pid_file = os.path.join(str(tmp_path), "job.pid")
    job_id = submit(local_cluster, tmp_path, "echo $$ > %s\nexec sleep 120" % pid_file)
    try:
        wait_running(local_cluster, job_id)
        job_pid = int(wait_for(lambda: os.path.exists(pid_file) and open(pid_file).read().strip(), 10))
        local_cluster.stop_controller()
        try:
            started = time.monotonic()
            down = local_cluster.run(["squeue", "--me", "-h", "-o", SQUEUE_FORMAT])
            elapsed = time.monotonic() - started
            assert down.returncode == 1
            assert "Unable to contact slurm controller" in down.stderr
            assert elapsed < 8, "MessageTimeout=3 should make squeue fail fast, took %.1fs" % elapsed
            assert os.path.exists("/proc/%d" % job_pid), "the job's process died with the controller"
        finally:
            local_cluster.start_controller()
        row = wait_running(local_cluster, job_id)
        assert row["node"] in local_cluster.node_names
    finally:
        local_cluster.run(["scancel", job_id])


def test_exclude_places_job_on_the_remaining_node(local_cluster, tmp_path):
    job_id = submit(local_cluster, tmp_path, "sleep 60", args=["--exclude=node1,node2"])
    try:
        assert wait_running(local_cluster, job_id)["node"] == "node3"
    finally:
        local_cluster.run(["scancel", job_id])


def test_time_limit_ends_the_job(local_cluster, limited_job):
    job_id, submitted = limited_job
    remaining = TIME_LIMIT_DEADLINE - (time.monotonic() - submitted)
    # Poll every second: MinJobAge=5 keeps the TIMEOUT record visible for about five.
    states = []

    def ended():
        row = squeue_row(local_cluster, job_id)
        states.append(row and row["state"])
        return row is None or row["state"] in ("TO", "CD", "F", "CA")

    assert wait_for(ended, remaining, interval=1), "job still %r after %ss" % (states[-1:], TIME_LIMIT_DEADLINE)
    assert "TO" in states, "job ended without reaching TIMEOUT: %r" % states[-5:]


# ---- the shared, busy cluster (tests/harness/shared_cluster.py) ------------------------------------
# Facts these tests rely on, with timings: docs/shared-cluster-observed.md.

def shared_job(cluster, workdir, *args, **kwargs):
    """A root job in the shared cluster that sleeps (or runs `command`); returns its id."""
    return cluster.submit(["-D", str(workdir), "-o", "/dev/null"] + list(args)
                          + ["--wrap", kwargs.get("command", "sleep 600")])


def loop_row(cluster, job_id, check, timeout):
    """The job's row in the loop's squeue view once check(row) holds (None: not within timeout)."""
    return wait_for(lambda: (lambda row: row if row and check(row) else None)(cluster.job_row(job_id)), timeout)


def any_row(cluster, job_id):
    """The job's state and reason whoever owns it (the loop's view shows root's jobs only)."""
    done = cluster.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%t|%r"])
    return done.stdout.strip()


def test_default_cluster_has_no_preemption_and_one_partition(local_cluster):
    with open(local_cluster.conf) as handle:
        text = handle.read()
    assert "Preempt" not in text and "GraceTime" not in text
    assert text.count("PartitionName=") == 1


def test_ensure_user_is_idempotent(shared_cluster):
    from harness.shared_cluster import ensure_user
    uid = ensure_user(shared_cluster.other_user)
    assert ensure_user(shared_cluster.other_user) == uid
    assert pwd.getpwuid(uid).pw_name == shared_cluster.other_user


def test_preemption_warns_through_the_end_time_then_requeues_or_cancels(clean_shared_cluster, tmp_path):
    cluster = clean_shared_cluster
    requeued = shared_job(cluster, tmp_path, "-p", "debug", "-w", "node1", "-t", "30",
                          "--comment", "traefik,x,http://h:1")
    cancelled = shared_job(cluster, tmp_path, "-p", "cancel", "-w", "node2", "-t", "30")
    for job in (requeued, cancelled):
        assert loop_row(cluster, job, lambda r: r["state"] == "R", 20), cluster.job_row(job)
    asked = time.time()
    preemptors = [cluster.preempt("node1", 120), cluster.preempt("node2", 120)]
    for job in (requeued, cancelled):
        # The only warning: %e jumps from start + 30 min to about now + GraceTime, the job still running.
        row = loop_row(cluster, job, lambda r: parse_time(r["end"]) < asked + 60, 10)
        assert row is not None, cluster.job_row(job)
        assert row["state"] in ("R", "SI"), row
        assert asked + cluster.grace_time - 2 <= parse_time(row["end"]) <= asked + cluster.grace_time + 5, row
    # REQUEUE: pending again under the same id, held back ~120 s (BeginTime), its Comment kept.
    row = loop_row(cluster, requeued, lambda r: r["state"] == "PD", 40)
    assert row is not None, cluster.job_row(requeued)
    assert row["reason"] == "BeginTime" and row["comment"] == "traefik,x,http://h:1" and row["nodes"] == ""
    assert parse_time(row["start"]) >= time.time() + 90, row
    # CANCEL: state PR (preempted), then gone after MinJobAge.
    assert loop_row(cluster, cancelled, lambda r: r["state"] == "PR", 30), cluster.job_row(cancelled)
    for preemptor in preemptors:
        assert wait_for(lambda: any_row(cluster, preemptor).startswith("R|"), 20), any_row(cluster, preemptor)


def test_requeue_suspend_and_resume(clean_shared_cluster, tmp_path):
    cluster = clean_shared_cluster
    job = shared_job(cluster, tmp_path, "-t", "30")
    assert loop_row(cluster, job, lambda r: r["state"] == "R", 20)
    cluster.suspend(job)
    assert loop_row(cluster, job, lambda r: r["state"] == "S", 10), cluster.job_row(job)
    cluster.resume(job)
    assert loop_row(cluster, job, lambda r: r["state"] == "R", 10), cluster.job_row(job)
    cluster.requeue(job)
    row = loop_row(cluster, job, lambda r: r["state"] == "PD", 20)
    assert row is not None and row["reason"] == "BeginTime", cluster.job_row(job)


def test_node_down_and_drain(clean_shared_cluster, tmp_path):
    cluster = clean_shared_cluster
    on_down = shared_job(cluster, tmp_path, "-w", "node2", "-t", "30")
    on_drain = shared_job(cluster, tmp_path, "-w", "node3", "-t", "30")
    for job in (on_down, on_drain):
        assert loop_row(cluster, job, lambda r: r["state"] == "R", 20)
    cluster.set_node("node2", "down", "harness-test")
    cluster.set_node("node3", "drain", "harness-test")
    try:
        rows = cluster.node_rows()
        assert rows["node2"].base_state == "down" and rows["node2"].reason == "harness-test", rows
        assert rows["node3"].base_state == "drng" and rows["node3"].reason == "harness-test", rows
        # down: the job is requeued (JobRequeue=1) and waits; drain: it keeps running.
        row = loop_row(cluster, on_down, lambda r: r["state"] == "PD", 20)
        assert row is not None, cluster.job_row(on_down)
        assert cluster.job_row(on_drain)["state"] == "R"
    finally:
        cluster.set_node("node2", "resume")
        cluster.set_node("node3", "resume")
    # (A '*' may follow a state for a moment after RESUME: not responding until the next ping.)
    assert wait_for(lambda: cluster.node_rows()["node2"].base_state in ("idle", "mix", "alloc"), 20), \
        cluster.node_rows()
    assert cluster.node_rows()["node3"].base_state in ("mix", "alloc"), cluster.node_rows()


def test_maint_reservation_holds_back_a_job_that_would_cross_it(clean_shared_cluster, tmp_path):
    cluster = clean_shared_cluster
    begins = int(time.time()) + 600
    cluster.create_reservation("maint-test", begins, 20)
    try:
        found = cluster.reservations()
        assert [(r.name, r.start, r.end, r.nodes) for r in found] == [("maint-test", begins, begins + 1200,
                                                                        "node[1-3]")]
        assert "MAINT" in found[0].flags.split(",") and found[0].state == "INACTIVE"
        crosses = shared_job(cluster, tmp_path, "-t", "30")
        fits = shared_job(cluster, tmp_path, "-t", "5")
        assert loop_row(cluster, fits, lambda r: r["state"] == "R", 20), cluster.job_row(fits)
        row = loop_row(cluster, crosses, lambda r: r["reason"].startswith("ReqNodeNotAvail"), 20)
        assert row is not None and row["state"] == "PD", cluster.job_row(crosses)
    finally:
        cluster.delete_reservation("maint-test")
    assert cluster.reservations() == []
    assert loop_row(cluster, crosses, lambda r: r["state"] == "R", 20), cluster.job_row(crosses)


def test_partition_maxtime_below_the_time_asked_leaves_the_job_pending(clean_shared_cluster, tmp_path):
    cluster = clean_shared_cluster
    job = shared_job(cluster, tmp_path, "-p", "short", "-t", str(cluster.short_max_time + 25))
    row = loop_row(cluster, job, lambda r: r["reason"] == "PartitionTimeLimit", 15)
    assert row is not None and row["state"] == "PD", cluster.job_row(job)


def test_a_drained_partition_rejects_submissions(clean_shared_cluster, tmp_path):
    cluster = clean_shared_cluster
    cluster.update_partition("short", State="DRAIN")
    try:
        done = cluster.sbatch(["-p", "short", "-t", "2", "-D", str(tmp_path), "-o", "/dev/null", "--wrap", "true"])
    finally:
        cluster.update_partition("short", State="UP")
    assert done.returncode == 1
    assert "Batch job submission failed" in done.stderr, done.stderr


def test_fill_makes_a_new_job_wait_about_the_fill_time(clean_shared_cluster, tmp_path):
    cluster = clean_shared_cluster
    fill = cluster.fill(run_seconds=30, keep=True)
    assert fill.cpus == 12 and len(fill.job_ids) == 12
    # 12 running, 12 queued (give or take the one handing over: fillers end every 2.5 s).
    assert wait_for(lambda: cluster.idle_cpus() == 0, 5) and len(cluster.other_jobs()) >= 22
    submitted = time.time()
    job = shared_job(cluster, tmp_path, "-t", "30")
    time.sleep(8)
    row = cluster.job_row(job)
    assert row["state"] == "PD" and row["reason"] in ("Priority", "Resources"), row
    assert loop_row(cluster, job, lambda r: r["state"] == "R", 90), cluster.job_row(job)
    waited = time.time() - submitted
    assert 15 <= waited <= 75, waited
    assert len(cluster.other_jobs()) >= 11       # the fill goes on: it keeps queueing successors
    assert cluster.stop_filling(timeout=30)
    assert cluster.other_jobs() == []


def test_enforced_limits_reject_and_max_job_count_blocks_sbatch(tmp_path):
    """A second shared cluster with the other options: EnforcePartLimits=ALL, MaxJobCount, and
    preempt_send_user_signal (slurmctld must accept the setting)."""
    from harness.shared_cluster import SharedCluster
    base = tempfile.mkdtemp(prefix="fsl-", dir="/tmp")
    cluster = SharedCluster(base, enforce_part_limits="ALL", max_job_count=4, send_user_signal=True)
    try:
        cluster.start(timeout=60)
        rejected = cluster.sbatch(["-p", "short", "-t", "30", "-D", str(tmp_path), "-o", "/dev/null",
                                   "--wrap", "true"])
        assert rejected.returncode == 1
        assert "Requested time limit is invalid (missing or exceeds some limit)" in rejected.stderr
        for _ in range(3):
            shared_job(cluster, tmp_path, "-t", "30")
        # With MaxJobCount=4 the fourth already blocks: sbatch neither fails nor returns, it retries.
        with pytest.raises(subprocess.TimeoutExpired) as blocked:
            cluster.run(["sbatch", "-D", str(tmp_path), "-o", "/dev/null", "--wrap", "true"], timeout=8)
        assert b"Slurm temporarily unable to accept job, sleeping and retrying" in blocked.value.stderr
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
