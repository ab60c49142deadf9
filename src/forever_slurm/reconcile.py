"""The decision: from desired counts, observed jobs, probe results and memory to actions and routes.

Pure functions only (no I/O, no clock): the loop passes `now` in, executes the returned actions
and stores the returned memory. Modelled on the Kubernetes ReplicaSet controller:
observe -> diff -> act, with expectations (a submission counts as pending until squeue shows it)
and per-service crash-loop backoff.
"""

import re
from typing import Dict, List, NamedTuple, Optional, Tuple

# Final states that say something else ended the job (scancel, time limit, preemption, node failure).
ENDED_BY_OTHERS_STATES = frozenset(["CA", "TO", "PR", "NF", "DL", "RV"])

URL_RE = re.compile(r"^https?://[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?:(\d{1,5})/?$")


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


class JobMemory(NamedTuple):
    """What the loop remembers of one job between cycles (persisted in state.json)."""
    service: str
    owned: bool = False                     # submitted by this root's loop: only these are cancelled
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
    cancelled_at: Optional[float] = None
    excluded: Tuple[str, ...] = ()
    publish_late: bool = False


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
    url: str
    weight: int = 1


class Plan(NamedTuple):
    actions: List[object]
    routes: Dict[str, List[Server]]
    memory: Memory
    events: List[str]


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
    match = URL_RE.match(url)
    if not match or not 0 < int(match.group(1)) < 65536:
        return None, "URL %r is not http(s)://host:port" % url[:120]
    return url.rstrip("/"), ""


def backoff_delay(failures, policy):
    return min(policy.backoff_base * (2 ** max(failures - 1, 0)), policy.backoff_max)


def _fail(services, service, error, now, policy):
    old = services.get(service, ServiceMemory())
    failures = old.failures + 1
    services[service] = old._replace(failures=failures, next_try=now + backoff_delay(failures, policy),
                                     last_error=error)


def absorb(memory, jobs, tracked, now, policy):
    """Fold a fresh squeue observation into memory; jobs that vanished become events (and crashes).

    tracked: names of services this loop cares about (desired ones and ones it still owns jobs of).
    """
    job_mem = dict(memory.jobs)
    services = dict(memory.services)
    events = []
    seen = {}
    for job in jobs:
        if job.name in tracked and job.active:
            seen[job.job_id] = job
    for job_id, job in sorted(seen.items()):
        old = job_mem.get(job_id) or JobMemory(service=job.name)
        new = old
        if old.seen_at is None:
            new = new._replace(seen_at=now)
            if job_id not in job_mem:
                events.append("job %s of %s found in squeue (%s), adopted" % (job_id, job.name, job.state))
        if job.running and old.running_since is None:
            new = new._replace(running_since=now - (job.time_used or 0))
            events.append("job %s of %s started on %s" % (job_id, job.name, job.nodes or "?"))
        url, problem = parse_comment(job.comment, job.name) if job.running else (None, "")
        url = url or ""
        if url != old.url:
            new = new._replace(url=url, ready_since=None, probe_failures=0)
            if url:
                events.append("job %s of %s published %s" % (job_id, job.name, url))
        if problem != old.comment_problem:
            new = new._replace(comment_problem=problem)
            if problem:
                events.append("job %s of %s: %s; not routed" % (job_id, job.name, problem))
        if (job.running and not url and not new.publish_late and new.running_since is not None
                and now - new.running_since > policy.publish_timeout):
            new = new._replace(publish_late=True)
            _fail(services, job.name, "job %s published no URL within %ds" % (job_id, policy.publish_timeout),
                  now, policy)
            events.append("job %s of %s published no URL within %ds" % (job_id, job.name, policy.publish_timeout))
        job_mem[job_id] = new
    ended_states = {job.job_id: job.state for job in jobs if not job.active}
    completing = {job.job_id for job in jobs if job.state == "CG"}
    for job_id, old in sorted(memory.jobs.items()):
        if job_id in seen or job_id in completing:
            continue    # CG: ending, but its final state (how it ended) is not known yet
        if old.seen_at is None and old.submitted_at is not None and now - old.submitted_at < policy.expect_timeout:
            continue    # submitted, not visible yet: still expected
        del job_mem[job_id]
        final = ended_states.get(job_id, "")
        lived = None if old.running_since is None else now - old.running_since
        how = " (%s)" % final if final else ""
        if old.cancelled_at is not None:
            events.append("job %s of %s is gone (cancelled by forever-slurm)" % (job_id, old.service))
            continue
        if final in ENDED_BY_OTHERS_STATES and old.seen_at is not None:
            events.append("job %s of %s ended%s after %s; not counted as a crash" % (
                job_id, old.service, how, "?" if lived is None else "%ds" % lived))
            continue
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
            continue
        _fail(services, old.service, "job %s %s" % (job_id, why), now, policy)
        events.append("job %s of %s %s; next submission of %s in %ds" % (
            job_id, old.service, why, old.service, services[old.service].next_try - now))
    return Memory(job_mem, services), events


def apply_probes(memory, results, now, policy):
    """Readiness: a job is routed after one good probe and leaves after failed ones."""
    job_mem = dict(memory.jobs)
    services = dict(memory.services)
    events = []
    for job_id, result in sorted(results.items()):
        old = job_mem.get(job_id)
        if old is None or not old.url:
            continue
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


def probe_targets(memory, jobs):
    """{job_id: url} of running jobs that published a valid URL."""
    running = {job.job_id for job in jobs if job.running}
    return {job_id: m.url for job_id, m in sorted(memory.jobs.items()) if job_id in running and m.url}


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
    """Decide actions and routes. With fresh=False (a probe-only tick on an older observation)
    only routing and draining change: nothing is submitted or cancelled.
    warnings: {service: seconds of its --signal warning} (see renew_lead).
    inflight: {job_id: requests in flight on its backend, or None when unknown} of draining jobs."""
    inflight = inflight or {}
    observed_at = now if observed_at is None else observed_at
    job_mem = dict(memory.jobs)
    services = dict(memory.services)
    actions = []
    events = []
    routes = {}
    submitted_total = 0
    observed_ids = {job.job_id for job in jobs}
    names = sorted(set(desired) | {m.service for m in memory.jobs.values()})
    for service in names:
        n = desired.get(service, 0)
        svc = services.get(service, ServiceMemory())
        if svc.failures and _healthy_for(job_mem, service, now) >= policy.backoff_reset:
            svc = svc._replace(failures=0, next_try=0.0, last_error="")
            services[service] = svc
            events.append("%s healthy for %ds: crash count reset" % (service, policy.backoff_reset))
        mine = [job for job in jobs if job.name == service and job.active]
        running = [job for job in mine if job.running]
        pending = [job for job in mine if not job.running]
        unseen = [job_id for job_id, m in job_mem.items()
                  if m.service == service and m.seen_at is None and job_id not in observed_ids]
        lead = renew_lead(n, svc, policy, (warnings or {}).get(service, 0))

        def left(job):
            return None if job.time_left is None else job.time_left - (now - observed_at)

        def ready(job):
            m = job_mem.get(job.job_id)
            return m is not None and m.ready_since is not None and bool(m.url)

        def mem(job):
            return job_mem.get(job.job_id) or JobMemory(service=service)

        retiring = [job for job in running if left(job) is not None and left(job) <= lead]
        keepers = len(mine) + len(unseen) - len(retiring)
        ready_keepers = [job for job in running
                         if job not in retiring and ready(job) and mem(job).drain_since is None]
        live = len(ready_keepers) + len([j for j in retiring if ready(j) and mem(j).drain_since is None])

        # Drain retiring jobs, soonest end first, while the others still carry N (or it ends anyway).
        for job in sorted(retiring, key=left):
            m = mem(job)
            if m.drain_since is not None or not ready(job):
                continue
            if live - 1 >= n or (left(job) <= policy.drain_seconds + 5 and live > 1):
                job_mem[job.job_id] = m._replace(drain_since=now)
                live -= 1
                events.append("job %s of %s draining (%ds left)" % (job.job_id, service, left(job)))

        cancelling = set()
        if fresh:
            for job in running:
                m = mem(job)
                if (m.owned and m.drain_since is not None and m.cancelled_at is None
                        and drain_finished(m, inflight.get(job.job_id), now, policy, left(job))):
                    why = "renewal" if job in retiring else "fewer instances"
                    actions.append(Cancel(job.job_id, service, "drained for %s" % why))
                    cancelling.add(job.job_id)
                    drains = services.get(service, svc).drains + (round(now - m.drain_since, 1),)
                    services[service] = services.get(service, svc)._replace(drains=drains[-5:])
            excess = keepers - n
            if excess > 0:
                candidates = [j for j in sorted(pending, key=_newest_first) if mem(j).owned]
                candidates += [j for j in sorted(running, key=_newest_first)
                               if mem(j).owned and not ready(j) and j not in retiring]
                candidates += [j for j in sorted(running, key=_newest_first)
                               if mem(j).owned and ready(j) and j not in retiring]
                for job in candidates:
                    if excess <= 0:
                        break
                    m = mem(job)
                    if job.job_id in cancelling or m.cancelled_at is not None:
                        continue
                    excess -= 1
                    if ready(job):
                        # It may be streaming answers: drain it first (cancelled above once drained).
                        if m.drain_since is None:
                            job_mem[job.job_id] = m._replace(drain_since=now)
                            events.append("job %s of %s draining (more than %d instances wanted)"
                                          % (job.job_id, service, n))
                        continue
                    actions.append(Cancel(job.job_id, service, "more than %d instances wanted" % n))
                    cancelling.add(job.job_id)
            for job_id in cancelling:
                job_mem[job_id] = job_mem.get(job_id, JobMemory(service=service))._replace(cancelled_at=now)
            need = n - keepers
            room = n + policy.surge - (len(mine) + len(unseen) - len(cancelling & {j.job_id for j in retiring}))
            count = max(0, min(need, room, policy.max_submit_per_cycle - submitted_total))
            if count and now < svc.next_try:
                count = 0
            if policy.spread and 1 < count <= policy.spread_ramp_max:
                # Where Slurm puts a job is known only once it runs: submit one per cycle, so the
                # next one can avoid its node. Larger gaps are filled at once (capacity first).
                count = 1
            if count:
                exclude = ()
                if policy.spread:
                    exclude = tuple(sorted({job.nodes for job in running
                                            if job.nodes and job.job_id not in cancelling}))
                why = "renewal" if retiring else "missing"
                for _ in range(count):
                    actions.append(Submit(service, exclude, why))
                submitted_total += count
            for job in pending:
                m = mem(job)
                if m.owned and m.excluded and m.submitted_at is not None \
                        and now - m.submitted_at > policy.spread_patience:
                    actions.append(ClearExclude(job.job_id, service))
                    job_mem[job.job_id] = m._replace(excluded=())

        if n > 0 or any(ready(j) for j in running):
            servers = []
            for job in sorted(running, key=_oldest_first):
                m = mem(job)
                if ready(job) and job.job_id not in cancelling and m.cancelled_at is None:
                    servers.append(Server(m.url, 0 if m.drain_since is not None else 1))
            if servers and all(s.weight == 0 for s in servers):
                servers = [s._replace(weight=1) for s in servers]   # draining beats 503
            routes[service] = servers
    return Plan(actions, routes, Memory(job_mem, services), events)


def record_submitted(memory, service, job_id, now, excluded=()):
    jobs = dict(memory.jobs)
    jobs[job_id] = JobMemory(service=service, owned=True, submitted_at=now, excluded=tuple(excluded))
    return memory._replace(jobs=jobs)


def record_submit_failed(memory, service, error, now, policy):
    services = dict(memory.services)
    _fail(services, service, error, now, policy)
    return memory._replace(services=services)


def _healthy_for(job_mem, service, now):
    times = [now - m.ready_since for m in job_mem.values() if m.service == service and m.ready_since is not None]
    return max(times) if times else 0.0


def _job_number(job):
    return int(job.job_id) if job.job_id.isdigit() else 0


def _newest_first(job):
    return -_job_number(job)


def _oldest_first(job):
    return _job_number(job)
