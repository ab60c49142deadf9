"""systems/jobside: what a job's script calls: a free port, and its URL published in the job's Comment."""

import socket

import pytest

from forever_slurm.systems import jobside
from forever_slurm.common.errors import CommandError, ForeverError

JOB = {"SLURM_JOB_ID": "42", "SLURM_JOB_NAME": "hello"}


class FakeSlurm:
    def __init__(self, failures=0):
        self.failures = failures
        self.comments = []

    def set_comment(self, job_id, comment):
        if self.failures:
            self.failures -= 1
            raise CommandError(["scontrol"], 1, "slurmctld busy")
        self.comments.append((job_id, comment))


def test_publish_sets_the_comment_the_loop_reads():
    cluster = FakeSlurm()
    assert jobside.publish("http://n1:8080", JOB, cluster) == "traefik,hello,http://n1:8080"
    assert cluster.comments == [("42", "traefik,hello,http://n1:8080")]


def test_publish_retries_a_busy_slurmctld_with_growing_pauses():
    cluster, slept = FakeSlurm(failures=2), []
    jobside.publish("http://n1:1", JOB, cluster, tries=5, sleep=slept.append)
    assert slept == [1, 2] and len(cluster.comments) == 1


def test_publish_gives_up_after_its_tries():
    slept = []
    with pytest.raises(CommandError):
        jobside.publish("http://n1:1", JOB, FakeSlurm(failures=9), tries=3, sleep=slept.append)
    assert slept == [1, 2]


@pytest.mark.parametrize("environ", [{}, {"SLURM_JOB_ID": "42"}, {"SLURM_JOB_NAME": "hello"}])
def test_publish_outside_a_job_says_so(environ):
    with pytest.raises(ForeverError, match="inside a Slurm job"):
        jobside.publish("http://n1:1", environ, FakeSlurm())


def test_default_url_and_url_for_port():
    assert jobside.default_url(8080, "node7") == "http://node7:8080"
    assert jobside.url_for_port(9000) == "http://%s:9000" % socket.gethostname()
    with pytest.raises(ForeverError, match="--port"):
        jobside.url_for_port(None)


def test_free_port_can_be_bound_on_every_interface():
    port = jobside.free_port()
    sock = socket.socket()
    try:
        sock.bind(("", port))
    finally:
        sock.close()
    assert 1024 <= port <= 65535
