"""What renewal costs, simulated: the loop's own planner (absorb, probes, plan, outcomes) runs against
a simulated cluster for hours of simulated time, to measure the share of job-hours given up to
renewal (issue 24, C7). An 8-hour job cannot be waited for in a test, and the planner's decisions are
pure, so this is the loop's real decision code with only Slurm and the clock simulated.

The cluster: a submitted job waits `queue_wait(rng)` seconds, runs until cancelled or its time limit,
and its server answers `startup` seconds after it starts. Requests never hold a drain longer than
FS_DRAIN_SECONDS (counted in flight: 0), which is the least renewal can cost.
"""

import random
import time
from typing import NamedTuple

from forever_slurm.core import absorb, model, outcomes, planner
from forever_slurm.systems.slurm import Job

FORMAT = "traefik,svc,http://node%d:%d"


class Result(NamedTuple):
    instances: int
    hours: float                # simulated hours of service
    job_hours: float            # hours of every job's running time (what the cluster bills)
    given_up: float             # share of job-hours beyond instances x hours: the price of renewal
    limit_unused: float         # share of the ended jobs' time limits they did not run (renewed early)
    below_seconds: float        # seconds with fewer than `instances` ready backends (after the start)
    lead: float                 # the renewal lead the planner computed at the end


class _Job(object):
    def __init__(self, job_id, submitted, wait, limit):
        self.job_id, self.submitted, self.limit = job_id, submitted, limit
        self.start = submitted + wait
        self.end = None             # when it stopped (cancelled or its limit)

    def state(self, now):
        if self.end is not None and now >= self.end:
            return None
        if now < self.start:
            return "PD"
        if now >= self.start + self.limit:
            self.end = self.start + self.limit
            return None
        return "R"


def simulate(instances, hours=24.0, limit=8 * 3600, startup=30.0, queue_wait=None, step=10.0, seed=1):
    """Result of `hours` of one service with `instances` jobs of `limit` seconds each."""
    rng = random.Random(seed)
    queue_wait = queue_wait or (lambda r: r.uniform(5, 120))
    policy = model.Policy(spread=False)
    memory = model.empty_memory()
    jobs, next_id = {}, [1000]
    now, end = 0.0, hours * 3600
    below, serving_from = 0.0, None

    def submit(at):
        next_id[0] += 1
        jobs[str(next_id[0])] = _Job(str(next_id[0]), at, queue_wait(rng), limit)
        return str(next_id[0])

    while now < end:
        observed = []
        for job in jobs.values():
            state = job.state(now)
            if state is not None:
                number = int(job.job_id)
                running = state == "R"
                observed.append(Job(job.job_id, state, "svc", "node%d" % (number % 50) if running else "",
                                    int(job.start + job.limit - now) if running else None,
                                    int(now - job.start) if running else 0, "None",
                                    FORMAT % (number % 50, 20000 + number) if running else ""))
        memory, _ = absorb.absorb(memory, observed, now, policy)
        results = {j.job_id: model.ProbeResult(now >= jobs[j.job_id].start + startup) for j in observed
                   if j.state == "R" and memory.jobs.get(j.job_id) and memory.jobs[j.job_id].url}
        memory, _ = absorb.apply_probes(memory, results, now, policy)
        draining = {k: 0 for k, m in memory.jobs.items() if m.drain_since is not None}
        plan = planner.plan({"svc": instances}, observed, memory, now, policy, inflight=draining)
        memory = plan.memory
        for action in plan.actions:
            if isinstance(action, model.Submit):
                memory = outcomes.record_submitted(memory, "svc", submit(now), now)
            elif isinstance(action, model.Cancel):
                jobs[action.job_id].end = now
                memory = outcomes.record_cancelled(memory, [action.job_id], now)
        ready = sum(1 for s in plan.routes.get("svc", ()) if s.weight > 0)
        if serving_from is None and ready >= instances:
            serving_from = now
        if serving_from is not None and ready < instances:
            below += step
        now += step
    used = sum(min(job.end if job.end is not None else end, end) - job.start
               for job in jobs.values() if job.start < end)
    served = instances * (end - (serving_from or 0.0))
    ended = [job for job in jobs.values() if job.end is not None and job.start < job.end <= end]
    unused = sum(job.limit - (job.end - job.start) for job in ended) / max(1.0, sum(job.limit for job in ended))
    lead = planner.renew_lead(memory.services.get("svc", model.ServiceMemory()), policy)
    return Result(instances, hours, used / 3600.0, max(0.0, used - served) / used, unused, below, lead)


if __name__ == "__main__":
    for count in (1, 8, 64):
        started = time.process_time()
        print(simulate(count), "%.1fs" % (time.process_time() - started))
