"""Measure what the loop's one squeue call shows on a shared, busy cluster, case by case, over time.

    python3 tests/harness/shared_facts.py [case ...]      (as root; all cases when none is named)

cases: preempt-requeue, preempt-cancel, preempt-signal, requeue, suspend, node-down, node-drain,
maint, maxtime, maxtime-enforced, max-job-count, busy (about 40 minutes in all; busy alone 8).

Each case starts a fresh SharedCluster under /tmp, submits root's probe jobs (which log every
signal their batch shell and a child of it receive), acts at t=0 and prints, with seconds from t=0,
every change of the probe jobs' rows in `squeue --me -h -t all -o '%A|%t|%j|%N|%S|%e|%r|%Z|%k'`
(SLURM_TIME_FORMAT=standard, polled every 0.5 s), the signals logged, and whatever else the case
reads (sinfo, scontrol). docs/shared-cluster-observed.md holds the figures of one run.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from harness.shared_cluster import LOOP_FORMAT, STANDARD_TIME, SharedCluster, parse_loop_rows, parse_time  # noqa: E402

# A service job that dies on SIGTERM, like the bench's abrupt service; every signal is logged with the
# time, the receiver (batch shell or its child) and SLURM_RESTART_COUNT (a requeued job runs again
# under the same id). It publishes a URL in its Comment, as forever-slurm's jobs do.
PROBE = r"""#!/bin/bash
#SBATCH --signal=B:USR1@60
log="$PROBE_DIR/$SLURM_JOB_ID.signals"
say() { echo "$(date +%s.%N) $1 restart=${SLURM_RESTART_COUNT:-0} node=$SLURMD_NODENAME" >> "$log"; }
say start
scontrol update JobId="$SLURM_JOB_ID" Comment="traefik,probe,http://$(hostname):$((20000 + SLURM_JOB_ID % 10000))"
bash -c 'say() { echo "$(date +%s.%N) $1 restart=${SLURM_RESTART_COUNT:-0} node=$SLURMD_NODENAME" >> "'"$log"'"; }
  for s in TERM USR1 CONT INT HUP USR2; do trap "say child-$s" $s; done
  trap "say child-TERM; exit 0" TERM
  while true; do sleep 1 & wait $!; done' &
for s in USR1 CONT INT HUP USR2; do trap "say shell-$s" $s; done
trap 'say shell-TERM; exit 0' TERM
while true; do sleep 1 & wait $!; done
"""


class Probe(object):
    """A cluster, a folder for probe scripts and their signal logs, and a timeline printer."""

    def __init__(self, cluster, folder):
        self.cluster = cluster
        self.folder = folder
        self.script = os.path.join(folder, "probe.sh")
        with open(self.script, "w") as handle:
            handle.write(PROBE)
        self.t0 = time.time()
        self.seen = {}
        self.signals_seen = {}
        self.track_nodes = False    # also print every change of sinfo's node states
        self.nodes_seen = None

    def submit(self, *args, **kwargs):
        return self.cluster.submit(["-J", kwargs.get("name", "probe"), "-D", self.folder, "-o", "/dev/null"]
                                   + list(args) + [self.script], extra_env={"PROBE_DIR": self.folder})

    def mark(self, what):
        self.t0 = time.time()
        print("t=0 %s  (%s)" % (what, time.strftime("%H:%M:%S", time.localtime(self.t0))), flush=True)

    def say(self, text):
        print("%+7.1f %s" % (time.time() - self.t0, text), flush=True)

    def rows(self, ids):
        """The loop's view of ids; jobs of other users (not in `--me`) from the same fields without it."""
        rows = {row["id"]: row for row in self.cluster.loop_view() if row["id"] in ids}
        others = [job_id for job_id in ids if job_id not in rows]
        if others:
            done = self.cluster.run(["squeue", "-h", "-t", "all", "-j", ",".join(others), "-o", LOOP_FORMAT],
                                    extra_env=STANDARD_TIME)
            rows.update((row["id"], dict(row, comment="(user %s)" % self.cluster.other_user))
                        for row in parse_loop_rows(done.stdout) if row["id"] in others)
        return rows

    def look(self, ids):
        """Print every changed row of ids and every new signal line; returns the rows."""
        rows = self.rows(ids)
        for job_id in ids:
            row = rows.get(job_id)
            shown = "|".join(row[k] for k in ("id", "state", "nodes", "start", "end", "reason", "comment")) \
                if row else "%s (not listed)" % job_id
            if self.seen.get(job_id) != shown:
                self.seen[job_id] = shown
                self.say("squeue " + shown + self.relative(row))
            path = os.path.join(self.folder, "%s.signals" % job_id)
            lines = open(path).read().splitlines() if os.path.exists(path) else []
            for line in lines[self.signals_seen.get(job_id, 0):]:
                stamp, rest = line.split(" ", 1)
                print("%+7.1f signal %s: %s" % (float(stamp) - self.t0, job_id, rest), flush=True)
            self.signals_seen[job_id] = len(lines)
        if self.track_nodes:
            nodes = " ".join("%s=%s(%s)" % (n.name, n.state, n.reason) for n in
                             sorted(self.cluster.node_rows().values()))
            if nodes != self.nodes_seen:
                self.nodes_seen = nodes
                self.say("sinfo " + nodes)
        return rows

    def relative(self, row):
        """%S and %e as seconds from t=0, to read timings at a glance."""
        if not row:
            return ""
        parts = []
        for key in ("start", "end"):
            when = parse_time(row[key])
            parts.append("%s%+.0f" % (key[0].upper(), when - self.t0) if when else "%s=%s" % (key[0].upper(), row[key]))
        return "   [" + " ".join(parts) + "]"

    def watch(self, ids, seconds, until=None, every=0.5):
        deadline = time.time() + seconds
        while time.time() < deadline:
            rows = self.look(ids)
            if until and until(rows):
                return rows
            time.sleep(every)
        return self.look(ids)

    def wait_running(self, ids, timeout=30):
        return self.watch(ids, timeout, until=lambda rows: all(r["state"] == "R" and r["comment"].startswith(
            "traefik") for r in rows.values()) and len(rows) == len(ids))

    def show(self, argv, extra_env=None):
        done = self.cluster.run(argv, extra_env=extra_env)
        self.say("$ %s  (exit %d)" % (" ".join(argv), done.returncode))
        for line in (done.stdout + done.stderr).splitlines():
            print("        " + line, flush=True)
        return done


# ---- cases ---------------------------------------------------------------------------------------

def preemption(probe, mode):
    """One probe job on node1 (partition debug: REQUEUE, or cancel: CANCEL); a `high` job takes node1."""
    partition = "debug" if mode == "REQUEUE" else "cancel"
    job = probe.submit("-p", partition, "-w", "node1", "-t", "30")
    probe.wait_running([job])
    probe.mark("preempt node1 (high job of fs-other asking all 4 CPUs) — %s, GraceTime=%d"
               % (mode, probe.cluster.grace_time))
    high = probe.cluster.preempt("node1", 600)
    probe.watch([job, high], probe.cluster.grace_time + 150,
                until=lambda rows: job not in rows if mode == "CANCEL" else (
                    rows.get(job, {}).get("state") == "PD" and rows[job]["reason"] == "Resources"))
    probe.cluster.run(["scancel", high])
    probe.watch([job], 40, until=lambda rows: rows.get(job, {}).get("state") == "R")


def case_preempt_requeue(probe):
    preemption(probe, "REQUEUE")


def case_preempt_cancel(probe):
    preemption(probe, "CANCEL")


def case_requeue(probe):
    job = probe.submit("-t", "30")
    probe.wait_running([job])
    probe.mark("scontrol requeue %s" % job)
    probe.cluster.requeue(job)
    probe.watch([job], 200, until=lambda rows: rows.get(job, {}).get("state") == "R"
                and rows[job]["comment"].startswith("traefik"))


def case_suspend(probe):
    job = probe.submit("-t", "30")
    probe.wait_running([job])
    probe.mark("scontrol suspend %s" % job)
    probe.cluster.suspend(job)
    probe.watch([job], 20)
    probe.mark("scontrol resume %s" % job)
    probe.cluster.resume(job)
    probe.watch([job], 10)


def node_case(probe, state):
    job = probe.submit("-t", "30", "-w", "node2")
    other = probe.submit("-t", "30", "-w", "node3")
    probe.wait_running([job, other])
    probe.show(["sinfo", "-h", "-N", "-o", "%N %t %E"])
    probe.track_nodes = True
    probe.mark("scontrol update NodeName=node2 State=%s Reason=harness-test" % state.upper())
    probe.cluster.set_node("node2", state, "harness-test")
    probe.watch([job, other], 150 if state == "down" else 20,
                until=lambda rows: state == "down" and rows.get(job, {}).get("state") == "R")
    probe.show(["sinfo", "-h", "-N", "-o", "%N %t %E"])
    probe.show(["sinfo", "-h", "-R", "-o", "%N|%t|%E|%H"], extra_env={"SLURM_TIME_FORMAT": "standard"})
    probe.show(["scontrol", "-o", "show", "node", "node2"])
    if state == "drain":
        probe.mark("scancel %s (the job on the draining node ends)" % job)
        probe.cluster.run(["scancel", job])
        probe.watch([job], 8)
        probe.show(["sinfo", "-h", "-N", "-o", "%N %t %E"])
        fresh = probe.submit("-t", "30", "-w", "node2")
        probe.mark("submitted %s with -w node2 (drained)" % fresh)
        probe.watch([fresh], 8)
    probe.mark("scontrol update NodeName=node2 State=RESUME")
    probe.cluster.set_node("node2", "resume")
    probe.watch([job, other], 15)
    probe.show(["sinfo", "-h", "-N", "-o", "%N %t %E"])


def case_node_down(probe):
    node_case(probe, "down")


def case_node_drain(probe):
    node_case(probe, "drain")


def case_maint(probe):
    cluster = probe.cluster
    probe.mark("scontrol create reservation maint1 starting in 10 minutes for 20 minutes, flags=maint,ignore_jobs")
    cluster.create_reservation("maint1", "now+10minutes", 20)
    probe.show(["scontrol", "-o", "show", "reservation"], extra_env={"SLURM_TIME_FORMAT": "standard"})
    probe.show(["scontrol", "show", "reservation"], extra_env={"SLURM_TIME_FORMAT": "standard"})
    probe.show(["sinfo", "-T"], extra_env={"SLURM_TIME_FORMAT": "standard"})
    probe.show(["sinfo", "-h", "-T", "-o", "%n|%t|%S|%E|%N"], extra_env={"SLURM_TIME_FORMAT": "standard"})
    crossing = probe.submit("-t", "30", name="crosses")
    fits = probe.submit("-t", "5", name="fits")
    shrinks = probe.submit("-t", "30", "--time-min", "5", name="timemin")
    probe.say("submitted %s (-t 30), %s (-t 5), %s (-t 30 --time-min 5)" % (crossing, fits, shrinks))
    probe.watch([crossing, fits, shrinks], 100)
    probe.show(["squeue", "-h", "-j", ",".join([crossing, fits, shrinks]), "-o", "%A %t %l %L %r"])
    probe.show(["sinfo", "-h", "-N", "-o", "%N %t %E"])


def case_maxtime(probe):
    cluster = probe.cluster
    for user in ("root", cluster.other_user):
        done = cluster.sbatch(["-p", "short", "-t", "30", "-D", cluster.other_dir, "-o", "/dev/null",
                               "--wrap", "sleep 60"], user=user)
        probe.say("as %s: sbatch -p short -t 30 (MaxTime=%d, EnforcePartLimits=%s): exit %d stdout %r stderr %r"
                  % (user, cluster.short_max_time, cluster.enforce_part_limits, done.returncode,
                     done.stdout.strip(), done.stderr.strip()))
        if done.returncode == 0:
            job = done.stdout.strip()
            time.sleep(3)
            probe.show(["squeue", "-h", "-j", job, "-o", "%A|%t|%S|%r|%l"], extra_env={"SLURM_TIME_FORMAT": "standard"})
            cluster.run(["scancel", job])
    job = probe.submit("-t", "30")
    probe.wait_running([job])
    probe.mark("scontrol update PartitionName=debug MaxTime=5 (below a pending job's -t 30)")
    cluster.update_partition("debug", MaxTime=5)
    done = cluster.sbatch(["-J", "after-maxtime", "-t", "30", "-D", probe.folder, "-o", "/dev/null", probe.script],
                          extra_env={"PROBE_DIR": probe.folder})
    probe.say("sbatch -t 30 into debug now: exit %d stdout %r stderr %r" % (done.returncode, done.stdout.strip(),
                                                                          done.stderr.strip()))
    probe.watch([job] + ([done.stdout.strip()] if done.returncode == 0 else []), 6)
    cluster.update_partition("debug", MaxTime="INFINITE")
    for state in ("DRAIN", "DOWN", "INACTIVE"):
        cluster.update_partition("short", State=state)
        done = cluster.sbatch(["-p", "short", "-t", "2", "-D", cluster.other_dir, "-o", "/dev/null",
                               "--wrap", "sleep 60"])
        probe.say("partition short State=%s: sbatch exit %d stdout %r stderr %r"
                  % (state, done.returncode, done.stdout.strip(), done.stderr.strip()))
        if done.returncode == 0:
            time.sleep(3)
            probe.show(["squeue", "-h", "-j", done.stdout.strip(), "-o", "%A|%t|%r"])
            cluster.run(["scancel", done.stdout.strip()])
    cluster.update_partition("short", State="UP")
    for args in (["-p", "nosuch"], ["-A", "nosuch"], ["-q", "nosuch"], ["-c", "5"], ["-N", "4"],
                 ["--mem", "5000"], ["-t", "99999999"]):
        done = cluster.sbatch(args + ["-t", "2", "-D", cluster.other_dir, "-o", "/dev/null", "--wrap", "true"]
                              if "-t" not in args else args + ["-D", cluster.other_dir, "-o", "/dev/null",
                                                               "--wrap", "true"])
        probe.say("sbatch %s: exit %d stdout %r stderr %r" % (" ".join(args), done.returncode, done.stdout.strip(),
                                                             done.stderr.strip()))
        if done.returncode == 0:
            time.sleep(2)
            probe.show(["squeue", "-h", "-j", done.stdout.strip(), "-o", "%A|%t|%r"])
            cluster.run(["scancel", done.stdout.strip()])


def case_busy(probe, run_seconds=150):
    cluster = probe.cluster
    fill = cluster.fill(run_seconds=run_seconds, keep=True)
    probe.say("fill: %d fillers, one ends every %.1f s, expected wait %.0f s" % (fill.cpus, fill.gap,
                                                                                  fill.expected_wait))
    time.sleep(3)
    jobs = []
    for i in range(3):
        job = probe.submit("-t", "30", name="busy%d" % i)
        jobs.append((job, time.time()))
        probe.mark("submitted %s into the busy queue" % job) if i == 0 else probe.say("submitted %s" % job)
        first_estimate = None
        deadline = time.time() + run_seconds * 2 + 60
        estimates = []
        while time.time() < deadline:
            row = probe.rows([job]).get(job)
            if row and row["start"] not in ("N/A", "") and first_estimate is None:
                first_estimate = time.time()
                probe.say("%s first %%S estimate after %.1f s: %s (reason %s)" % (job, first_estimate - jobs[-1][1],
                                                                               row["start"], row["reason"]))
            if row and row["state"] == "PD":
                est = parse_time(row["start"])
                if est and (not estimates or estimates[-1][1] != est):
                    estimates.append((time.time(), est, row["reason"]))
            if row and row["state"] == "R":
                started = parse_time(row["start"])
                probe.say("%s started after %.1f s in the queue; estimates (seconds after submission: "
                          "estimated start minus real start, reason): %s" % (
                              job, time.time() - jobs[-1][1], ", ".join(
                                  "%.0f: %+.0f %s" % (t - jobs[-1][1], e - started, r) for t, e, r in estimates)))
                break
            time.sleep(1)
        cluster.run(["scancel", job])
    cluster.stop_filling()


def case_max_job_count(probe):
    """MaxJobCount=4: sbatch jobs until one does not come back within 40 s, then free a slot."""
    cluster = probe.cluster
    argv = ["sbatch", "--parsable", "-t", "30", "-D", probe.folder, "-o", "/dev/null", "--wrap", "sleep 300"]
    probe.mark("sbatch one job after another with MaxJobCount=%d" % cluster.max_job_count)
    jobs = []
    for _ in range(cluster.max_job_count + 1):
        started = time.time()
        try:
            done = cluster.run(argv, timeout=40)
        except subprocess.TimeoutExpired as exc:
            probe.say("sbatch #%d still running after 40 s (killed); its stderr: %r" % (len(jobs) + 1, exc.stderr))
            break
        probe.say("sbatch #%d: exit %d in %.1f s, stdout %r stderr %r" % (
            len(jobs) + 1, done.returncode, time.time() - started, done.stdout.strip(), done.stderr.strip()))
        jobs.append(done.stdout.strip())
    probe.show(["squeue", "-h", "-t", "all", "-o", "%A %t %r"])
    probe.mark("scancel %s, then sbatch again" % jobs[0])
    cluster.run(["scancel", jobs[0]])
    started = time.time()
    done = cluster.run(argv, timeout=120)
    probe.say("sbatch exit %d in %.1f s, stdout %r stderr %r" % (done.returncode, time.time() - started,
                                                                done.stdout.strip(), done.stderr.strip()))


CASES = {"preempt-requeue": (case_preempt_requeue, {}), "preempt-cancel": (case_preempt_cancel, {}),
         "preempt-signal": (case_preempt_requeue, {"send_user_signal": True}),
         "requeue": (case_requeue, {}), "suspend": (case_suspend, {}),
         "node-down": (case_node_down, {}), "node-drain": (case_node_drain, {}),
         "maint": (case_maint, {}), "maxtime": (case_maxtime, {}),
         "maxtime-enforced": (case_maxtime, {"enforce_part_limits": "ALL"}),
         "busy": (case_busy, {}), "max-job-count": (case_max_job_count, {"max_job_count": 4})}


def main(argv):
    names = argv or sorted(CASES)
    for name in names:
        case, options = CASES[name]
        base = tempfile.mkdtemp(prefix="fsf-", dir="/tmp")
        os.chmod(base, 0o755)
        cluster = SharedCluster(os.path.join(base, "c"), grace_time=int(os.environ.get("GRACE", "30")), **options)
        print("=== %s (%s)" % (name, ", ".join("%s=%s" % kv for kv in sorted(options.items())) or "defaults"),
              flush=True)
        try:
            cluster.start(timeout=90)
            folder = os.path.join(base, "probe")
            os.makedirs(folder)
            case(Probe(cluster, folder))
        finally:
            cluster.stop()
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
