"""Planning: from desired counts, observed jobs and memory to actions, routes and the next look.

Pure functions only (no I/O, no clock): the loop passes `now` in, executes the returned actions
and records their outcomes (outcomes.py). Modelled on the Kubernetes ReplicaSet controller:
observe -> diff -> act, with expectations (a submission counts as pending until squeue shows it)
and per-service crash-loop backoff. Each service is planned on its own.
"""

import functools
import itertools
import traceback
from typing import Dict, List, NamedTuple, Optional

from ..systems import slurm_facts
from ..systems.slurm import ACTIVE_STATES, RUNNING_STATES, job_number, oldest_first
from ..systems.traefik import Server
from . import model
from .model import CARRYING, Cancel, ClearExclude, JobMemory, Memory, Phase, Plan, ServiceMemory, Submit

# Hot loops below test `job.state in RUNNING_STATES` rather than the property job.running: the same
# test without a Python call, 10,000 times a pass. A job's phase is model.phase, its stopping
# JobMemory.stopping: one definition each.

def renew_lead(service_memory, policy, warning_seconds=0):
    """Seconds before its end a job is replaced: what a replacement of this service needed from
    submission to ready (queue wait and start-up; the 90th percentile of the recent ones) plus the
    longest recent drain (answers in flight finish; at least FS_DRAIN_SECONDS) plus a margin, or
    FS_RENEW_LEAD; plus the script's own --signal warning time and the 60 s Slurm may send it early,
    so that the job is drained before its server starts to stop. It does not grow with the number
    of instances: each job due is renewed at once, beside the others (missing_count)."""
    if policy.renew_lead is not None:
        lead = policy.renew_lead
    else:
        startup = percentile(service_memory.startup, 0.9) if service_memory.startup else policy.default_startup
        drain = max((policy.drain_seconds,) + tuple(service_memory.drains))
        lead = startup + drain + policy.renew_margin
    return lead + (warning_seconds + 60 if warning_seconds else 0)


def job_lead(lead, job):
    """A running job's own renewal lead: the service's, but at most half the job's time limit. A lead
    longer than that (replacements that waited out a long queue, or jobs of a few minutes) would have
    every job renewed as soon as it starts, and its replacement too: a job then costs more than twice
    what it serves, and the service churns. Half keeps the cost at most twice and still renews every
    job before its end."""
    if job.time_used is None or job.time_left is None:
        return lead
    return min(lead, (job.time_left + job.time_used) / 2.0)


def percentile(values, share):
    """The nearest-rank percentile of values (share 0.9: the 90th)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(-(-share * len(ordered) // 1)) - 1))]


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
    unavailable: frozenset = frozenset()    # nodes down or drained: its jobs there go, none go there
    time_limit: Optional[float] = None      # what a job submitted now may ask (a maintenance window)

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
    jobs: Dict[str, JobMemory]          # the memory of jobs this plan changed
    service: ServiceMemory
    events: List[str]
    view: object = None                 # the ServiceView after the plan (its next look is judged on it)
    stopping_now: frozenset = frozenset()   # jobs this plan cancels
    missing: int = 0                    # jobs it still lacks after its submissions
    submitted: bool = False             # it submits a job now (to be looked for soon)


def service_views(desired, jobs, memory, now, policy, observed_at, warnings=None, unavailable=frozenset(),
                  time_limits=None):
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
        for job in oldest_first(active.get(name, [])):
            (running if job.state in RUNNING_STATES else pending).append(job)
        job_mem = by_service.get(name, {})
        unseen, ready_ids = _unseen_and_ready(job_mem, observed_ids)
        svc = memory.services.get(name, ServiceMemory())
        views[name] = ServiceView(
            name=name, wanted=desired.get(name, 0), running=running, pending=pending, unseen=unseen,
            jobs=job_mem, service=svc,
            lead=renew_lead(svc, policy, (warnings or {}).get(name, 0)),
            now=now, age=max(0.0, now - observed_at), ready_ids=ready_ids, unavailable=frozenset(unavailable),
            time_limit=(time_limits or {}).get(name))
    return views


def _unseen_and_ready(job_mem, observed_ids):
    """(sorted ids submitted but not in squeue yet, frozenset of ids ready to route), in one pass."""
    unseen, ready = [], []
    for job_id, m in job_mem.items():
        if m.seen_at is None and job_id not in observed_ids:
            unseen.append(job_id)
        if m.ready_since is not None and m.url and not m.stopping:
            ready.append(job_id)
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


def plan(desired, jobs, memory, now, policy, observed_at=None, fresh=True, warnings=None, inflight=None,
         steady=60.0, waking=False, blocked=(), unavailable=frozenset(), time_limits=None, follow=False):
    """Decide actions, routes and the next look at Slurm for every service. With fresh=False (a probe
    pass on an older observation) only routing and draining change: nothing is submitted or cancelled.
    warnings: {service: seconds of its --signal warning} (see renew_lead).
    inflight: {job_id: requests in flight on its backend, or None when unknown} of draining jobs.
    steady: the longest wait between two looks (FS_SLEEP_INTERVAL); waking: requests are held for a
    service with no backend (its job's start is looked for more often); blocked: services whose
    files cannot be submitted now (their error is reported elsewhere): nothing is submitted for them.
    unavailable: nodes Slurm says are down or drained; time_limits: {service: seconds a job submitted
    now may ask} where a maintenance window shortens it (maintenance.py). follow: a follower's pass
    (another login node leads): routes only, no drain begins here (the leader's memory says which).

    Each service is planned on its own: a bug met while planning one is returned in `failed`
    (its memory and Traefik file stay as they were) and the others go on."""
    observed_at = now if observed_at is None else observed_at
    inflight = inflight or {}
    job_mem = dict(memory.jobs)
    services = dict(memory.services)
    actions, events, routes, failed = [], [], {}, {}
    budget = policy.max_submit_per_look
    look = (float(steady), "steady")
    for name, view in service_views(desired, jobs, memory, now, policy, observed_at, warnings, unavailable,
                                    time_limits).items():
        try:
            result = plan_service(view, policy, fresh and not follow, 0 if name in blocked else budget, inflight,
                                  follow)
            look = min(look, service_next_look(result.view, policy, inflight, waking, result.stopping_now,
                                               0 if name in blocked else result.missing, result.submitted))
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
    return Plan(actions, routes, Memory(job_mem, services), events, failed, max(0.0, look[0]), look[1])


def plan_service(view, policy, fresh, budget, inflight, follow=False):
    """The phases of one service's plan, in order."""
    events = []
    service = _reset_backoff_if_healthy(view, policy, events)
    view = view._replace(service=service)
    retiring = retiring_jobs(view)
    jobs = {}
    if not follow:
        for job in retiring:
            m = view.memory_of(job)
            if m.renewing_since is None:
                jobs[job.job_id] = m._replace(renewing_since=view.now)
        view = _with_memory(view, jobs)
    for job in [] if follow else drains_to_start(view, retiring, policy):
        jobs[job.job_id] = view.memory_of(job)._replace(drain_since=view.now)
        events.append("job %s of %s draining (%ds left)" % (job.job_id, view.name, view.left(job)))
    view = _with_memory(view, jobs)
    actions = []
    kept, count, idle = _keepers(view, retiring)
    if fresh:
        cancels, surplus_drains = cancels_due(view, retiring, policy, inflight, kept, count)
        for job in surplus_drains:
            # It may be streaming answers: drained first, cancelled once nothing is in flight.
            jobs[job.job_id] = view.memory_of(job)._replace(drain_since=view.now)
            events.append("job %s of %s draining (more than %d instances wanted)" % (job.job_id, view.name,
                                                                                    view.wanted))
        view = _with_memory(view, jobs)
        actions += cancels
        # The surplus drains just started carry the service no longer; nothing else changed the keepers.
        count -= len(surplus_drains)
        submits = submissions(view, retiring, cancels, policy, budget, count, idle)
        actions += submits
        actions += exclusions_to_clear(view, policy)
        missing = missing_count(view, retiring, cancels, policy, count, idle) - len(submits)
    else:
        submits, missing = [], missing_count(view, retiring, (), policy, count, idle)
    stopping_now = frozenset(a.job_id for a in actions if isinstance(a, Cancel))
    return ServicePlan(actions, servers_for(view, stopping_now), jobs, service, events,
                       view._replace(service=service), stopping_now, missing, bool(submits))


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
    """Running jobs within the renewal lead of their end (or that entered it before: the lead moves as
    start-ups are measured, and a job half renewed must not count again), and those Slurm cut short
    (preemption) or whose node went, soonest end first."""
    near = []
    age, lead, mem = view.age, view.lead, view.jobs
    for job in view.running:
        m = mem.get(job.job_id)
        if job.time_left is not None:
            left = job.time_left - age      # view.left(job), inline: every running job, every pass
            # (job_lead is at most the lead: asked only of jobs within it, not of every job every pass)
            if left <= lead and left <= job_lead(lead, job) or (m is not None and m.renewing_since is not None) \
                    or _must_go(view, job, m):
                near.append((left, job))
        elif _must_go(view, job, m):
            near.append((float("inf"), job))
    near.sort(key=_first)
    return [job for _, job in near]


def _must_go(view, job, m):
    """A running job to drain and replace now, whatever its time left: Slurm cut its end short
    (preemption), or its node is down or drained (it takes nothing new, and may be rebooted)."""
    if m is not None and m.cut_short_at is not None:
        return True
    if not view.unavailable or not job.nodes:
        return False
    return job.nodes in view.unavailable or \
        any(node in view.unavailable for node in slurm_facts.expand_hostlist(job.nodes))


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
        if live - 1 >= view.wanted or (live > 1 and view.left(job) <= policy.drain_seconds + 5) \
                or _must_go(view, job, mem[job.job_id]):
            chosen.append(job)
            live -= 1
    return chosen


def _keepers(view, retiring):
    """(jobs that will carry the service, how many with those submitted but not seen yet, how many
    take no room): the jobs in a CARRYING phase that are not retiring (not draining, stopping or
    held); held jobs and those scancel already stopped (leaving squeue) take no room in the surge."""
    retiring_ids = {job.job_id for job in retiring}
    kept, idle = [], 0
    known = view.jobs.get
    for job in itertools.chain(view.running, view.pending):
        m = known(job.job_id) or _UNKNOWN
        phase = model.phase(m, job.state)
        if phase == Phase.HELD or m.cancelled_at is not None:
            idle += 1
        elif phase in CARRYING and job.job_id not in retiring_ids:
            kept.append(job)
    return kept, len(kept) + len(view.unseen), idle


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


def missing_count(view, retiring, cancels, policy, count, idle=0):
    """How many jobs the service lacks now: up to N, plus while renewing FS_SURGE replacements ahead
    for each job being renewed (all at once: renewals never wait on each other, so each costs one
    overlap). count: the jobs that will carry the service; idle: those that take no room (_keepers)."""
    cancelled = {c.job_id for c in cancels}
    gone_soon = sum(1 for job in retiring if job.job_id in cancelled)
    present = len(view.running) + len(view.pending) + len(view.unseen) - gone_soon - idle
    room = view.wanted + policy.surge * max(1, len(retiring)) - present
    return max(0, min(view.wanted - count, room))


def submissions(view, retiring, cancels, policy, budget, count, idle=0):
    """Submit what is missing (missing_count), within the look's budget, never during crash backoff,
    and one at a time while spreading a small gap over nodes."""
    number = min(missing_count(view, retiring, cancels, policy, count, idle), budget)
    if number <= 0 or view.now < view.service.next_try:
        return []
    if policy.spread and not retiring and 1 < number + _placing(view, policy) <= policy.spread_ramp_max:
        # Where Slurm puts a job is known only once it runs: submit one at a time, and the next
        # once the last has a node (or has waited spread_patience), so that it can avoid that
        # node. Larger gaps are filled at once (capacity first).
        if _placing(view, policy):
            return []
        number = 1
    cancelled = {c.job_id for c in cancels}
    # Slurm starts nothing on a down or drained node anyway; naming them (a few) keeps a job from
    # asking for one the moment it comes back half-repaired.
    avoid = set(sorted(view.unavailable)[:MAX_AVOIDED])
    if policy.spread:
        avoid |= {job.nodes for job in view.running if job.nodes and job.job_id not in cancelled}
    why = "renewal" if retiring else "missing"
    return [Submit(view.name, tuple(sorted(avoid)), why, view.time_limit) for _ in range(number)]


def _placing(view, policy):
    """Jobs of the service submitted within spread_patience that have had no node yet. A job that ran
    and is pending again (requeued: HELD) or being cancelled is not being placed for us."""
    placing = 0
    for job_id in itertools.chain(view.unseen, (job.job_id for job in view.pending)):
        m = view.jobs.get(job_id)
        if m is not None and m.submitted_at is not None and view.now - m.submitted_at < policy.spread_patience \
                and m.held_since is None and m.cancelled_at is None:
            placing += 1
    return placing


def exclusions_to_clear(view, policy):
    """Pending jobs that avoided busy nodes for longer than spread_patience may run anywhere."""
    found = []
    for job in view.pending:
        m = view.jobs.get(job.job_id)
        if m is not None and m.excluded and m.submitted_at is not None \
                and view.now - m.submitted_at > policy.spread_patience:
            found.append(ClearExclude(job.job_id, view.name))
    return found


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


MAX_AVOIDED = 64           # down or drained nodes named in --exclude at most
FOLLOW_UP_DELAY = 2.0       # seconds between looks while a fresh submission starts
FOLLOW_UP_WINDOW = 30.0     # ... for this long after the submission (or the quickest recent start); then every half its age
FOLLOW_UP_LOOKS = 15        # looks in that first stretch at most (30 s / 2 s)
WAKING_LOOK_SHARE = 0.1     # while requests are held: a look every tenth of the job's wait so far
MIN_LOOK_GAP = 1.0          # the planner never asks for two looks closer than this


def service_next_look(view, policy, inflight, waking=False, stopping_now=frozenset(), missing=0,
                      submitted=False):
    """(seconds, why) until this service next needs a fresh look at Slurm.

    The steady interval can be long (sites limit squeue calls) because everything that needs Slurm
    sooner is known: a job entering its renewal lead, a drain that has lasted long enough or has
    nothing left in flight, a scancel to retry, a crash backoff that expires, a backend that stopped
    answering since the last look (did its job end?), instances missing with nothing on its way (a
    higher count, a held request), and a submission not yet started: looked for every 2 s for its
    first 30 s, then every half its age (a job that starts late is seen late by a bounded share, at a
    few calls in all), every tenth of its age while requests wait for it. Where this service's
    quickest recent start took longer (a busy queue), the first stretch is that long and its looks a
    tenth of it apart: as many looks, none spent before a start was ever seen to come."""
    best = (float("inf"), "steady")
    now = view.now
    observed_at = now - view.age
    waiting_since = now if submitted else None
    for job_id, m in view.jobs.items():
        if m.cancelled_at is not None or job_id in stopping_now:
            continue
        if m.unready_at is not None and m.unready_at > observed_at and m.ready_since is None:
            best = min(best, (0.0, "job %s stopped answering" % job_id))
        if m.submitted_at is not None and not m.url and now >= m.submitted_at:
            waiting_since = m.submitted_at if waiting_since is None else max(waiting_since, m.submitted_at)
    if waiting_since is not None:
        age = now - waiting_since
        if waking:
            delay = max(MIN_LOOK_GAP, age * WAKING_LOOK_SHARE)
        else:
            quickest = min(view.service.startup) if view.service.startup else 0.0
            window = max(FOLLOW_UP_WINDOW, quickest)
            delay = max(FOLLOW_UP_DELAY, window / FOLLOW_UP_LOOKS) if age < window else age / 2
        best = min(best, (delay, "start of a job of %s" % view.name))
    for job in view.running:
        left = view.left(job)
        lead = job_lead(view.lead, job)
        if left is not None and left > lead:
            best = min(best, (left - lead, "renewal of job %s" % job.job_id))
        m = view.jobs.get(job.job_id)
        if m is None or job.job_id in stopping_now or (m.drain_since is None and m.cancel_retry_at is None):
            continue    # (the common case, decided without the two checks below)
        if m.drain_since is not None and m.cancelled_at is None:
            best = min(best, _drain_due(job, m, view, policy, inflight))
        if m.cancel_retry_at is not None and m.cancelled_at is None:
            best = min(best, (m.cancel_retry_at - now, "scancel retry of job %s" % job.job_id))
    if missing > 0:
        if view.service.next_try > now:
            best = min(best, (view.service.next_try - now, "backoff of %s ends" % view.name))
        elif waiting_since is None:
            best = min(best, (0.0, "%d instance(s) of %s missing" % (missing, view.name)))
    return max(0.0, best[0]), best[1]


def _drain_due(job, m, view, policy, inflight):
    """(seconds, why) until a draining job may be cancelled: now once drain_finished says so, else
    when its shortest drain is over, else at its longest."""
    if drain_finished(m, inflight.get(job.job_id), view.now, policy, view.left(job)):
        return 0.0, "drain of job %s done" % job.job_id
    for due in (policy.drain_seconds, policy.drain_max_seconds):
        if m.drain_since + due > view.now:
            return m.drain_since + due - view.now, "drain of job %s" % job.job_id
    return 0.0, "drain of job %s done" % job.job_id


def _healthy_for(job_mem, now):
    times = [now - m.ready_since for m in job_mem.values() if m.ready_since is not None]
    return max(times) if times else 0.0


def _first(pair):
    return pair[0]


# Server(url, weight) without the keyword handling of its __new__: servers_for makes one per routed job.
_server = functools.partial(tuple.__new__, Server)


_UNKNOWN = JobMemory(service="")     # what the planner knows of a job it has no memory of: nothing


def _newest_first(job):
    return -job_number(job.job_id)
