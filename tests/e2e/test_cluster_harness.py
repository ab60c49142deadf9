"""The local Slurm cluster harness behaves like the real clusters forever-slurm relies on."""

import itertools
import os
import socket
import time

import pytest

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
