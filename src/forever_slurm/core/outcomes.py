"""Recording what happened when the loop acted: each outcome of sbatch, scancel and scontrol folded into
memory, and a service's crash-loop backoff. Pure: the loop passes `now` in."""

from ..common import backoff
from .model import JobMemory, Memory, ServiceMemory, INTENT_PREFIX


def backoff_delay(failures, policy, key=""):
    return backoff.delay(failures, policy.backoff_base, policy.backoff_max, key, jitter=0.2 if key else 0.0)


def fail_service(services, service, error, now, policy):
    """Count one crash (or failed sbatch) of `service` in `services` (a dict changed in place) and set
    when its next submission may be tried."""
    old = services.get(service, ServiceMemory())
    failures = old.failures + 1
    services[service] = old._replace(failures=failures, next_try=now + backoff_delay(failures, policy),
                                     last_error=error)


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
    fail_service(services, service, error, now, policy)
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
