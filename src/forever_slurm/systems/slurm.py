"""Everything that talks to Slurm: builds squeue/sbatch/scontrol/scancel argv and parses their output."""

import functools
import operator
import logging
import os
import re
import secrets
import time
from typing import NamedTuple, Optional

from . import proc
from ..common.errors import CommandError
from ..common.validate import ascii_digits

log = logging.getLogger(__name__)

# squeue prints literal text between %-fields, and unsized fields in full (opts.c). Each row starts
# with a random marker and its fields are separated by another, both new for every call: a Comment
# or job name (which jobs and users write freely: '|', line breaks, \x1e, \u2028) cannot contain a
# marker it has never seen, so it can neither split a row nor make one up. (--json would also do,
# but its schema changes with every Slurm release; this works on all of them.) %Z, the working
# directory, is set by our sbatch --chdir and cannot be changed by the job: it tells our jobs apart.
# Start and end are absolute times (%S, %e) rather than time used/left (%M, %L): a row then reads the
# same from one cycle to the next, so a steady cycle parses each row once and looks it up after that.
FIELD_CODES = ("%A", "%t", "%j", "%N", "%S", "%e", "%r", "%Z", "%k")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"     # SLURM_TIME_FORMAT=standard, local time

PENDING_STATES = frozenset(["PD", "CF", "RQ", "RH", "RF", "RS", "RD", "SI", "SO", "S", "ST"])
RUNNING_STATES = frozenset(["R"])
ACTIVE_STATES = PENDING_STATES | RUNNING_STATES

_STATE_RE = re.compile(r"^[A-Z]{1,4}$", re.ASCII)
_TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}$", re.ASCII)


class Job(NamedTuple):
    """One row of squeue, as plain values."""
    job_id: str
    state: str          # compact state: PD, R, CG, ...
    name: str
    nodes: str          # '' while pending
    time_left: Optional[int]   # seconds at the observation; None when unlimited or unknown
    time_used: Optional[int]   # seconds since it started (0 when not started)
    reason: str
    comment: str        # '' when unset
    workdir: str = ""   # the job's working directory: our sbatch sets it to this root's slurm-output

    @property
    def running(self):
        return self.state in RUNNING_STATES

    @property
    def pending(self):
        return self.state in PENDING_STATES

    @property
    def active(self):
        return self.state in ACTIVE_STATES


class Markers(NamedTuple):
    """The row and field markers of one squeue call (see FIELD_CODES)."""
    row: str
    field: str

    @property
    def format(self):
        return self.row + self.field.join(FIELD_CODES)


def new_markers():
    token = secrets.token_hex(8)
    return Markers("<r%s>" % token, "<f%s>" % token)


def parse_squeue(text, markers, now=None, cache=None):
    """Rows of `squeue -h -o markers.format` -> (jobs, unreadable rows). Never raises.

    now: the time of the observation (time left and used are counted from it). cache: a dict kept
    between calls; rows already seen are not parsed again (at 10,000 jobs that is most of a cycle)."""
    now = time.time() if now is None else now
    cache = {} if cache is None else cache
    fresh = {}
    jobs = []
    junk = []
    # The field marker is new for every call; _KEY_FIELD stands in for it, so a row reads the same
    # from one call to the next and its text alone is the cache key (one replace for the whole text).
    chunks = text.replace(markers.field, _KEY_FIELD).split(markers.row)
    if chunks[0].strip():
        junk.append(chunks[0].replace(_KEY_FIELD, markers.field))
    get, append, new = cache.get, jobs.append, _new_tuple
    for chunk in chunks[1:]:
        row = get(chunk, _UNSEEN)   # (the key keeps the line end squeue adds after each row)
        if row is _UNSEEN:
            row = _row_from(_without_line_end(chunk).split(_KEY_FIELD))
        fresh[chunk] = row
        if row is None:
            junk.append(_without_line_end(chunk).replace(_KEY_FIELD, markers.field))
            continue
        # The Job at `now`, built here rather than in a function: this runs once a job a cycle.
        job_id, state, name, nodes, used_from, ends, reason, comment, workdir = row
        left = None
        if ends is not None:
            left = int(ends - now)
            if left < 0:
                left = 0
        used = 0 if used_from is None or used_from > now else int(now - used_from)
        append(new(Job, (job_id, state, name, nodes, left, used, reason, comment, workdir)))
    cache.clear()
    cache.update(fresh)             # only this observation's rows: the cache cannot grow without bound
    return jobs, junk


# Never in an argv (unlike the markers, which `ps` shows): a job cannot write it into its Comment.
_KEY_FIELD = "<k%s>" % secrets.token_hex(8)
_UNSEEN = object()      # a row not in the cache (None there is a row known to be unreadable)


class _Row(NamedTuple):
    """One row's fields with absolute times: what does not change between two observations."""
    job_id: str
    state: str
    name: str
    nodes: str          # '' while pending
    used_from: Optional[float]  # its start, when time used counts (not pending, start known)
    ends: Optional[float]
    reason: str
    comment: str
    workdir: str


def _row_from(parts):
    """A _Row from one row's fields, or None when they are not what squeue prints."""
    if len(parts) != len(FIELD_CODES):
        return None
    job_id, state, name, nodes, started, ends, reason, workdir, comment = parts
    state = state.strip()
    if not ascii_digits(job_id.strip()) or not _STATE_RE.match(state):
        return None
    has_run = state in RUNNING_STATES or state not in PENDING_STATES
    return _Row(job_id.strip(), state, name.strip(), nodes.strip() if has_run else "",
                parse_time(started) if has_run else None, parse_time(ends), reason.strip(),
                "" if comment.strip() == "(null)" else comment.strip(), workdir.strip())


def _without_line_end(chunk):
    return chunk[:-1] if chunk.endswith("\n") else chunk


_new_tuple = tuple.__new__     # Job(...) by keyword-free construction: a third of the cost, 10,000 times a cycle


def parse_time(text):
    """Epoch seconds of a SLURM_TIME_FORMAT=standard time; None for N/A, NONE, Unknown, garbage."""
    text = text.strip()
    if len(text) != 19 or not _TIME_RE.match(text):
        return None
    year, month, day = int(text[0:4]), int(text[5:7]), int(text[8:10])
    hour, minute, second = int(text[11:13]), int(text[14:16]), int(text[17:19])
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 61):
        return None
    try:
        # strptime would cost ten times more; mktime with isdst=-1 reads local time like it.
        return time.mktime((year, month, day, hour, minute, second, 0, 0, -1))
    except (ValueError, OverflowError):
        return None


def submitted_from(job, workdirs):
    """True when the job's working directory is one of `workdirs` (normalised paths): ours."""
    return bool(job.workdir) and _normpath(job.workdir) in workdirs


# A user's jobs run in a handful of directories: normalise each once, not 10,000 times a cycle.
_normpath = functools.lru_cache(maxsize=256)(os.path.normpath)


class Slurm:
    """The cluster, seen through its command-line clients; one instance per loop."""

    def __init__(self, run=proc.run, timeout=30.0, environ=None):
        self._run = run
        self.timeout = timeout
        self._reported = set()     # unreadable rows already logged
        self._rows = {}            # row text -> parsed row, from the last observation
        self._env = proc.child_env({"SLURM_TIME_FORMAT": "standard"}, drop_prefixes=("SQUEUE_",)) \
            if environ is None else environ

    def squeue_argv(self, markers):
        # -t all: finished jobs stay visible for MinJobAge, so the loop learns how a job ended
        # (cancelled, timed out, failed) instead of guessing from its disappearance.
        return ["squeue", "--me", "-h", "-t", "all", "-o", markers.format]

    def observe(self):
        """All of this user's jobs in one squeue call. Raises CommandError: the state is then unknown."""
        markers = new_markers()
        done = self._run(self.squeue_argv(markers), timeout=self.timeout, env=self._env)
        jobs, junk = parse_squeue(done.stdout, markers, time.time(), self._rows)
        if junk and not jobs:
            # Exit 0, and not one row: an error printed to stdout (a site's wrapper), not an empty queue,
            # which prints nothing. Taken as no answer, so that no job of ours counts as gone.
            shown = junk[0].replace(markers.field, "|").strip()[:200]
            raise CommandError(self.squeue_argv(markers), done.returncode, done.stderr,
                               "squeue printed no row we can read: %r" % shown)
        for row in junk:
            shown = repr(row.replace(markers.field, "|")[:200])
            if shown not in self._reported:
                if len(self._reported) < 1000:
                    self._reported.add(shown)
                log.warning("squeue printed a row we cannot read (skipped): %s", shown)
        return jobs

    def sbatch_argv(self, script, chdir, exclude=(), output=None, job_name=None):
        argv = ["sbatch", "--parsable", "--chdir=%s" % chdir]
        if job_name:
            # The loop counts jobs by name: on the command line it beats $SBATCH_JOB_NAME and the script.
            argv.append("--job-name=%s" % job_name)
        if exclude:
            argv.append("--exclude=%s" % ",".join(exclude))
        if output:
            argv.append("--output=%s" % output)
        argv.append(script)
        return argv

    def submit(self, script, chdir, exclude=(), output=None, extra_env=None, job_name=None):
        """Submit a batch script and return its job id."""
        env = dict(self._env)
        env.update(extra_env or {})
        argv = self.sbatch_argv(script, chdir, exclude, output, job_name)
        done = self._run(argv, timeout=self.timeout, env=env, cwd=chdir)
        job_id = done.stdout.strip().split(";")[0].strip()
        if not ascii_digits(job_id):
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


def job_number(job_id):
    """A job id as a number to sort by; 0 for an id that is not ASCII digits (squeue's are checked
    where they enter, but memory keys also hold intents)."""
    return int(job_id) if ascii_digits(job_id) else 0


_job_id_of = operator.attrgetter("job_id")


def oldest_first(jobs):
    """Jobs sorted by job id, lowest (oldest) first; with the int keys made in C when every id is a
    number (always, from squeue): no Python call per job, 10,000 times a pass."""
    try:
        keys = list(map(int, map(_job_id_of, jobs)))
    except ValueError:
        return sorted(jobs, key=lambda job: job_number(job.job_id))
    return [jobs[i] for i in sorted(range(len(jobs)), key=keys.__getitem__)]


# sbatch's refusals that mean "no node could ever run this job as asked" (an --exclude or --nodelist
# that leaves none): slurm_errno.c's ESLURM_REQUESTED_NODE_CONFIG_UNAVAILABLE and its kin.
_NODE_REFUSALS = ("requested node configuration is not available", "node count specification invalid",
                  "invalid node name specified")


def refused_for_nodes(error):
    """True when a CommandError of sbatch says the nodes it was asked to use (or avoid) leave none."""
    text = ("%s %s" % (getattr(error, "stderr", "") or "", error)).lower()
    return any(refusal in text for refusal in _NODE_REFUSALS)
