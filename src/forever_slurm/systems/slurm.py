"""Everything that talks to Slurm: builds squeue/sbatch/scontrol/scancel argv and parses their output."""

import functools
import operator
import logging
import os
import re
import secrets
import time
from typing import List, NamedTuple, Optional

from . import proc, slurm_facts
from ..common.errors import CommandError
from ..common.validate import ascii_digits

log = logging.getLogger(__name__)

# squeue prints literal text between %-fields, and unsized fields in full (opts.c). Each row is framed:
# it starts with a random marker, its fields are separated by another and it ends with a third, all
# new for every call. A Comment or job name (which jobs and users write freely: '|', line breaks,
# \x1e, \u2028) cannot contain a marker it has never seen, so it can neither split a row nor make one
# up, and text a site's wrapper prints around the rows (a banner, a footer, a notice glued to the
# last row) lies outside every frame: set aside, never read as a row or a field. squeue frames its
# header the same way (the -h is left off on purpose): a header proves the answer is squeue's own, so
# a queue with no row is empty only when its header is there. (--json would also do, but its schema
# changes with every Slurm release; this works on all of them.) %Z, the working directory, is set
# by our sbatch --chdir and cannot be changed by the job: it tells our jobs apart, compared as bytes.
# Start and end are absolute times (%S, %e) rather than time used/left (%M, %L): a row then reads the
# same from one cycle to the next, so a steady cycle parses each row once and looks it up after that.
FIELD_CODES = ("%A", "%t", "%j", "%N", "%S", "%e", "%r", "%Z", "%k")
HEADER_JOB_ID = "JOBID"               # the title squeue prints for %A in its header, on every release
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"     # SLURM_TIME_FORMAT=standard, local time

# SI (signaling) is a running job being sent a signal (seen for a moment at its preemption): running.
PENDING_STATES = frozenset(["PD", "CF", "RQ", "RH", "RF", "RS", "RD", "SO", "S", "ST"])
RUNNING_STATES = frozenset(["R", "SI"])
ACTIVE_STATES = PENDING_STATES | RUNNING_STATES

_STATE_RE = re.compile(r"^[A-Z]{1,4}$", re.ASCII)
_TIME_RE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}$", re.ASCII)
# What squeue (getopt) says on Slurm < 20.11 about --me, and what an argparse wrapper would say.
_NO_ME = re.compile(r"(unrecognized|unknown|invalid|unsupported) (option|argument)s?\b.*--me\b", re.I)
_SBATCH_ID = re.compile(r"^\s*([0-9]+)(?:;[^\s;]+)?\s*$|Submitted batch job ([0-9]+)\b", re.ASCII)


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
    starts_in: Optional[int] = None     # pending: seconds until Slurm's estimated start (None: none yet)

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
    """The frame of one squeue call's rows (see FIELD_CODES): a row starts with `row`, its fields are
    separated by `field`, and it ends with `end`."""
    row: str
    field: str
    end: str

    @property
    def format(self):
        return self.row + self.field.join(FIELD_CODES) + self.end


def new_markers():
    token = secrets.token_hex(8)
    return Markers("<r%s>" % token, "<f%s>" % token, "<e%s>" % token)


class Listing(NamedTuple):
    """One squeue answer, read: the jobs, and what was set aside."""
    jobs: List[Job]
    unreadable: List[str]   # framed rows whose fields are not what squeue prints (skipped)
    outside: str            # text outside every frame (a banner, a footer, a wrapper's words), stripped
    header: bool            # squeue's own header was there: the answer is squeue's, even with no row
    duplicates: List[str]   # ids of jobs listed more than once (each counted once)


def parse_squeue(text, markers, now=None, cache=None):
    """The Listing of `squeue -o markers.format` output. Never raises.

    now: the time of the observation (time left and used are counted from it). cache: a dict kept
    between calls; rows already seen are not parsed again (at 10,000 jobs that is most of a cycle).
    Text decoded with surrogateescape keeps the workdir's bytes; every other field gets U+FFFD."""
    now = time.time() if now is None else now
    cache = {} if cache is None else cache
    fresh = {}
    jobs, unreadable, outside, duplicates = [], [], [], []
    header = False
    seen = set()
    escaped = _has_escapes(text)
    # The field marker is new for every call; _KEY_FIELD stands in for it, so a row reads the same
    # from one call to the next and its text alone is the cache key (one replace for the whole text).
    chunks = text.replace(markers.field, _KEY_FIELD).split(markers.row)
    outside.append(chunks[0])
    get, append, new = cache.get, jobs.append, _new_tuple
    for chunk in chunks[1:]:
        body, framed, after = chunk.partition(markers.end)
        if not framed:          # a row cut short (or the rest of a row-shaped line): not a row
            unreadable.append(_shown(chunk, markers))
            continue
        outside.append(after)
        row = get(body, _UNSEEN)
        if row is _UNSEEN:
            row = _row_from(body.split(_KEY_FIELD), escaped)
        fresh[body] = row
        if row is None:
            unreadable.append(_shown(body, markers))
            continue
        if row is _HEADER:
            header = True
            continue
        job_id, state, name, nodes, used_from, ends, reason, comment, workdir, starts = row
        if job_id in seen:      # listed twice (a federation's sibling, a wrapper asking twice): one job
            duplicates.append(job_id)
            continue
        seen.add(job_id)
        # The Job at `now`, built here rather than in a function: this runs once a job a cycle.
        left = None
        if ends is not None:
            left = int(ends - now)
            if left < 0:
                left = 0
        used = 0 if used_from is None or used_from > now else int(now - used_from)
        starts_in = None if starts is None else max(0, int(starts - now))
        append(new(Job, (job_id, state, name, nodes, left, used, reason, comment, workdir, starts_in)))
    cache.clear()
    cache.update(fresh)             # only this observation's rows: the cache cannot grow without bound
    rest = "".join(outside).strip()
    return Listing(jobs, unreadable, _shown(rest, markers) if rest else "", header, duplicates)


# Never in an argv (unlike the markers, which `ps` shows): a job cannot write it into its Comment.
_KEY_FIELD = "<k%s>" % secrets.token_hex(8)
_UNSEEN = object()      # a row not in the cache (None there is a row known to be unreadable)
_HEADER = object()      # squeue's header row


def _has_escapes(text):
    """Whether text holds bytes kept by surrogateescape (an encode is a copy for ASCII: 1,000x a regex)."""
    try:
        text.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _shown(text, markers):
    """Text set aside, fit for a log line: markers as squeue's usual '|', odd bytes as U+FFFD."""
    return _clean(text.replace(_KEY_FIELD, "|").replace(markers.row, "").replace(markers.end, ""))


def _clean(text):
    """Bytes kept by surrogateescape that are not UTF-8 become U+FFFD, as everywhere else."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


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
    starts: Optional[float] = None  # pending: Slurm's estimate of its start (%S), when it has one


def _row_from(parts, escaped=False):
    """A _Row from one row's fields, _HEADER for squeue's header, or None when they are not what squeue
    prints. escaped: the text may hold non-UTF-8 bytes (kept as is in the workdir only)."""
    if len(parts) != len(FIELD_CODES):
        return None
    job_id, state, name, nodes, started, ends, reason, workdir, comment = parts
    if escaped:
        name, nodes, reason, comment = _clean(name), _clean(nodes), _clean(reason), _clean(comment)
    state = state.strip()
    if job_id.strip() == HEADER_JOB_ID:
        return _HEADER
    if not ascii_digits(job_id.strip()) or not _STATE_RE.match(state):
        return None
    has_run = state in RUNNING_STATES or state not in PENDING_STATES
    return _Row(job_id.strip(), state, name.strip(), nodes.strip() if has_run else "",
                parse_time(started) if has_run else None, parse_time(ends), reason.strip(),
                "" if comment.strip() == "(null)" else comment.strip(), workdir.strip(),
                None if has_run else parse_time(started))


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
    """True when the job's working directory is one of `workdirs` (normalised paths): ours.

    Compared as bytes: squeue prints the path's bytes (read with surrogateescape), and a path of ours
    is os.fsencode'd, so a root such as /tmp/j\xf6rg matches under any locale and on every Python."""
    return bool(job.workdir) and _squeue_path(job.workdir) in _local_paths(frozenset(workdirs))


# A user's jobs run in a handful of directories: normalise each once, not 10,000 times a cycle.
@functools.lru_cache(maxsize=256)
def _squeue_path(text):
    return os.path.normpath(text.encode("utf-8", "surrogateescape"))


@functools.lru_cache(maxsize=16)
def _local_paths(paths):
    return frozenset(os.path.normpath(os.fsencode(path)) for path in paths)


class Slurm:
    """The cluster, seen through its command-line clients; one instance per loop."""

    def __init__(self, run=proc.run, timeout=30.0, environ=None, uid=None):
        self._run = run
        self.timeout = timeout
        self._reported = set()     # unreadable rows already logged
        self._rows = {}            # row text -> parsed row, from the last observation
        self._env = proc.child_env({"SLURM_TIME_FORMAT": "standard"}, drop_prefixes=("SQUEUE_",)) \
            if environ is None else environ
        self._uid = os.getuid() if uid is None else uid
        self.without_me = ""       # why squeue is asked with -u <uid> instead of --me ("": it is not)
        self._outside_seen = False

    def squeue_argv(self, markers):
        # -t all: finished jobs stay visible for MinJobAge, so the loop learns how a job ended
        # (cancelled, timed out, failed) instead of guessing from its disappearance. No -h: the
        # header is the proof of an answer (see FIELD_CODES).
        who = ["-u", str(self._uid)] if self.without_me else ["--me"]
        return ["squeue"] + who + ["-t", "all", "-o", markers.format]

    def observe(self):
        """All of this user's jobs in one squeue call. Raises CommandError: the state is then unknown."""
        markers = new_markers()
        done = self._squeue(markers)
        listing = parse_squeue(done.stdout, markers, time.time(), self._rows)
        if not listing.jobs and (listing.unreadable or not listing.header):
            # Exit 0, and not one row nor squeue's header: an error printed to stdout (a site's
            # wrapper) or nothing at all, not an empty queue. Taken as no answer, so that no job of
            # ours counts as gone.
            shown = (listing.unreadable[:1] or [listing.outside])[0].strip()[:200]
            raise CommandError(self.squeue_argv(markers), done.returncode, done.stderr,
                               "squeue printed no row we can read and not its header: %r" % shown)
        if listing.outside:
            # A banner (or a footer) is printed at every call: said once, then only in debug detail.
            (log.debug if self._outside_seen else log.warning)(
                "squeue printed text that is not a row (set aside%s): %r", "" if self._outside_seen else
                "; said once", listing.outside[:200])
            self._outside_seen = True
        for row in listing.unreadable:
            self._warn_once("squeue printed a row we cannot read (skipped): %r" % row[:200])
        for job_id in sorted(set(listing.duplicates)):
            self._warn_once("squeue listed job %s more than once: counted once" % job_id)
        return listing.jobs

    def _squeue(self, markers):
        """squeue's answer; on a Slurm without --me (< 20.11), found at the first call, with -u <uid>."""
        try:
            return self._run(self.squeue_argv(markers), timeout=self.timeout, env=self._env,
                             errors="surrogateescape")
        except CommandError as exc:
            why = _no_me(exc)
            if self.without_me or not why:
                raise
            self.without_me = why
            log.warning("squeue has no --me here (Slurm older than 20.11; it said: %s): asking with -u %d "
                        "(your uid) from now on", why, self._uid)
        return self._run(self.squeue_argv(markers), timeout=self.timeout, env=self._env, errors="surrogateescape")

    def _warn_once(self, message):
        if message not in self._reported:
            if len(self._reported) < 1000:
                self._reported.add(message)
            log.warning("%s", message)

    def node_problems(self):
        """{node: slurm_facts.NodeProblem} of the nodes that are down, drained or failing (one RPC:
        `sinfo -R` lists only nodes with a reason). Raises CommandError."""
        token = secrets.token_hex(8)
        row, field, end = "<r%s>" % token, "<f%s>" % token, "<e%s>" % token
        done = self._run(["sinfo", "-h", "-R", "-o", row + field.join(("%N", "%t", "%E")) + end],
                         timeout=self.timeout, env=self._env)
        return slurm_facts.parse_node_problems(done.stdout, row, field, end)

    def reservations(self):
        """[slurm_facts.Reservation] of the cluster (one RPC). Raises CommandError."""
        done = self._run(["scontrol", "-o", "show", "reservation"], timeout=self.timeout, env=self._env)
        return slurm_facts.parse_reservations(done.stdout)

    def sbatch_argv(self, script, chdir, exclude=(), output=None, job_name=None, time_limit=None):
        argv = ["sbatch", "--parsable", "--chdir=%s" % chdir]
        if job_name:
            # The loop counts jobs by name: on the command line it beats $SBATCH_JOB_NAME and the script.
            argv.append("--job-name=%s" % job_name)
        if time_limit:
            # Shorter than the script asks (a maintenance window starts before it would end): the
            # command line beats the script and $SBATCH_TIMELIMIT.
            argv.append("--time=%s" % slurm_facts.time_limit_text(time_limit))
        if exclude:
            argv.append("--exclude=%s" % ",".join(exclude))
        if output:
            argv.append("--output=%s" % output)
        argv.append(script)
        return argv

    def submit(self, script, chdir, exclude=(), output=None, extra_env=None, job_name=None, time_limit=None):
        """Submit a batch script and return its job id. time_limit: seconds, when shorter than its own."""
        env = dict(self._env)
        env.update(extra_env or {})
        argv = self.sbatch_argv(script, chdir, exclude, output, job_name, time_limit)
        done = self._run(argv, timeout=self.timeout, env=env, cwd=chdir)
        job_id = sbatch_job_id(done.stdout)
        if job_id is None:
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
    """True when a CommandError of sbatch says the nodes it was asked to use (or avoid) leave none,
    not that the job asks more than any node has (CPUs, memory: "can not be satisfied")."""
    text = ("%s %s" % (getattr(error, "stderr", "") or "", error)).lower()
    return any(refusal in text for refusal in _NODE_REFUSALS) and "can not be satisfied" not in text


def sbatch_job_id(stdout):
    """The job id in sbatch's output, or None. A site may print more around it (an accounting notice,
    a quota): the id is the last line that is `N` or `N;cluster` (--parsable) or says
    `Submitted batch job N` (a wrapper that drops --parsable)."""
    found = None
    for line in stdout.splitlines():
        match = _SBATCH_ID.search(line)
        if match:
            found = match.group(1) or match.group(2)
    return found


def _no_me(exc):
    """The line of squeue's error saying it has no --me, or ""."""
    for line in (exc.stderr or "").splitlines():
        if _NO_ME.search(line):
            return line.strip()[:200]
    return ""


class SqueueCheck(NamedTuple):
    """What `check` says about squeue: ok, and one line ("" when it answers as expected)."""
    ok: bool
    line: str


def check_squeue(run=proc.run, timeout=15.0):
    """Ask squeue as the loop does, once: does it answer, and with --me or -u <uid>?"""
    cluster = Slurm(run=run, timeout=timeout)
    try:
        cluster.observe()
    except CommandError as exc:
        return SqueueCheck(False, "squeue: %s; the loop submits nothing until it answers" % exc)
    if cluster.without_me:
        return SqueueCheck(True, "ok: squeue here has no --me (Slurm older than 20.11: %s); the loop asks "
                                 "with -u %d (your uid) instead" % (cluster.without_me, cluster._uid))
    return SqueueCheck(True, "")
