"""A local Slurm cluster made shared and busy on demand: preemption, another user's jobs filling every
CPU, requeue, suspend, nodes down or drained, maintenance reservations, partition limits.

Opt-in: SharedCluster is a LocalCluster with more partitions and settings; LocalCluster itself (the
cluster of the e2e tests and `make demo`) is unchanged. Partitions, each on every node:
  debug   the default, for service jobs: PriorityTier 1, GraceTime, PreemptMode (REQUEUE by default)
  cancel  like debug, but a preempted job is cancelled (PreemptMode=CANCEL)
  short   like debug with MaxTime = short_max_time minutes (for a script whose --time is above it)
  high    PriorityTier 10: its jobs preempt those of the three above
What the loop's squeue shows in each case, with timings: docs/shared-cluster-observed.md.
Stdlib only (bench/shared_cluster runs it outside pytest). Needs root, like LocalCluster.
"""

import math
import os
import pwd
import re
import subprocess
import time
from typing import List, NamedTuple

from .slurm_cluster import ClusterError, LocalCluster, render_config

OTHER_USER = "fs-other"
CPUS_PER_NODE = 4           # as render_config declares every node
FILLER_NAME = "fs-filler"

# The loop's one call (src/forever_slurm/systems/slurm.py FIELD_CODES), with '|' between the fields.
LOOP_FIELDS = ("id", "state", "name", "nodes", "start", "end", "reason", "workdir", "comment")
LOOP_FORMAT = "%A|%t|%j|%N|%S|%e|%r|%Z|%k"
STANDARD_TIME = {"SLURM_TIME_FORMAT": "standard"}

# A job of the other user. It sleeps $1 s; with $2 > 0 it first queues its successor (which sleeps
# $2 s and does the same), unless the stop file exists: as many fillers wait as run, for as long as
# the fill lasts. The successor's sbatch runs inside the job, so it needs the harness's SLURM_CONF.
FILLER_SCRIPT = """#!/bin/bash
run=$1; next=$2
if [ "$next" -gt 0 ] && [ ! -e "$FILL_STOP" ]; then
  sbatch --parsable -J %s -c 1 -t "$(( (next + 59) / 60 ))" -p "$FILL_PARTITION" -D "$FILL_DIR" \\
    -o /dev/null "$FILL_SCRIPT" "$next" "$next" >/dev/null
fi
exec sleep "$run"
""" % FILLER_NAME


class Fill(NamedTuple):
    """What fill() queued: the first wave's job ids and the pace at which they end."""
    job_ids: List[str]
    cpus: int               # fillers started at once (the idle CPUs)
    gap: float              # seconds between two fillers' ends
    expected_wait: float    # about how long a 1-CPU job submitted now waits


class Reservation(NamedTuple):
    """One line of `scontrol -o show reservation`, the fields a loop needs."""
    name: str
    state: str              # ACTIVE or INACTIVE
    start: float            # epoch seconds
    end: float
    nodes: str              # a Slurm host list: node[1-3]
    flags: str              # MAINT,IGNORE_JOBS,...
    users: str
    partition: str          # (null) when the reservation names nodes, not a partition


class NodeRow(NamedTuple):
    name: str
    state: str              # sinfo %t: idle, mix, alloc, down*, drain, drng, ...
    reason: str             # sinfo %E: 'none' when no reason was set

    @property
    def base_state(self):
        """The state without sinfo's flag suffix ('*' not responding, '~' powered off, ...)."""
        return self.state.rstrip("*~#!%$@^-")


def ensure_user(name=OTHER_USER):
    """The uid of Unix user `name`, created (no home, bash) when missing; safe to call concurrently."""
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        pass
    done = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/bin/bash",
                           name], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=30)
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        raise ClusterError("cannot create user %s (useradd exit %s): %s" % (name, done.returncode,
                                                                            done.stderr.strip()))


def slurm_time(epoch):
    """A time as Slurm reads it on the command line (local, like SLURM_TIME_FORMAT=standard)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(epoch))


def parse_time(text):
    """Epoch seconds of a standard Slurm time; None for N/A, Unknown, (null)."""
    try:
        return time.mktime(time.strptime(text.strip(), "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None


# `Key=value Key=value ...` of scontrol -o: a value runs up to the next ' Key=' (a reservation's
# Comment may hold spaces, never ' Word='... unless someone writes it there: the known keys only).
_SCONTROL_KEY = re.compile(r"(?:^| )([A-Z][A-Za-z]*)=")


def parse_scontrol_line(line):
    """{Key: value} of one `scontrol -o show ...` line."""
    marks = list(_SCONTROL_KEY.finditer(line.strip()))
    fields = {}
    for mark, following in zip(marks, marks[1:] + [None]):
        end = following.start() if following else len(line.strip())
        fields[mark.group(1)] = line.strip()[mark.end():end]
    return fields


def parse_reservations(text):
    """Reservations from `scontrol -o show reservation` (which prints 'No reservations in the system'
    when there are none)."""
    found = []
    for line in text.splitlines():
        if not line.startswith("ReservationName="):
            continue
        fields = parse_scontrol_line(line)
        found.append(Reservation(fields.get("ReservationName", ""), fields.get("State", ""),
                                 parse_time(fields.get("StartTime", "")), parse_time(fields.get("EndTime", "")),
                                 fields.get("Nodes", ""), fields.get("Flags", ""), fields.get("Users", ""),
                                 fields.get("PartitionName", "")))
    return found


def parse_loop_rows(text):
    """Rows of `squeue -o LOOP_FORMAT` as dicts keyed by LOOP_FIELDS (the comment keeps any '|')."""
    rows = []
    for line in text.splitlines():
        parts = line.split("|", len(LOOP_FIELDS) - 1)
        if len(parts) == len(LOOP_FIELDS):
            rows.append(dict(zip(LOOP_FIELDS, parts)))
    return rows


class SharedCluster(LocalCluster):
    """A LocalCluster with preemption, the partitions above, and helpers that make it busy."""

    def __init__(self, base_dir, nodes=3, hostname=None, grace_time=60, preempt_mode="REQUEUE",
                 short_max_time=5, enforce_part_limits="NO", send_user_signal=False, max_job_count=None,
                 other_user=OTHER_USER):
        super().__init__(base_dir, nodes, hostname)
        if preempt_mode not in ("REQUEUE", "CANCEL"):
            raise ValueError("preempt_mode must be REQUEUE or CANCEL, not %r" % preempt_mode)
        self.grace_time = grace_time
        self.preempt_mode = preempt_mode
        self.short_max_time = short_max_time
        self.enforce_part_limits = enforce_part_limits
        self.send_user_signal = send_user_signal
        self.max_job_count = max_job_count
        self.other_user = other_user
        self.other_dir = os.path.join(self.base_dir, "other")
        self.fill_stop = os.path.join(self.other_dir, "fill.stop")

    # ---- configuration -----------------------------------------------------------------------

    def extra_lines(self):
        lines = ["PreemptType=preempt/partition_prio",
                 # The cluster-wide mode must not be OFF for the partitions' own modes to apply.
                 "PreemptMode=REQUEUE",
                 "JobRequeue=1",
                 "EnforcePartLimits=%s" % self.enforce_part_limits]
        if self.send_user_signal:
            # Slurm 22.05 reads it here (no PreemptParameters key: slurmctld would refuse to start).
            lines.append("SlurmctldParameters=preempt_send_user_signal")
        if self.max_job_count:
            # Jobs slurmctld holds at once, every user's and finished ones within MinJobAge included:
            # the one limit on submissions there is without slurmdbd (QOS and associations need it).
            lines.append("MaxJobCount=%d" % self.max_job_count)
        return lines

    def partition_lines(self):
        grace = self.grace_time
        return ("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 "
                "GraceTime=%d PreemptMode=%s" % (grace, self.preempt_mode),
                "PartitionName=cancel Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=%d "
                "PreemptMode=CANCEL" % grace,
                "PartitionName=short Nodes=ALL MaxTime=%d State=UP PriorityTier=1 GraceTime=%d PreemptMode=REQUEUE"
                % (self.short_max_time, grace),
                "PartitionName=high Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=10 PreemptMode=OFF")

    def render(self, ports, munge_socket):
        # ReturnToService=1: a node set DOWN by set_node stays down until resumed (with 2, the plain
        # cluster's, it comes back by itself within a minute); one that stopped answering comes back.
        return render_config(self.base_dir, self.hostname, ports, self.nodes, munge_socket,
                             extra=self.extra_lines(), partitions=self.partition_lines(),
                             return_to_service=1)

    def start(self, timeout=60):
        """LocalCluster.start, with the other user created and able to read slurm.conf and write below
        other_dir."""
        uid = ensure_user(self.other_user)
        os.makedirs(self.base_dir, exist_ok=True)
        os.chmod(self.base_dir, os.stat(self.base_dir).st_mode | 0o011)
        started = super().start(timeout)
        os.makedirs(self.other_dir, exist_ok=True)
        os.chown(self.other_dir, uid, pwd.getpwuid(uid).pw_gid)
        os.chmod(self.other_dir, 0o755)
        return started

    # ---- clients -----------------------------------------------------------------------------

    def run_as(self, user, argv, timeout=30, extra_env=None):
        """A Slurm client run as `user` (root: as is); CompletedProcess with str output."""
        if user in (None, "root"):
            return self.run(argv, timeout=timeout, extra_env=extra_env)
        return self.run(["runuser", "-u", user, "--"] + list(argv), timeout=timeout, extra_env=extra_env)

    def scontrol(self, *args):
        """scontrol with args; raises ClusterError (with its stderr) when it fails."""
        done = self.run(["scontrol"] + list(args))
        if done.returncode != 0:
            raise ClusterError("scontrol %s failed (exit %d): %s" % (" ".join(args), done.returncode,
                                                                    done.stderr.strip()))
        return done.stdout

    def sbatch(self, args, user=None, extra_env=None):
        """sbatch --parsable args as user; CompletedProcess (a rejection is returncode != 0 + stderr)."""
        return self.run_as(user, ["sbatch", "--parsable"] + list(args), extra_env=extra_env)

    def submit(self, args, user=None, extra_env=None):
        """sbatch that must succeed; returns the job id."""
        done = self.sbatch(args, user, extra_env)
        if done.returncode != 0:
            raise ClusterError("sbatch %s failed (exit %d): %s" % (" ".join(args), done.returncode,
                                                                  done.stderr.strip()))
        return done.stdout.strip().split(";")[0]

    def loop_view(self, user=None):
        """What the loop sees: `squeue --me -h -t all` with its fields, SLURM_TIME_FORMAT=standard."""
        done = self.run_as(user, ["squeue", "--me", "-h", "-t", "all", "-o", LOOP_FORMAT], extra_env=STANDARD_TIME)
        if done.returncode != 0:
            raise ClusterError("squeue failed (exit %d): %s" % (done.returncode, done.stderr.strip()))
        return parse_loop_rows(done.stdout)

    def job_row(self, job_id, user=None):
        """The job's loop_view row, or None when squeue no longer lists it."""
        return next((row for row in self.loop_view(user) if row["id"] == str(job_id)), None)

    # ---- another user's jobs -----------------------------------------------------------------

    def idle_cpus(self):
        """Idle CPUs over all nodes (sinfo %C per node: allocated/idle/other/total)."""
        done = self.run(["sinfo", "-h", "-N", "-p", "debug", "-o", "%N %C"])
        total = 0
        for line in done.stdout.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[1].count("/") == 3:
                total += int(parts[1].split("/")[1])
        return total

    def _filler_env(self, partition):
        return {"FILL_STOP": self.fill_stop, "FILL_PARTITION": partition, "FILL_DIR": self.other_dir,
                "FILL_SCRIPT": os.path.join(self.other_dir, "filler.sh")}

    def fill(self, run_seconds=150, keep=True, partition="debug"):
        """Another user's 1-CPU jobs on every idle CPU, ending one by one `run_seconds / CPUs` apart.

        keep=False: the fillers end and the cluster empties; a 1-CPU job submitted now waits for the
        first to end, about run_seconds / CPUs. keep=True: each filler, when it starts, queues its
        successor (running run_seconds), so as many fillers wait as run, all submitted before a job
        of ours: it waits about run_seconds, now and for as long as the fill lasts (fill returns once
        the successors are queued). Time limits are the run time rounded up to minutes (Slurm's own
        estimates come from them).
        """
        if os.path.exists(self.fill_stop):
            os.remove(self.fill_stop)
        script = os.path.join(self.other_dir, "filler.sh")
        with open(script, "w") as handle:
            handle.write(FILLER_SCRIPT)
        os.chmod(script, 0o755)
        cpus = self.idle_cpus()
        if cpus == 0:
            raise ClusterError("fill: no idle CPU")
        gap = float(run_seconds) / cpus
        ids = []
        for i in range(cpus):
            seconds = int(round((i + 1) * gap))
            ids.append(self.submit(["-J", FILLER_NAME, "-c", "1", "-t", str(int(math.ceil(seconds / 60.0))),
                                    "-p", partition, "-D", self.other_dir, "-o", "/dev/null", script,
                                    str(seconds), str(int(run_seconds) if keep else 0)],
                                   user=self.other_user, extra_env=self._filler_env(partition)))
        if keep:
            # Each filler queues its successor from inside the job: until all have, a job of ours
            # submitted now would get ahead of some of them and wait less than promised.
            self._wait(lambda: len(self.other_jobs() or ()) >= 2 * cpus, time.monotonic() + 60,
                       "%d fillers running and %d queued" % (cpus, cpus))
        return Fill(ids, cpus, gap, run_seconds if keep else gap)

    def other_jobs(self):
        """Ids of the other user's jobs, or None when squeue does not answer."""
        done = self.run(["squeue", "-h", "-u", self.other_user, "-o", "%i"])
        return done.stdout.split() if done.returncode == 0 else None

    def stop_filling(self, timeout=30):
        """No filler queues a successor any more; every job of the other user is cancelled (bounded).
        True when none is left."""
        if os.path.isdir(self.other_dir):
            open(self.fill_stop, "a").close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = self.other_jobs()
            if ids == []:
                return True
            if ids:
                self.run(["scancel", "-u", self.other_user])
            time.sleep(0.5)
        return False

    def cancel_all(self, timeout=15):
        """LocalCluster.cancel_all, with fillers told first not to queue successors."""
        if os.path.isdir(self.other_dir):
            open(self.fill_stop, "a").close()
        return super().cancel_all(timeout)

    def preempt(self, node, run_seconds=600, user=None):
        """A job in `high` asking every CPU of node: Slurm preempts every job running there. Returns its id."""
        return self.submit(["-J", "fs-preemptor", "-p", "high", "-w", node, "-c", str(CPUS_PER_NODE),
                            "-t", str(int(math.ceil(run_seconds / 60.0))), "-D", self.other_dir, "-o", "/dev/null",
                            "--wrap", "sleep %d" % run_seconds], user=user or self.other_user)

    # ---- administrator's actions -------------------------------------------------------------

    def requeue(self, job_id):
        """`scontrol requeue`: a running job goes back to pending under the same id."""
        self.scontrol("requeue", str(job_id))

    def suspend(self, job_id):
        self.scontrol("suspend", str(job_id))

    def resume(self, job_id):
        self.scontrol("resume", str(job_id))

    def set_node(self, node, state, reason="forever-slurm harness"):
        """state: down, drain or resume (down and drain need a reason). Resuming a node that is neither
        down nor drained does nothing (scontrol would fail: 'Invalid node state specified')."""
        if state not in ("down", "drain", "resume"):
            raise ValueError("state must be down, drain or resume, not %r" % state)
        if state == "resume":
            row = self.node_rows().get(node)
            if row is not None and not row.base_state.startswith(("down", "drain", "drng", "fail")):
                return
        args = ["update", "NodeName=%s" % node, "State=%s" % state.upper()]
        if state != "resume":
            args.append("Reason=%s" % reason)
        self.scontrol(*args)

    def node_rows(self):
        """{node: NodeRow} from `sinfo -h -N -o '%N %t %E'` (one row per node and partition; the
        node's state is the same in each)."""
        done = self.run(["sinfo", "-h", "-N", "-o", "%N %t %E"])
        rows = {}
        for line in done.stdout.splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3:
                rows[parts[0]] = NodeRow(parts[0], parts[1], parts[2])
        return rows

    def update_partition(self, name, **settings):
        """`scontrol update PartitionName=name Key=value ...`, e.g. MaxTime=5, State=DRAIN."""
        self.scontrol("update", "PartitionName=%s" % name, *["%s=%s" % kv for kv in sorted(settings.items())])

    def create_reservation(self, name, start, minutes, nodes="ALL", flags="maint,ignore_jobs", users="root"):
        """A reservation from start (epoch seconds, or Slurm's text such as 'now+15minutes') for minutes."""
        when = slurm_time(start) if isinstance(start, (int, float)) else start
        self.scontrol("create", "reservation", "ReservationName=%s" % name, "StartTime=%s" % when,
                      "Duration=%d" % minutes, "Nodes=%s" % nodes, "Flags=%s" % flags, "Users=%s" % users)

    def delete_reservation(self, name):
        self.scontrol("delete", "ReservationName=%s" % name)

    def reservations(self):
        return parse_reservations(self.run(["scontrol", "-o", "show", "reservation"],
                                           extra_env=STANDARD_TIME).stdout)
