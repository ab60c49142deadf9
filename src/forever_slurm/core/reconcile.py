"""The decision: from desired counts, observed jobs, probe results and memory to actions and routes.

Pure functions only (no I/O, no clock): the loop passes `now` in, executes the returned actions
and records their outcomes with the record_* functions. Modelled on the Kubernetes ReplicaSet
controller: observe -> diff -> act, with expectations (a submission counts as pending until squeue
shows it) and per-service crash-loop backoff.

Every job given to these functions is one of ours: the loop keeps only the jobs whose working
directory is this root's slurm-output folder (slurm.submitted_from), so a job we did not submit
is never counted, routed or cancelled, whatever its name.
"""

import functools
import itertools
import operator
import traceback
from typing import Dict, List, NamedTuple, Optional, Tuple

from ..common import backoff, urls
from ..common.validate import ascii_digits
from ..systems.slurm import ACTIVE_STATES, RUNNING_STATES

# Hot loops below test `job.state in RUNNING_STATES` rather than the property job.running, and
# JobMemory.stopping's two fields inline: the same test without a Python call, 10,000 times a pass.

# Final states that say something else ended the job (scancel, time limit, preemption, node failure).
ENDED_BY_OTHERS_STATES = frozenset(["CA", "TO", "PR", "NF", "DL", "RV"])


class Policy(NamedTuple):
    surge: int = 1                  # extra jobs per service during renewal
    drain_seconds: float = 20.0     # weight 0 at least this long before a drained job is stopped
    drain_max_seconds: float = 600.0    # ... and at most this long while requests are still in flight
    renew_lead: Optional[float] = None   # fixed lead time; None: from measured start-up
    renew_margin: float = 60.0
    default_startup: float = 60.0   # start-up guess before any job of the service was measured
    spread: bool = True
    spread_patience: float = 60.0   # then a pending job may run on any node after all
    spread_ramp_max: int = 4        # up to this many missing jobs are submitted one per cycle
    expect_timeout: float = 120.0   # a submitted job not seen by then is considered lost
    crash_window: float = 120.0     # a job ending sooner after its start counts as a crash
    publish_timeout: float = 600.0  # a running job with no URL by then counts as a crash
    backoff_base: float = 10.0
    backoff_max: float = 300.0
    backoff_reset: float = 600.0    # healthy this long: the crash count starts over
    probe_failure_threshold: int = 2
    max_submit_per_cycle: int = 100


INTENT_PREFIX = "intent:"   # memory key of a submission recorded before its sbatch ran


class JobMemory(NamedTuple):
    """What the loop remembers of one of its jobs between cycles (persisted in state.json)."""
    service: str
    submitted_at: Optional[float] = None
    seen_at: Optional[float] = None         # first seen in squeue
    running_since: Optional[float] = None
    url: str = ""
    comment_problem: str = ""
    ready_since: Optional[float] = None
    ever_ready: bool = False
    probe_failures: int = 0
    probe_detail: str = ""
    drain_since: Optional[float] = None
    cancelled_at: Optional[float] = None    # scancel succeeded
    cancel_failures: int = 0                # scancel failed this often (the job stays unrouted)
    cancel_retry_at: Optional[float] = None
    excluded: Tuple[str, ...] = ()
    publish_late: bool = False

    @property
    def stopping(self):
        """We asked Slurm to stop it (successfully or not yet): never routed, never counted."""
        return self.cancelled_at is not None or self.cancel_failures > 0


class ServiceMemory(NamedTuple):
    failures: int = 0
    next_try: float = 0.0
    last_error: str = ""
    startup: Tuple[float, ...] = ()         # recent submit->ready seconds
    drains: Tuple[float, ...] = ()          # recent drain->cancel seconds (long answers make them long)


class Memory(NamedTuple):
    jobs: Dict[str, JobMemory]
    services: Dict[str, ServiceMemory]


def empty_memory():
    return Memory(jobs={}, services={})


def is_intent(key):
    return key.startswith(INTENT_PREFIX)


class ProbeResult(NamedTuple):
    ok: bool
    detail: str = ""
    refused: bool = False       # connection refused: nobody listens, no need to wait for a 2nd failure


class Submit(NamedTuple):
    service: str
    exclude: Tuple[str, ...] = ()
    reason: str = ""


class Cancel(NamedTuple):
    job_id: str
    service: str
    reason: str = ""


class ClearExclude(NamedTuple):
    job_id: str
    service: str


class Server(NamedTuple):
    """One backend; weight 0 drains it: no new requests, in-flight ones finish."""
    url: str
    weight: int = 1


class Plan(NamedTuple):
    actions: List[object]
    routes: Dict[str, List[Server]]     # services without an entry keep their current Traefik file
    memory: Memory
    events: List[str]
    failed: Dict[str, str]              # service -> traceback of a bug met while planning it


@functools.lru_cache(maxsize=65536)
def parse_comment(comment, service):
    """(url, problem) from a job's Comment 'traefik,<service>,<url>'; (None, '') when unpublished."""
    if not comment:
        return None, ""
    parts = comment.split(",", 2)
    if len(parts) != 3 or parts[0] != "traefik":
        return None, "comment %r is not traefik,<service>,<url>" % comment[:120]
    _, named, url = parts
    if named != service:
        return None, "comment names service %r, but the job is %r" % (named[:60], service)
    if "{{" in url:
        return None, "URL %r contains '{{'" % url[:120]
    try:
        return urls.parse_backend_url(url).text, ""
    except ValueError as exc:
        return None, "URL %r is not http(s)://host:port (%s)" % (url[:120], exc)


def backoff_delay(failures, policy, key=""):
    return backoff.delay(failures, policy.backoff_base, policy.backoff_max, key, jitter=0.2 if key else 0.0)


def _fail(services, service, error, now, policy):
    old = services.get(service, ServiceMemory())
    failures = old.failures + 1
    services[service] = old._replace(failures=failures, next_try=now + backoff_delay(failures, policy),
                                     last_error=error)


# -- observing ------------------------------------------------------------------------------------
def absorb(memory, jobs, now, policy):
    """Fold a fresh squeue observation of our jobs into memory; jobs that vanished become events
    (and crashes). A job in squeue that memory does not know (state.json lost, or a kill between
    sbatch and saving) is adopted, using up the oldest intent of its service if there is one."""
    job_mem = dict(memory.jobs)
    services = dict(memory.services)
    seen, ended_states, completing = _split_observed(jobs)
    known, eventful = _absorb_known(job_mem, seen, now, policy)
    events = _absorb_in_order(job_mem, services, seen, known, eventful, now, policy)
    for job_id in sorted(k for k in memory.jobs if k not in seen):
        old = memory.jobs[job_id]
        if job_id in completing or job_id not in job_mem:
            continue    # CG: ending, but its final state (how it ended) is not known yet
        if old.seen_at is None and old.submitted_at is not None and 0 <= now - old.submitted_at < policy.expect_timeout:
            continue    # submitted, not visible yet: still expected
        del job_mem[job_id]
        if is_intent(job_id):
            events.append("a submission of %s recorded before a restart never showed up in squeue; "
                          "it was probably never made" % old.service)
            continue
        _forget_ended(job_id, old, ended_states.get(job_id, ""), now, policy, services, events)
    return Memory(job_mem, services), events


def _split_observed(jobs):
    """({job_id: active job}, {job_id: final state of an ended job}, {ids of completing jobs})."""
    seen, ended_states, completing = {}, {}, set()
    for job in jobs:
        if job.state in ACTIVE_STATES:
            seen[job.job_id] = job
        else:
            ended_states[job.job_id] = job.state
            if job.state == "CG":
                completing.add(job.job_id)
    return seen, ended_states, completing


def _absorb_known(job_mem, seen, now, policy):
    """Known jobs folded in at once when they say nothing new (at 10,000 jobs, nearly all of them);
    returns ({job_id: (memory, events, crash)} of the others, [ids left for _absorb_in_order])."""
    known, eventful = {}, []
    for job_id, job in seen.items():
        old = job_mem.get(job_id)
        if old is not None:
            if (old.url and not old.comment_problem and old.running_since is not None and old.seen_at is not None
                    and job.state in RUNNING_STATES and parse_comment(job.comment, job.name)[0] == old.url):
                continue    # running, published as before: _absorb_job would find nothing new
            result = _absorb_job(old, job, now, policy)
            if not result[1] and not result[2]:
                job_mem[job_id] = result[0]
                continue
            known[job_id] = result
        eventful.append(job_id)
    return known, eventful


def _absorb_in_order(job_mem, services, seen, known, eventful, now, policy):
    """New and changing jobs in job id order, so events, adoptions and crash counts come out in it."""
    events = []
    intents = _intents_by_service(job_mem) if len(known) < len(eventful) else {}
    for job_id in sorted(eventful, key=_number):
        job = seen[job_id]
        result = known.get(job_id)
        if result is None:
            waiting = intents.get(job.name)
            if waiting:
                intent_key = waiting.pop(0)
                old = job_mem.pop(intent_key)._replace(service=job.name)
                events.append("job %s of %s found in squeue: the submission recorded before a restart"
                              % (job_id, job.name))
            else:
                old = JobMemory(service=job.name)
                events.append("job %s of %s found in squeue (%s), adopted" % (job_id, job.name, job.state))
            result = _absorb_job(old, job, now, policy)
        new, found, crash = result
        if crash:
            _fail(services, job.name, crash, now, policy)
        events += found
        job_mem[job_id] = new
    return events


def _intents_by_service(job_mem):
    intents = [(m.submitted_at or 0, key, m.service) for key, m in job_mem.items() if is_intent(key)]
    found = {}
    for _, key, service in sorted(intents):
        found.setdefault(service, []).append(key)
    return found


def _absorb_job(old, job, now, policy):
    """(memory, events, crash message or '') of one active job after this observation."""
    new = old
    events = []
    running = job.running
    if old.seen_at is None:
        new = new._replace(seen_at=now)
    if running and old.running_since is None:
        new = new._replace(running_since=now - (job.time_used or 0))
        events.append("job %s of %s started on %s" % (job.job_id, job.name, job.nodes or "?"))
    url, problem = parse_comment(job.comment, job.name) if running else (None, "")
    url = url or ""
    if url != old.url:
        new = new._replace(url=url, ready_since=None, probe_failures=0)
        if url:
            events.append("job %s of %s published %s" % (job.job_id, job.name, url))
    if problem != old.comment_problem:
        new = new._replace(comment_problem=problem)
        if problem:
            events.append("job %s of %s: %s; not routed" % (job.job_id, job.name, problem))
    crash = ""
    if (running and not url and not new.publish_late and new.running_since is not None
            and now - new.running_since > policy.publish_timeout):
        new = new._replace(publish_late=True)
        crash = "job %s published no URL within %ds" % (job.job_id, policy.publish_timeout)
        events.append("%s (%s)" % (crash, job.name))
    return new, events, crash


def _forget_ended(job_id, old, final, now, policy, services, events):
    """A job that left squeue (or reached a final state): an event, and a crash when it was one."""
    lived = None if old.running_since is None else now - old.running_since
    how = " (%s)" % final if final else ""
    if old.cancelled_at is not None:
        events.append("job %s of %s is gone (cancelled by forever-slurm)" % (job_id, old.service))
        return
    if final in ENDED_BY_OTHERS_STATES and old.seen_at is not None:
        events.append("job %s of %s ended%s after %s; not counted as a crash" % (
            job_id, old.service, how, "?" if lived is None else "%ds" % lived))
        return
    if old.seen_at is None:
        why = "never appeared in squeue"
    elif not old.ever_ready:
        why = "ended%s without becoming ready" % how + ("" if lived is None else " after %ds" % lived)
    elif final and lived is not None and lived < policy.crash_window:
        # (A job that was ready and left no final state behind gets the benefit of the doubt:
        # Slurm purges finished jobs after MinJobAge, 300 s by default.)
        why = "ended%s %ds after it started" % (how, lived)
    else:
        events.append("job %s of %s ended%s after %s" % (job_id, old.service, how,
                                                        "?" if lived is None else "%ds" % lived))
        return
    _fail(services, old.service, "job %s %s" % (job_id, why), now, policy)
    events.append("job %s of %s %s; next submission of %s in %ds" % (
        job_id, old.service, why, old.service, services[old.service].next_try - now))


def apply_probes(memory, results, now, policy):
    """Readiness: a job is routed after one good probe and leaves after failed ones."""
    job_mem = dict(memory.jobs)
    services = dict(memory.services)
    events = []
    for job_id in sorted(_probes_that_matter(job_mem, results)):
        old = job_mem[job_id]
        result = results[job_id]
        if result.ok:
            new = old._replace(probe_failures=0, probe_detail="")
            if old.ready_since is None:
                new = new._replace(ready_since=now, ever_ready=True)
                if old.submitted_at is not None and not old.ever_ready:
                    svc = services.get(old.service, ServiceMemory())
                    startup = (svc.startup + (round(now - old.submitted_at, 1),))[-5:]
                    services[old.service] = svc._replace(startup=startup)
                events.append("job %s of %s ready at %s" % (job_id, old.service, old.url))
        else:
            failures = old.probe_failures + 1
            new = old._replace(probe_failures=failures, probe_detail=result.detail)
            if old.ready_since is not None and (result.refused or failures >= policy.probe_failure_threshold):
                new = new._replace(ready_since=None)
                events.append("job %s of %s not ready (%s); removed from Traefik" % (
                    job_id, old.service, result.detail))
        job_mem[job_id] = new
    return Memory(job_mem, services), events


def _probes_that_matter(job_mem, results):
    """Ids of probed jobs with a URL whose result changes something: a ready job that is still fine
    (the common case at 10,000 jobs) is left out before anything is sorted."""
    found = []
    for job_id, result in results.items():
        old = job_mem.get(job_id)
        if old is None or not old.url:
            continue
        if result.ok and old.ready_since is not None and not old.probe_failures and not old.probe_detail:
            continue
        found.append(job_id)
    return found


def probe_targets(memory, jobs):
    """{job_id: url} of running jobs that published a valid URL and are not being stopped."""
    found = {}
    known = memory.jobs.get
    for job in jobs:
        if job.state in RUNNING_STATES:
            m = known(job.job_id)
            if m is not None and m.url and m.cancelled_at is None and not m.cancel_failures:   # not m.stopping
                found[job.job_id] = m.url
    return {job_id: found[job_id] for job_id in sorted(found)}


def renew_lead(desired_count, service_memory, policy, warning_seconds=0):
    """Seconds before its end a job is replaced: one start-up plus drain per instance, plus a margin
    (with a surge of 1 the instances are renewed one after the other), or FS_RENEW_LEAD; plus the
    script's own --signal warning time and the 60 s Slurm may send it early, so that the job is
    drained before its server starts to stop. The drain is the longest recently measured one (a
    drain waits for the answers in flight), at least FS_DRAIN_SECONDS."""
    if policy.renew_lead is not None:
        lead = policy.renew_lead
    else:
        startup = max(service_memory.startup) if service_memory.startup else policy.default_startup
        drain = max((policy.drain_seconds,) + tuple(service_memory.drains))
        lead = max(desired_count, 1) * (startup + drain) + policy.renew_margin
    return lead + (warning_seconds + 60 if warning_seconds else 0)


# -- planning ---------------------------------------------------------------------------------------
class ServiceView(NamedTuple):
    """One service as the planner sees it this pass; built once by `service_views`."""
    name: str
    wanted: int
    running: List[object]           # Jobs, oldest first
    pending: List[object]           # Jobs, oldest first
    unseen: List[str]               # submitted (or intended), not yet in squeue
    jobs: Dict[str, JobMemory]      # this service's memory, by job id
    service: ServiceMemory
    lead: float
    now: float
    age: float                      # seconds since the observation
    ready_ids: frozenset = frozenset()  # jobs that are ready, published and not being stopped

    def memory_of(self, job):
        return self.jobs.get(job.job_id) or JobMemory(service=self.name)

    def left(self, job):
        """Seconds the job has left now, or None when unlimited/unknown."""
        return None if job.time_left is None else job.time_left - self.age

    def ready(self, job):
        return job.job_id in self.ready_ids


class ServicePlan(NamedTuple):
    actions: List[object]
    servers: Optional[List[Server]]     # None: no Traefik file for this service
    jobs: Dict[str, JobMemory]
    service: ServiceMemory
    events: List[str]


def service_views(desired, jobs, memory, now, policy, observed_at, warnings=None):
    """{service: ServiceView} for every wanted service and every service we still have jobs of.

    Groups jobs and memory by service once, so a pass costs O(jobs), not O(jobs x services)."""
    active = {}
    for job in jobs:
        if job.state in ACTIVE_STATES:
            active.setdefault(job.name, []).append(job)
    observed_ids = {job.job_id for job in jobs}
    by_service = {}
    for job_id, m in memory.jobs.items():
        by_service.setdefault(m.service, {})[job_id] = m
    views = {}
    for name in sorted(set(desired) | set(by_service)):
        running, pending = [], []
        for job in _oldest_first_sorted(active.get(name, [])):
            (running if job.state in RUNNING_STATES else pending).append(job)
        job_mem = by_service.get(name, {})
        unseen, ready_ids = _unseen_and_ready(job_mem, observed_ids)
        svc = memory.services.get(name, ServiceMemory())
        views[name] = ServiceView(
            name=name, wanted=desired.get(name, 0), running=running, pending=pending, unseen=unseen,
            jobs=job_mem, service=svc,
            lead=renew_lead(desired.get(name, 0), svc, policy, (warnings or {}).get(name, 0)),
            now=now, age=max(0.0, now - observed_at), ready_ids=ready_ids)
    return views


def _unseen_and_ready(job_mem, observed_ids):
    """(sorted ids submitted but not in squeue yet, frozenset of ids ready to route), in one pass."""
    unseen, ready = [], []
    for job_id, m in job_mem.items():
        if m.seen_at is None and job_id not in observed_ids:
            unseen.append(job_id)
        if m.ready_since is not None and m.url and m.cancelled_at is None and not m.cancel_failures:
            ready.append(job_id)    # (not m.stopping)
    return sorted(unseen), frozenset(ready)


def drain_finished(memory, inflight_count, now, policy, time_left):
    """May a draining job be cancelled now? Not before FS_DRAIN_SECONDS (Traefik must have applied its
    weight 0; for servers whose requests cannot be counted that is all the wait there is). Then as soon
    as nothing is in flight, or FS_DRAIN_MAX_SECONDS after the drain began with a stream still
    flowing, or once the job has reached its own end (its time limit stops it anyway).
    inflight_count: requests in flight on the backend (see inflight.py), None when unknown."""
    waited = now - memory.drain_since
    if waited < policy.drain_seconds:
        return False
    if inflight_count is None or inflight_count <= 0 or waited >= policy.drain_max_seconds:
        return True
    return time_left is not None and time_left <= 0


def plan(desired, jobs, memory, now, policy, observed_at=None, fresh=True, warnings=None, inflight=None):
    """Decide actions and routes for every service. With fresh=False (a probe-only tick on an older
    observation) only routing and draining change: nothing is submitted or cancelled.
    warnings: {service: seconds of its --signal warning} (see renew_lead).
    inflight: {job_id: requests in flight on its backend, or None when unknown} of draining jobs.

    Each service is planned on its own: a bug met while planning one is returned in `failed`
    (its memory and Traefik file stay as they were) and the others go on."""
    observed_at = now if observed_at is None else observed_at
    job_mem = dict(memory.jobs)
    services = dict(memory.services)
    actions, events, routes, failed = [], [], {}, {}
    budget = policy.max_submit_per_cycle
    for name, view in service_views(desired, jobs, memory, now, policy, observed_at, warnings).items():
        try:
            result = plan_service(view, policy, fresh, budget, inflight or {})
        except Exception:   # noqa: a planner bug must cost one service, not all of them
            failed[name] = traceback.format_exc()
            continue
        actions += result.actions
        events += result.events
        budget -= sum(1 for a in result.actions if isinstance(a, Submit))
        job_mem.update(result.jobs)
        services[name] = result.service
        if result.servers is not None:
            routes[name] = result.servers
    return Plan(actions, routes, Memory(job_mem, services), events, failed)


def plan_service(view, policy, fresh, budget, inflight):
    """The phases of one service's plan, in order."""
    events = []
    service = _reset_backoff_if_healthy(view, policy, events)
    view = view._replace(service=service)
    retiring = retiring_jobs(view)
    jobs = {}
    for job in drains_to_start(view, retiring, policy):
        jobs[job.job_id] = view.memory_of(job)._replace(drain_since=view.now)
        events.append("job %s of %s draining (%ds left)" % (job.job_id, view.name, view.left(job)))
    view = _with_memory(view, jobs)
    actions = []
    if fresh:
        kept, count = _keepers(view, retiring)
        cancels, surplus_drains = cancels_due(view, retiring, policy, inflight, kept, count)
        for job in surplus_drains:
            # It may be streaming answers: drained first, cancelled once nothing is in flight.
            jobs[job.job_id] = view.memory_of(job)._replace(drain_since=view.now)
            events.append("job %s of %s draining (more than %d instances wanted)" % (job.job_id, view.name,
                                                                                    view.wanted))
        view = _with_memory(view, jobs)
        actions += cancels
        # The surplus drains just started carry the service no longer; nothing else changed the keepers.
        actions += submissions(view, retiring, cancels, policy, budget, count - len(surplus_drains))
        actions += exclusions_to_clear(view, policy)
    stopping_now = {a.job_id for a in actions if isinstance(a, Cancel)}
    return ServicePlan(actions, servers_for(view, stopping_now), jobs, service, events)


def _with_memory(view, changed):
    if not changed:
        return view
    merged = dict(view.jobs)
    merged.update(changed)
    return view._replace(jobs=merged)


def _reset_backoff_if_healthy(view, policy, events):
    svc = view.service
    if svc.failures and _healthy_for(view.jobs, view.now) >= policy.backoff_reset:
        events.append("%s healthy for %ds: crash count reset" % (view.name, policy.backoff_reset))
        return svc._replace(failures=0, next_try=0.0, last_error="")
    return svc


def retiring_jobs(view):
    """Running jobs within the renewal lead of their end, soonest end first."""
    near = []
    age, lead = view.age, view.lead
    for job in view.running:
        if job.time_left is not None:
            left = job.time_left - age      # view.left(job), inline: every running job, every pass
            if left <= lead:
                near.append((left, job))
    near.sort(key=_first)
    return [job for _, job in near]


def drains_to_start(view, retiring, policy):
    """Retiring jobs to drain now: while the others still carry N, or when a job ends anyway soon."""
    if not retiring:
        return []
    ready, mem = view.ready_ids, view.jobs      # every ready id has its memory there
    live = 0
    for job in view.running:
        if job.job_id in ready and mem[job.job_id].drain_since is None:
            live += 1
    chosen = []
    for job in retiring:
        if job.job_id not in ready or mem[job.job_id].drain_since is not None:
            continue
        if live - 1 >= view.wanted or (live > 1 and view.left(job) <= policy.drain_seconds + 5):
            chosen.append(job)
            live -= 1
    return chosen


def _keepers(view, retiring):
    """Jobs that will carry the service: active or expected, and neither retiring, draining nor stopping."""
    retiring_ids = {job.job_id for job in retiring}
    kept = []
    known = view.jobs.get       # a job without memory is neither draining nor stopping
    for job in itertools.chain(view.running, view.pending):
        if job.job_id not in retiring_ids:
            m = known(job.job_id)
            if m is None or (m.drain_since is None and m.cancelled_at is None and not m.cancel_failures):
                kept.append(job)    # (not m.stopping)
    return kept, len(kept) + len(view.unseen)


def _may_cancel(m, now):
    return m.cancelled_at is None and (m.cancel_retry_at is None or now >= m.cancel_retry_at)


def cancels_due(view, retiring, policy, inflight, kept, count):
    """(cancels, jobs to drain): drained jobs with nothing left in flight (drain_finished), retries of
    a failed scancel, and the newest surplus jobs when N went down; a ready surplus job is drained
    first rather than cancelled, since it may be streaming an answer. kept, count: _keepers(view)."""
    cancels = []
    retiring_ids = {job.job_id for job in retiring}
    known = view.jobs.get       # a job without memory is neither draining nor stopping
    for job in itertools.chain(view.running, view.pending):
        m = known(job.job_id)
        if m is None or (m.drain_since is None and not m.cancel_failures) or not _may_cancel(m, view.now):
            continue
        if m.cancel_failures:
            cancels.append(Cancel(job.job_id, view.name, "retrying a failed scancel"))
        elif m.drain_since is not None and drain_finished(m, inflight.get(job.job_id), view.now, policy,
                                                          view.left(job)):
            why = "renewal" if job.job_id in retiring_ids else "fewer instances"
            cancels.append(Cancel(job.job_id, view.name, "drained for %s" % why))
    chosen = {c.job_id for c in cancels}
    drains = []
    excess = count - view.wanted
    if excess > 0:
        kept_ids = {job.job_id for job in kept}
        newest = sorted(view.pending, key=_newest_first) + \
            sorted([j for j in view.running if not view.ready(j)], key=_newest_first) + \
            sorted([j for j in view.running if view.ready(j)], key=_newest_first)
        for job in newest:
            if excess <= 0:
                break
            if job.job_id in kept_ids and job.job_id not in chosen:
                if view.ready(job):
                    drains.append(job)
                else:
                    cancels.append(Cancel(job.job_id, view.name, "more than %d instances wanted" % view.wanted))
                    chosen.add(job.job_id)
                excess -= 1
    return cancels, drains


def submissions(view, retiring, cancels, policy, budget, count):
    """Submit what is missing: up to N plus the surge while renewing, within the cycle's budget,
    never during crash backoff, and one per cycle while spreading a small gap over nodes.
    count: the jobs that will carry the service (_keepers)."""
    cancelled = {c.job_id for c in cancels}
    gone_soon = sum(1 for job in retiring if job.job_id in cancelled)
    room = view.wanted + policy.surge - (len(view.running) + len(view.pending) + len(view.unseen) - gone_soon)
    number = max(0, min(view.wanted - count, room, budget))
    if not number or view.now < view.service.next_try:
        return []
    if policy.spread and 1 < number <= policy.spread_ramp_max:
        # Where Slurm puts a job is known only once it runs: submit one per cycle, so the
        # next one can avoid its node. Larger gaps are filled at once (capacity first).
        number = 1
    exclude = ()
    if policy.spread:
        exclude = tuple(sorted({job.nodes for job in view.running if job.nodes and job.job_id not in cancelled}))
    why = "renewal" if retiring else "missing"
    return [Submit(view.name, exclude, why) for _ in range(number)]


def exclusions_to_clear(view, policy):
    """Pending jobs that avoided busy nodes for longer than spread_patience may run anywhere."""
    return [ClearExclude(job.job_id, view.name) for job in view.pending
            if view.memory_of(job).excluded and view.memory_of(job).submitted_at is not None
            and view.now - view.memory_of(job).submitted_at > policy.spread_patience]


def servers_for(view, stopping_now):
    """Traefik's servers: ready jobs, oldest first, draining ones at weight 0 (unless all are)."""
    if view.wanted <= 0 and not any(view.ready(j) for j in view.running):
        return None
    servers = []
    ready, mem = view.ready_ids, view.jobs     # every ready id has its memory there
    for job in view.running:
        job_id = job.job_id
        if job_id in ready and job_id not in stopping_now:
            m = mem[job_id]
            servers.append(_server((m.url, 0 if m.drain_since is not None else 1)))
    if view.wanted > 0 and servers and all(s.weight == 0 for s in servers):
        servers = [s._replace(weight=1) for s in servers]   # draining beats 503, while the service is wanted
    return servers


def next_look(views, policy, steady):
    """(seconds, why) until the planner next needs a fresh look at Slurm.

    The steady interval can be long (sites limit squeue calls) because everything that needs Slurm
    sooner has a known time: a job entering its renewal lead, a drain that has lasted long enough,
    a scancel to retry, a crash backoff that expires. (Backends that stop answering are noticed by
    the probes between looks, and make the loop look at once.)"""
    best = (float(steady), "steady")
    for view in views.values():
        for job in view.running:
            left = view.left(job)
            if left is not None and left > view.lead and left - view.lead <= best[0]:
                best = min(best, (left - view.lead, "renewal of job %s" % job.job_id))
            m = view.memory_of(job)
            if m.drain_since is None and m.cancel_retry_at is None:
                continue    # (the common case, decided without the two checks below)
            if m.drain_since is not None and m.cancelled_at is None:
                # The shortest drain is due at a known time; after that the loop looks as soon as the
                # requests in flight are done (Controller: drain_finished on a probe pass), or at the longest.
                for due in (policy.drain_seconds, policy.drain_max_seconds):
                    if m.drain_since + due > view.now:
                        best = min(best, (m.drain_since + due - view.now, "drain of job %s" % job.job_id))
                        break
            if m.cancel_retry_at is not None and m.cancelled_at is None:
                best = min(best, (m.cancel_retry_at - view.now, "scancel retry of job %s" % job.job_id))
        missing = view.wanted - (len(view.running) + len(view.pending) + len(view.unseen))
        if missing > 0 and view.service.next_try > view.now:
            best = min(best, (view.service.next_try - view.now, "backoff of %s ends" % view.name))
    return max(0.0, best[0]), best[1]


# -- outcomes ---------------------------------------------------------------------------------------
def record_intents(memory, submits, now):
    """Memory with one intent per Submit, to be saved before sbatch runs; returns (memory, keys)."""
    jobs = dict(memory.jobs)
    keys = []
    for index, action in enumerate(submits):
        key = "%s%s:%.3f:%d" % (INTENT_PREFIX, action.service, now, index)
        jobs[key] = JobMemory(service=action.service, submitted_at=now, excluded=tuple(action.exclude))
        keys.append(key)
    return memory._replace(jobs=jobs), keys


def record_submitted(memory, service, job_id, now, excluded=(), intent=None):
    """sbatch gave job_id: it replaces its intent."""
    jobs = dict(memory.jobs)
    jobs.pop(intent, None)
    jobs[job_id] = JobMemory(service=service, submitted_at=now, excluded=tuple(excluded))
    return memory._replace(jobs=jobs)


def record_submit_failed(memory, service, error, now, policy, intent=None):
    jobs = dict(memory.jobs)
    jobs.pop(intent, None)
    services = dict(memory.services)
    _fail(services, service, error, now, policy)
    return Memory(jobs, services)


def record_cancelled(memory, job_ids, now):
    """scancel succeeded; a drained job's drain time is kept, as the renewal lead must make room for it."""
    jobs = dict(memory.jobs)
    services = dict(memory.services)
    for job_id in job_ids:
        if job_id in jobs:
            m = jobs[job_id]
            jobs[job_id] = m._replace(cancelled_at=now, cancel_retry_at=None)
            if m.drain_since is not None:
                svc = services.get(m.service, ServiceMemory())
                services[m.service] = svc._replace(drains=(svc.drains + (round(now - m.drain_since, 1),))[-5:])
    return Memory(jobs, services)


def record_cancel_failed(memory, job_ids, now, policy):
    """The job stays out of Traefik and out of the count; scancel is retried with backoff."""
    jobs = dict(memory.jobs)
    for job_id in job_ids:
        if job_id in jobs:
            m = jobs[job_id]
            failures = m.cancel_failures + 1
            jobs[job_id] = m._replace(cancel_failures=failures,
                                      cancel_retry_at=now + backoff_delay(failures, policy, job_id))
    return memory._replace(jobs=jobs)


def record_exclude_cleared(memory, job_id):
    jobs = dict(memory.jobs)
    if job_id in jobs:
        jobs[job_id] = jobs[job_id]._replace(excluded=())
    return memory._replace(jobs=jobs)


def _healthy_for(job_mem, now):
    times = [now - m.ready_since for m in job_mem.values() if m.ready_since is not None]
    return max(times) if times else 0.0


def _first(pair):
    return pair[0]


# Server(url, weight) without the keyword handling of its __new__: servers_for makes one per routed job.
_server = functools.partial(tuple.__new__, Server)


def _number(job_id):
    return int(job_id) if ascii_digits(job_id) else 0


def _oldest_first(job):
    try:
        return int(job.job_id)      # squeue's ids are checked ASCII digits where they enter (slurm.py)
    except ValueError:
        return 0


def _newest_first(job):
    return -_oldest_first(job)


_job_id_of = operator.attrgetter("job_id")


def _oldest_first_sorted(jobs):
    """sorted(jobs, key=_oldest_first), with the int keys made in C when every id is a number (always,
    from squeue): no Python call per job."""
    try:
        keys = list(map(int, map(_job_id_of, jobs)))
    except ValueError:
        return sorted(jobs, key=_oldest_first)
    return [jobs[i] for i in sorted(range(len(jobs)), key=keys.__getitem__)]
