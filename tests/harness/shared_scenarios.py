"""Issue 24's scenarios C1-C6 on a SharedCluster behind the real Traefik: their set-ups and what is
measured in each (bench/shared_cluster prints them; e2e tests can assert the targets once the loop
handles the cases). C7 (share of job-hours given up to renewal, N = 1, 8, 64 with 8-hour jobs) is not
run here: 64 backends for 8 hours are out of reach of this machine; bench/shared_cluster says what the
loop must record for it to be computed.

Every scenario runs the original tool's hello-python, whose server dies at once on SIGTERM (no drain),
as hello-python/N, with 10 requests/s through Traefik while it lasts; the loop's squeue and sbatch
are counted by logging wrappers first on its PATH (scaling.logging_wrapper). Traffic goes to
127.0.0.1 only; every load loop is bounded in count and time.
"""

import http.client
import os
import threading
import time
import urllib.parse
from typing import Dict, List, NamedTuple, Optional

from original_tool import ORIGINAL_PY, ORIGINAL_SUB, ORIGINAL_YML

from .scaling import call_times, calls_between, logging_wrapper
from .stack import Stack, failed

SERVICE = "hello-python"
# The original tool's folder: no SIGTERM handler, so a signalled job drops its requests at once.
ABRUPT = {SERVICE: {SERVICE + ".sub": ORIGINAL_SUB, SERVICE + ".py": ORIGINAL_PY, SERVICE + ".yml": ORIGINAL_YML}}
# The default FS_SLEEP_INTERVAL (60 s): the squeue budget is measured as users would run it.
SETTINGS = ["FS_PROBE_INTERVAL=1", "FS_DRAIN_SECONDS=5"]
RATE = 10.0


class Outcome(NamedTuple):
    """What one scenario measured; times are seconds from its event (the preemption, the requeue...)."""
    scenario: str
    requests: int
    failed: int
    failures: List[str]             # the first few: seconds from the event, status, body
    below_seconds: float            # seconds with fewer than `wanted` backends routed and answering, from the event on
    back_to_wanted: Optional[float]  # from the event to `wanted` routed again (0: never fewer; None: not seen)
    first_sbatch: Optional[float]   # from the event to the loop's first sbatch after it (None: none)
    sbatch_calls: int               # the loop's sbatch calls from the event to the end
    squeue_per_minute: float        # the loop's squeue calls per minute over the whole observation
    jobs_at_end: int                # the service's active jobs in squeue at the end (surplus = this - wanted)
    notes: Dict[str, object]


def make_stack(cluster, base, instances=2, time_limit=None, extra=()):
    """hello-python/instances (abrupt) behind Traefik with the loop started; time_limit (minutes) goes to
    every sbatch through SBATCH_TIMELIMIT. stack.calls_log(command) names the wrappers' logs."""
    stack = Stack(cluster, base, "%s/%d" % (SERVICE, instances), SETTINGS + list(extra), service_dirs=ABRUPT)
    folder = os.path.join(base, "bin")
    for command in ("squeue", "sbatch"):
        logging_wrapper(folder, command, os.path.join(base, command + "-calls.log"))
    stack.calls_log = lambda command: os.path.join(base, command + "-calls.log")
    env = {"PATH": folder + os.pathsep + stack.env()["PATH"]}
    if time_limit:
        env["SBATCH_TIMELIMIT"] = str(time_limit)
    stack.start(env)
    return stack


def active_jobs(stack):
    return [job for job in stack.squeue(SERVICE) if job["state"] in ("R", "PD", "S", "CF")]


def wait_ready(stack, wanted, timeout=300):
    """Until `wanted` backends are routed and as many jobs run (so no earlier event is still settling)."""
    stack.wait_for(lambda: len(stack.routed(SERVICE)) >= wanted
                   and len([j for j in active_jobs(stack) if j["state"] == "R"]) == wanted or None,
                   timeout, 0.5, "%d ready backends" % wanted)


def observe(stack, scenario, seconds, wanted, event=None, event_at=5.0, rate=RATE, notes=None):
    """`rate` requests/s for `seconds` while the ready backends are counted every 0.5 s; event() runs
    `event_at` seconds in (None: the observation starts at once, as for C1). Returns an Outcome."""
    marks = {}
    points = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            points.append((time.time(), ready_backends(stack)))
            time.sleep(0.5)

    def tick(elapsed):
        if "event" not in marks and (event is None or elapsed >= event_at):
            marks["event"] = time.time()
            if event is not None:
                marks["detail"] = event()

    begun = time.time()
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        samples = stack.load(seconds=seconds, rate=rate, max_requests=int(seconds * rate) + 1, on_tick=tick)
    finally:
        stop.set()
        watcher.join(5)
    ended = time.time()
    t0 = marks.get("event", begun)
    bad = failed(samples)
    sbatches = [t for t in call_times(stack.calls_log("sbatch")) if t >= t0]
    below, back = below_wanted(points, wanted, t0)
    squeue_calls = calls_between(stack.calls_log("squeue"), begun, ended)
    extra = dict(notes or {})
    if marks.get("detail") is not None:
        extra["event"] = marks["detail"]
    return Outcome(scenario, len(samples), len(bad),
                   ["%+.1f s: %s %s" % (s.t - t0, s.status, s.body[:60].strip()) for s in bad[:5]],
                   below, back, (sbatches[0] - t0) if sbatches else None,
                   sum(1 for t in sbatches if t < ended), squeue_calls * 60.0 / max(ended - begun, 1.0),
                   len(active_jobs(stack)), extra)


def ready_backends(stack):
    """Backends the loop routes that answer a direct GET within 1 s. The routes alone are not enough:
    a job requeued by Slurm stays routed until the loop learns of it, its server long gone."""
    count = 0
    for url in stack.routed(SERVICE):
        parsed = urllib.parse.urlsplit(url)
        try:
            conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=1.0)
            conn.request("GET", "/")
            count += conn.getresponse().status == 200
            conn.close()
        except (OSError, http.client.HTTPException, ValueError):
            pass
    return count


def below_wanted(points, wanted, since):
    """(seconds with fewer than wanted routed after `since`, seconds from `since` to wanted again after
    the first dip: 0 when there was none, None when it did not come back)."""
    short = 0.0
    dipped = None
    back = 0.0
    for (t0, n0), (t1, _) in zip(points, points[1:]):
        if t0 < since:
            continue
        if n0 < wanted:
            short += t1 - t0
            if dipped is None:
                dipped = t0
                back = None
        elif dipped is not None and back is None:
            back = t0 - since
    return short, back


def submissions(stack):
    """The loop's 'submitted job ...' log lines (a shortened one says so: 'N min to end before a maintenance')."""
    return [line.split(" INFO ", 1)[-1] for line in stack.loop_log().splitlines() if " submitted job " in line]


def job_on_a_node(stack):
    """A running job of the service as (job id, node)."""
    job = sorted((j for j in active_jobs(stack) if j["state"] == "R"), key=lambda j: int(j["id"]))[0]
    return job["id"], job["node"]


# ---- the scenarios --------------------------------------------------------------------------------

def c1_busy_queue(cluster, base, wait_seconds=150, job_minutes=6, renewals=2, wanted=2, busy_from_start=False):
    """Replacements wait about wait_seconds in a queue kept full by another user. The jobs last
    job_minutes, so the observation spans `renewals` renewals of each. Target: 0 s below N, 0 failed.
    Needs from the loop: a renewal lead learnt from submission-to-ready of past replacements (here
    ~150 s of queue), and pending replacements followed through %S/%r.

    busy_from_start=False: the queue fills once the service runs, so its first renewal meets a wait
    its history has never seen (the loop learns from it). True: the queue is full before the loop
    starts (its first jobs wait too), as on a cluster that has been busy all along."""
    fill = cluster.fill(run_seconds=wait_seconds, keep=True) if busy_from_start else None
    stack = make_stack(cluster, base, wanted, time_limit=job_minutes)
    try:
        wait_ready(stack, wanted, timeout=300 + 2 * wait_seconds)
        if fill is None:
            fill = cluster.fill(run_seconds=wait_seconds, keep=True)
        return observe(stack, "C1", renewals * job_minutes * 60 + 60, wanted,
                       notes={"fillers": fill.cpus, "expected_wait": fill.expected_wait, "job_minutes": job_minutes,
                              "busy_from_start": busy_from_start})
    finally:
        cluster.stop_filling()
        stack.stop()


def c2_preemption(cluster, base, grace=60, wanted=2, seconds=None):
    """A `high` job takes the node of one of the two backends (GraceTime grace). Targets: 0 failed; and
    seconds to N ready again. Needs from the loop: %e earlier than start + limit read as a preemption
    warning (within 0.5 s of the preemptor's submission): drain that backend and submit at once, with a
    squeue often enough to see a 60 s warning."""
    cluster.update_partition("debug", GraceTime=grace)
    stack = make_stack(cluster, base, wanted)
    try:
        wait_ready(stack, wanted)
        job_id, node = job_on_a_node(stack)
        return observe(stack, "C2", seconds or grace + 150, wanted, event=lambda: {
            "preempted": job_id, "node": node, "preemptor": cluster.preempt(node, 900)},
            notes={"grace": grace})
    finally:
        stack.stop()
        cluster.stop_filling()


def c3_requeue(cluster, base, wanted=2, seconds=330):
    """`scontrol requeue` of a running backend. Targets: 0 failed, seconds below N, and after 5 minutes
    no surplus job (jobs_at_end == wanted). Needs from the loop: a job that was running and is PD again
    (reason BeginTime, same id, old Comment) out of Traefik and not counted as capacity; a replacement
    at once; the surplus (the requeued job, when it runs ~120 s later) drained and cancelled."""
    stack = make_stack(cluster, base, wanted)
    try:
        wait_ready(stack, wanted)
        job_id, node = job_on_a_node(stack)
        return observe(stack, "C3", seconds, wanted,
                       event=lambda: cluster.requeue(job_id) or {"requeued": job_id, "node": node})
    finally:
        stack.stop()


def c4_node_down(cluster, base, wanted=2, seconds=150):
    """The node under one backend is set DOWN (Slurm requeues its job at once, as C3). Targets: 0 failed,
    first_sbatch <= 10. Needs from the loop: C3's handling, and sinfo -R (nodes with a reason) so new
    submissions --exclude the node until it is back."""
    stack = make_stack(cluster, base, wanted)
    node = None
    try:
        wait_ready(stack, wanted)
        job_id, node = job_on_a_node(stack)
        return observe(stack, "C4", seconds, wanted, event=lambda: cluster.set_node(node, "down", "bench C4") or {
            "job": job_id, "node": node})
    finally:
        stack.stop()
        if node:
            cluster.set_node(node, "resume")


def c5_maintenance(cluster, base, starts_in=900, minutes=10, job_minutes=30, wanted=2, after_seconds=180,
                   announced_first=False):
    """A maint reservation on every node starting in starts_in seconds for `minutes`, the jobs asking
    job_minutes. Slurm itself stops nothing when a reservation begins (flags=maint,ignore_jobs lets it
    cover running jobs), so the administrator's part is played here: at the start every node is set
    DOWN (what still runs there is requeued), at the end every node is resumed. Targets: 0 s below N
    before it begins; after it ends, N ready within a job's start + 10 s. Returns (before, after): the
    observation up to its start, then from its end. Needs from the loop: `scontrol -o show reservation`
    at most every 10 minutes; submissions with --time ending before a MAINT reservation on its nodes
    (or --time-min), normal ones again once it has ended.

    announced_first: the reservation exists before the loop starts (sites announce days ahead), so
    jobs shorter than starts_in are renewed before it, each with a time limit that ends before it."""
    begins = int(time.time()) + starts_in
    if announced_first:
        cluster.create_reservation("bench-maint", begins, minutes)
    stack = make_stack(cluster, base, wanted, time_limit=job_minutes)
    try:
        wait_ready(stack, wanted)
        if not announced_first:
            begins = int(time.time()) + starts_in
            cluster.create_reservation("bench-maint", begins, minutes)
        try:
            before = observe(stack, "C5 before", max(begins - time.time(), 1), wanted,
                             notes={"reservation": "%d s from its creation for %d min" % (starts_in, minutes)})
            before = before._replace(notes=dict(before.notes, submitted=submissions(stack)))
            time.sleep(max(0.0, begins - time.time()))
            for node in cluster.node_names:
                cluster.set_node(node, "down", "maintenance")
            time.sleep(max(0.0, begins + minutes * 60 - time.time()))
        finally:
            for node in cluster.node_names:
                cluster.set_node(node, "resume")
            if any(r.name == "bench-maint" for r in cluster.reservations()):    # Slurm drops it once over
                cluster.delete_reservation("bench-maint")
        after = observe(stack, "C5 after", after_seconds, wanted, event=lambda: {"ended": "reservation over, nodes resumed"},
                        event_at=0.0)
        return before, after
    finally:
        stack.stop()


def c6_rejection(cluster, base, seconds=600, wanted=2):
    """Partition debug's MaxTime drops below the script's --time (8 h) and one backend is cancelled: every
    replacement sbatch is rejected (needs EnforcePartLimits=ALL; otherwise the job pends with
    PartitionTimeLimit). Targets: sbatch_calls <= 6 over 10 minutes, and the `status` line (notes).
    Needs from the loop: sbatch's stderr read into one status line naming the limit and the .sub line,
    and exponential backoff of submissions."""
    stack = make_stack(cluster, base, wanted)
    try:
        wait_ready(stack, wanted)
        job_id, _ = job_on_a_node(stack)

        def reject():
            cluster.update_partition("debug", MaxTime=60)
            cluster.run(["scancel", job_id])
            return {"cancelled": job_id, "MaxTime": 60}

        outcome = observe(stack, "C6", seconds, wanted, event=reject, rate=1.0)
        status = stack.cluster.run(stack.command("status"), timeout=60)
        return outcome._replace(notes=dict(outcome.notes, status=status.stdout.strip().splitlines()))
    finally:
        cluster.update_partition("debug", MaxTime="INFINITE")
        stack.stop()

