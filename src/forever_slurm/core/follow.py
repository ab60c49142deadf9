"""A follower's view of the leader: what the leading loop of the root observed and decided, read from
its state.json (on the shared filesystem), merged with what this host's own probes found.

A follower routes its own Traefik to the ready backends, as the leader routes its own, so a request
to any login node is answered; it never asks Slurm while the leader's file is fresh (the cluster
still sees about one squeue a minute however many login nodes run), and never submits or cancels.
Which jobs exist, which drain or stop, and the counts of MIN-MAX services are the leader's; whether a
backend answers is this host's own finding (a network path can differ from one login node to another).
"""

import os
import time

from . import state
from .model import Memory

STALE = 2 * state.HEARTBEAT     # the leader rewrites state.json at least every HEARTBEAT seconds
_OWN = ("ready_since", "ever_ready", "probe_failures", "probe_detail", "unready_at")


class LeaderView:
    """The leader's last snapshot, re-read when state.json changes (one stat a pass)."""

    def __init__(self, path, monotonic=time.monotonic):
        self.path = path
        self.monotonic = monotonic
        self.snapshot = state.empty_snapshot()
        self._stamp = None
        self._changed_at = None

    def read(self):
        """The leader's snapshot (the last good one when the file is missing or unreadable)."""
        try:
            info = os.stat(self.path)
            stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        except OSError:
            return self.snapshot
        if stamp != self._stamp:
            snapshot, problem = state.read(self.path)
            if not problem:
                self.snapshot = snapshot
            self._stamp, self._changed_at = stamp, self.monotonic()
        return self.snapshot

    def stale(self):
        """True when the leader's file has not changed for longer than its heartbeat allows."""
        return self._changed_at is None or self.monotonic() - self._changed_at > STALE


def merged(leader, own):
    """The leader's memory of every job, with this host's own readiness findings (probes)."""
    jobs = {}
    for job_id, m in leader.jobs.items():
        mine = own.jobs.get(job_id)
        if mine is not None and mine.url == m.url:
            m = m._replace(**{field: getattr(mine, field) for field in _OWN})
        else:
            m = m._replace(ready_since=None, probe_failures=0, probe_detail="", unready_at=None)
        jobs[job_id] = m
    return Memory(jobs, dict(leader.services))
