"""Everything that talks to Slurm: builds squeue/sbatch/scontrol/scancel argv and parses their output."""

import logging
import re
from typing import NamedTuple, Optional

from . import proc
from .errors import CommandError

log = logging.getLogger(__name__)

# %A: job id unique per array element; %k (comment) last, so a '|' inside a comment survives
# split('|', 7). Unsized fields are printed in full (squeue opts.c).
SQUEUE_FORMAT = "%A|%t|%j|%N|%L|%M|%r|%k"
FIELDS = 8

PENDING_STATES = frozenset(["PD", "CF", "RQ", "RH", "RF", "RS", "RD", "SI", "SO", "S", "ST"])
RUNNING_STATES = frozenset(["R"])
ACTIVE_STATES = PENDING_STATES | RUNNING_STATES

_DURATION_RE = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


class Job(NamedTuple):
    """One row of squeue, as plain values."""
    job_id: str
    state: str          # compact state: PD, R, CG, ...
    name: str
    nodes: str          # '' while pending
    time_left: Optional[int]   # seconds; None when unlimited or unknown
    time_used: Optional[int]
    reason: str
    comment: str        # '' when unset

    @property
    def running(self):
        return self.state in RUNNING_STATES

    @property
    def pending(self):
        return self.state in PENDING_STATES

    @property
    def active(self):
        return self.state in ACTIVE_STATES


def parse_duration(text):
    """'M:SS', 'H:MM:SS', 'D-HH:MM:SS' -> seconds; UNLIMITED, NOT_SET, INVALID, N/A -> None."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        return None
    days, hours, minutes, seconds = match.groups()
    if hours is None:  # 'M:SS' matched as (None, None, M, SS)
        hours = 0
    return ((int(days or 0) * 24 + int(hours)) * 60 + int(minutes)) * 60 + int(seconds)


def parse_squeue(text):
    """Rows of `squeue -h -o SQUEUE_FORMAT` -> (jobs, unreadable lines)."""
    jobs = []
    junk = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", FIELDS - 1)
        if len(parts) != FIELDS or not parts[0].strip():
            junk.append(line)
            continue
        job_id, state, name, nodes, left, used, reason, comment = parts
        comment = comment.strip()
        jobs.append(Job(
            job_id=job_id.strip(),
            state=state.strip(),
            name=name.strip(),
            nodes=nodes.strip(),
            time_left=parse_duration(left),
            time_used=parse_duration(used),
            reason=reason.strip(),
            comment="" if comment == "(null)" else comment,
        ))
    return jobs, junk


def script_job_name(text):
    """(job name, line number) from a batch script's #SBATCH header, or (None, None).

    sbatch stops reading #SBATCH lines at the first command, and so do we.
    """
    for number, option, value in sbatch_options(text):
        if option in ("--job-name", "-J"):
            return value, number
    return None, None


def sbatch_options(text):
    """[(line, option, value)] from the #SBATCH lines before the first command."""
    found = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if number == 1 and line.startswith("#!"):
            continue
        if not line:
            continue
        if not line.startswith("#"):
            break
        if not line.startswith("#SBATCH"):
            continue
        body = line[len("#SBATCH"):]
        if body and not body[0].isspace():
            continue
        body = body.split("#", 1)[0].strip()
        if not body:
            continue
        option, sep, value = body.partition("=")
        if not sep:
            option, _, value = body.partition(" ")
        found.append((number, option.strip(), value.strip().strip("\"'")))
    return found


class Slurm:
    """The cluster, seen through its command-line clients; one instance per loop."""

    def __init__(self, run=proc.run, timeout=30.0, environ=None):
        self._run = run
        self.timeout = timeout
        self._env = proc.child_env({"SLURM_TIME_FORMAT": "standard"}, drop_prefixes=("SQUEUE_",)) \
            if environ is None else environ

    def squeue_argv(self):
        # -t all: finished jobs stay visible for MinJobAge, so the loop learns how a job ended
        # (cancelled, timed out, failed) instead of guessing from its disappearance.
        return ["squeue", "--me", "-h", "-t", "all", "-o", SQUEUE_FORMAT]

    def observe(self):
        """All of this user's jobs in one squeue call. Raises CommandError: the state is then unknown."""
        done = self._run(self.squeue_argv(), timeout=self.timeout, env=self._env)
        jobs, junk = parse_squeue(done.stdout)
        for line in junk[:3]:
            log.warning("squeue printed a line we cannot read: %r", line)
        return jobs

    def sbatch_argv(self, script, chdir, exclude=(), output=None):
        argv = ["sbatch", "--parsable", "--chdir=%s" % chdir]
        if exclude:
            argv.append("--exclude=%s" % ",".join(exclude))
        if output:
            argv.append("--output=%s" % output)
        argv.append(script)
        return argv

    def submit(self, script, chdir, exclude=(), output=None, extra_env=None):
        """Submit a batch script and return its job id."""
        env = dict(self._env)
        env.update(extra_env or {})
        argv = self.sbatch_argv(script, chdir, exclude, output)
        done = self._run(argv, timeout=self.timeout, env=env, cwd=chdir)
        job_id = done.stdout.strip().split(";")[0].strip()
        if not job_id.isdigit():
            raise CommandError(argv, done.returncode, done.stderr,
                               message="sbatch printed no job id: %r" % done.stdout.strip()[:200])
        return job_id

    def cancel(self, job_ids):
        """scancel the given jobs in one call."""
        job_ids = list(job_ids)
        if job_ids:
            self._run(["scancel"] + job_ids, timeout=self.timeout, env=self._env)

    def set_comment(self, job_id, comment):
        self._run(["scontrol", "update", "JobId=%s" % job_id, "Comment=%s" % comment],
                  timeout=self.timeout, env=self._env)

    def clear_exclude(self, job_id):
        """Let a pending job run anywhere after all (spreading must not make it unschedulable)."""
        self._run(["scontrol", "update", "JobId=%s" % job_id, "ExcNodeList="],
                  timeout=self.timeout, env=self._env)
