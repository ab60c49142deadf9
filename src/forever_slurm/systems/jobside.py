"""Helpers that run inside a Slurm job: find a free port, publish the job's URL in its Comment."""

import os
import socket
import time

from ..common import ports
from . import slurm
from ..common.errors import CommandError, ForeverError


def free_port():
    """A free port on every interface of this node, for the job's server."""
    return ports.free_port("")


def comment_for(service, url):
    return "traefik,%s,%s" % (service, url)


def publish(url, environ=None, cluster=None, tries=5, sleep=time.sleep):
    """Set this job's Comment to traefik,<job name>,<url>, retrying while slurmctld is busy."""
    environ = os.environ if environ is None else environ
    job_id = environ.get("SLURM_JOB_ID")
    service = environ.get("SLURM_JOB_NAME")
    if not job_id or not service:
        raise ForeverError("publish runs inside a Slurm job: SLURM_JOB_ID and SLURM_JOB_NAME are not set")
    cluster = cluster or slurm.Slurm()
    comment = comment_for(service, url)
    for attempt in range(1, tries + 1):
        try:
            cluster.set_comment(job_id, comment)
            return comment
        except CommandError:
            if attempt == tries:
                raise
            sleep(attempt)
    return comment


def default_url(port, host=None):
    return "http://%s:%d" % (host or socket.gethostname(), port)


def url_for_port(port):
    """`publish` without a URL: http://<hostname>:PORT, so --port is needed."""
    if not port:
        raise ForeverError("give the URL, or --port PORT to publish http://<hostname>:PORT")
    return default_url(port)

