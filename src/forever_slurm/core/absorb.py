"""Absorbing observations: a fresh squeue of our jobs, and a pass of readiness probes, folded into memory.

Pure functions only (no I/O, no clock): the loop passes `now` in. Every job given here is one of ours
(slurm.submitted_from), so a job we did not submit is never counted, routed or cancelled."""

import functools

from ..common import urls
from ..systems import slurm_facts
from ..systems.slurm import ACTIVE_STATES, RUNNING_STATES, job_number
from .model import JobMemory, Memory, ServiceMemory, is_intent
from .outcomes import fail_service


# Final states that say something else ended the job (scancel, time limit, preemption, node failure).
ENDED_BY_OTHERS_STATES = frozenset(["CA", "TO", "PR", "NF", "DL", "RV"])


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


def unexplained_losses(memory, jobs):
    """Ids of jobs a look lost without explanation: ready, their last probe answered, and not in
    squeue's answer at all, not even in a final state (squeue -t all lists ended jobs for MinJobAge).
    A job cancelled, timed out or failed shows its final state; a server that still answers was not
    stopped. So such an answer (an empty one from a site's wrapper, a controller that restarted from
    an old state) is not believed until the next look says the same."""
    listed = {job.job_id for job in jobs}
    return sorted(job_id for job_id, m in memory.jobs.items()
                  if job_id not in listed and m.ready_since is not None and not m.probe_failures
                  and m.cancelled_at is None and not is_intent(job_id))


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
                    and job.state in RUNNING_STATES and parse_comment(job.comment, job.name)[0] == old.url
                    and _same_end(old.ends_at, job.time_left, now)):
                continue    # running, published, ending as before: _absorb_job would find nothing new
            if (old.seen_at is not None and old.running_since is None and not old.url and not old.comment_problem
                    and job.state not in RUNNING_STATES
                    and (old.not_queued or not slurm_facts.not_a_queue_wait(job.reason))):
                continue    # pending as before: nothing new either
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
    for job_id in sorted(eventful, key=job_number):
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
            fail_service(services, job.name, crash, now, policy)
        events += found
        job_mem[job_id] = new
    return events


def _intents_by_service(job_mem):
    intents = [(m.submitted_at or 0, key, m.service) for key, m in job_mem.items() if is_intent(key)]
    found = {}
    for _, key, service in sorted(intents):
        found.setdefault(service, []).append(key)
    return found


STARTUP_SAMPLES = 10    # submit-to-ready times kept per service (the renewal lead takes their 90th percentile)
CUT_TOLERANCE = 30.0    # seconds: an end that moves earlier by more was cut short (squeue's times are to 1 s)


def _same_end(ends_at, time_left, now):
    """True when a running job's end (now + time_left) is still the one memory has, give or take."""
    if time_left is None:
        return ends_at is None
    return ends_at is not None and abs(now + time_left - ends_at) <= 5.0


def _absorb_job(old, job, now, policy):
    """(memory, events, crash message or '') of one active job after this observation."""
    new = old
    events = []
    running = job.running
    if old.seen_at is None:
        new = new._replace(seen_at=now)
    if not running and old.running_since is not None:
        # It ran and is not running now: Slurm requeued it (preemption, a node, scontrol requeue) or
        # suspended it. Its server is gone or frozen, so it no longer counts; when it runs again it
        # starts afresh, and whichever job is then one too many is drained.
        how = "suspended" if job.state == "S" else "requeued (pending again, %s)" % (job.reason or "?")
        new = new._replace(running_since=None, url="", ready_since=None, probe_failures=0, probe_detail="",
                           held_since=now, ends_at=None)
        events.append("job %s of %s %s: out of Traefik and not counted; a replacement is submitted"
                      % (job.job_id, job.name, how))
        return new, events, ""
    if not running and not old.not_queued and slurm_facts.not_a_queue_wait(job.reason):
        new = new._replace(not_queued=True)
    if running and old.running_since is None:
        new = new._replace(running_since=now - (job.time_used or 0), held_since=None, cut_short_at=None)
        events.append("job %s of %s started on %s" % (job.job_id, job.name, job.nodes or "?"))
    if running and not _same_end(new.ends_at, job.time_left, now):
        end = None if job.time_left is None else now + job.time_left
        if (new.ends_at is not None and end is not None and end < new.ends_at - CUT_TOLERANCE
                and new.cut_short_at is None):
            new = new._replace(cut_short_at=now)
            events.append("job %s of %s: Slurm moved its end %ds earlier, to %ds from now (preemption or a "
                          "shorter limit): drained and replaced now" % (job.job_id, job.name,
                                                                         new.ends_at - end, job.time_left))
        new = new._replace(ends_at=end)
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
    fail_service(services, old.service, "job %s %s" % (job_id, why), now, policy)
    events.append("job %s of %s %s; next submission of %s in %ds" % (
        job_id, old.service, why, old.service, services[old.service].next_try - now))


def apply_probes(memory, results, now, policy):
    """Readiness: a job is routed after one good probe and leaves after failed ones."""
    job_mem = dict(memory.jobs)
    services = dict(memory.services)
    events = []
    for job_id in sorted(_probes_that_matter(job_mem, results, policy.probe_failure_threshold)):
        old = job_mem[job_id]
        result = results[job_id]
        if result.ok:
            new = old._replace(probe_failures=0, probe_detail="")
            if old.ready_since is None:
                new = new._replace(ready_since=now, ever_ready=True, unready_at=None)
                if old.submitted_at is not None and not old.ever_ready and not old.not_queued:
                    svc = services.get(old.service, ServiceMemory())
                    startup = (svc.startup + (round(now - old.submitted_at, 1),))[-STARTUP_SAMPLES:]
                    services[old.service] = svc._replace(startup=startup)
                events.append("job %s of %s ready at %s" % (job_id, old.service, old.url))
        else:
            failures = min(old.probe_failures + 1, policy.probe_failure_threshold)   # more says nothing more
            new = old._replace(probe_failures=failures, probe_detail=result.detail)
            if old.ready_since is not None and (result.refused or failures >= policy.probe_failure_threshold):
                new = new._replace(ready_since=None, unready_at=now)
                events.append("job %s of %s not ready (%s); removed from Traefik" % (
                    job_id, old.service, result.detail))
        job_mem[job_id] = new
    return Memory(job_mem, services), events


def _probes_that_matter(job_mem, results, threshold):
    """Ids of probed jobs with a URL whose result changes something: a ready job that is still fine
    (the common case at 10,000 jobs), and one that is out of Traefik and fails as before, are left
    out before anything is sorted (so their memory, and state.json, stay as they are)."""
    found = []
    for job_id, result in results.items():
        old = job_mem.get(job_id)
        if old is None or not old.url:
            continue
        if result.ok:
            if old.ready_since is not None and not old.probe_failures and not old.probe_detail:
                continue
        elif old.ready_since is None and old.probe_failures >= threshold and old.probe_detail == result.detail:
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
            if m is not None and m.url and not m.stopping:
                found[job.job_id] = m.url
    return {job_id: found[job_id] for job_id in sorted(found)}
