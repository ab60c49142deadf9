"""Two login nodes serving one root on the real local cluster (issue 25): bench/ha prints these figures,
tests/e2e/test_ha_real.py asserts their targets.

login1 and login2 are two Stacks of one root on this machine (FOREVER_HOST), each with its own Traefik
(login2's ports in .env.login2), its own loop, and wrappers of the Slurm commands first on its loop's
PATH that log every call with its host (`<time> <command> <args>`, one file per host). The service is
the original tool's hello-python, whose server dies at once on SIGTERM (no drain), and the load is
about 10 requests/s spread over both Traefiks.

H1 the leader's loop killed (SIGKILL): failed requests, seconds until the other leads, jobs lost or
   duplicated
H2 the leader's host stopped (its loop and Traefik SIGSTOPped, then continued): failed requests through
   the other login node, sbatch/scancel by a host while the lease was another's, what the old leader
   does on waking
H3 a renewal and a scale-up due while the leader is killed: seconds below N routed
H4 squeue calls per minute, both hosts together, steady
H5 the web server's tunnel (config --ssh with both login nodes, real sshds on loopback) while the first
   login node is stopped: seconds of failed requests at the web server, the tunnel's failover time
Traffic stays on 127.0.0.0/8; every load loop is bounded in count and time.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import List, NamedTuple, Optional

from . import sshd as sshd_harness
from .net import free_port
from .stack import Stack, get

SERVICE = "hello-python"
HOSTS = ("login1", "login2")
SLURM_COMMANDS = ("squeue", "sbatch", "scancel", "scontrol", "sinfo")
ACTING = ("sbatch", "scancel")
# A look every minute in steady state (the default), probes every second, a short drain, a job renewed
# 60 s before its end (H3 raises that to 150 s, so that a renewal is due at once).
SETTINGS = ["FS_PROBE_INTERVAL=1", "FS_DRAIN_SECONDS=3", "FS_RENEW_LEAD=60"]
RENEW_LEAD, RENEW_LEAD_H3 = 60.0, 150.0


# -- the two login nodes ----------------------------------------------------------------------------
def slurm_wrappers(folder, log_path, commands=SLURM_COMMANDS):
    """Wrappers in folder (put it first on a loop's PATH): each appends `<time> <command> <args>` to
    log_path, then runs the real command."""
    os.makedirs(folder, exist_ok=True)
    for command in commands:
        real = shutil.which(command)
        path = os.path.join(folder, command)
        with open(path, "w") as handle:
            handle.write('#!/bin/sh\necho "$(date +%%s.%%N) %s $*" >> "%s"\nexec "%s" "$@"\n'
                         % (command, log_path, real))
        os.chmod(path, 0o755)
    return folder


class Call(NamedTuple):
    at: float
    host: str
    command: str
    args: str


class LoginNodes:
    """login1 and login2 serving one root (login1 its first host); start(), then stop()."""

    def __init__(self, cluster, base, services="%s/2" % SERVICE, env_lines=(), service_dirs=None, job_minutes=None):
        self.cluster = cluster
        self.base = base
        self.job_minutes = job_minutes      # SBATCH_TIMELIMIT of every job the loops submit (None: the script's)
        first = Stack(cluster, base, services, SETTINGS + list(env_lines), service_dirs=service_dirs,
                      host=HOSTS[0])
        self.nodes = {HOSTS[0]: first, HOSTS[1]: first.login_node(HOSTS[1])}
        self.calls_logs = {host: os.path.join(base, "calls-%s.log" % host) for host in HOSTS}
        self.root = first.root

    def start(self):
        """login1's Traefik and loop first (it becomes the root's first host and leads), then login2's."""
        for host in HOSTS:
            node = self.nodes[host]
            wrappers = slurm_wrappers(os.path.join(self.base, "bin-" + host), self.calls_logs[host])
            node.prepare()
            node.start_traefik()
            env = {"PATH": wrappers + os.pathsep + node.env()["PATH"]}
            if self.job_minutes:
                env["SBATCH_TIMELIMIT"] = str(self.job_minutes)
            node.start_loop(env)
        return self

    def stop(self):
        for host in reversed(HOSTS):        # login1 last: it cancels the jobs
            self.nodes[host].stop()

    def other(self, host):
        return HOSTS[1] if host == HOSTS[0] else HOSTS[0]

    def leader(self):
        """The host of the lease's highest term, or None."""
        found = highest_term(os.path.join(self.root, ".work", "leader"))
        return found[1].get("host") if found else None

    def calls(self, since=0.0, commands=SLURM_COMMANDS):
        """Every Slurm call of both loops since `since`, in time order. A job inherits its loop's PATH,
        so its own `scontrol update JobId=N Comment=...` (publishing its URL) is in the log too: left out."""
        found = []
        for host, path in self.calls_logs.items():
            try:
                lines = open(path).read().splitlines()
            except OSError:
                continue
            for line in lines:
                parts = line.split(" ", 2)
                args = parts[2] if len(parts) > 2 else ""
                if len(parts) < 2 or parts[1] not in commands or float(parts[0]) < since:
                    continue
                if parts[1] == "scontrol" and args.startswith("update JobId=") and " Comment=" in args:
                    continue
                found.append(Call(float(parts[0]), host, parts[1], args))
        return sorted(found)

    def running(self):
        """Ids of our running jobs, from squeue."""
        return sorted(self.time_left(), key=int)

    def time_left(self):
        """{job id: seconds left} of our running jobs, from squeue."""
        return {j["id"]: _seconds(j["left"]) for j in self.nodes[HOSTS[0]].squeue(SERVICE) if j["state"] == "R"}

    def serving(self, wanted, hosts=HOSTS):
        """True when each of `hosts` routes `wanted` backends and squeue shows that many running."""
        return all(len(self.nodes[h].routed_here()) == wanted for h in hosts) and len(self.running()) == wanted

    def wait_serving(self, wanted, timeout=180, hosts=HOSTS):
        self.nodes[HOSTS[0]].wait_for(lambda: self.serving(wanted, hosts), timeout, 0.5,
                                      "%d backends routed on %s" % (wanted, ", ".join(hosts)))

    def memory(self):
        """Job ids in state.json (the leader's memory), intents left out."""
        path = os.path.join(self.root, ".work", "state.json")
        try:
            with open(path) as handle:
                jobs = json.load(handle).get("jobs") or {}
        except (OSError, ValueError):
            return []
        return sorted(k for k in jobs if not k.startswith("intent:"))

    def set_env(self, values):
        """Set keys of the shared .env at once, as a user's edit would (both loops reload it)."""
        path = os.path.join(self.root, ".env")
        with open(path) as handle:
            lines = [l for l in handle.read().splitlines() if l.split("=", 1)[0] not in values]
        lines += ["%s=%s" % item for item in sorted(values.items())]
        with open(path + ".tmp", "w") as handle:
            handle.write("\n".join(lines) + "\n")
        os.replace(path + ".tmp", path)

    def log_since(self, host, offset):
        return self.nodes[host].loop_log()[offset:]


def highest_term(directory):
    """(epoch, content) of the highest readable term-<N> in the lease directory, or None."""
    try:
        names = os.listdir(directory)
    except OSError:
        return None
    for epoch in sorted((int(n[5:]) for n in names if re.fullmatch(r"term-[0-9]{1,17}", n)), reverse=True):
        try:
            with open(os.path.join(directory, "term-%d" % epoch)) as handle:
                return epoch, json.load(handle)
        except (OSError, ValueError):
            continue
    return None


class Watch:
    """Every 0.25 s in a thread: the lease's highest term and the backends each login node routes, and
    every second our jobs in squeue (this harness's own squeue, not counted as the loops' calls).
    points: [(time, epoch, leader host, {host: routed count})]; first_seen: {job id: time}."""

    def __init__(self, pair, interval=0.25):
        self.pair = pair
        self.interval = interval
        self.points = []
        self.first_seen = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(10)

    def _run(self):
        lease_dir = os.path.join(self.pair.root, ".work", "leader")
        squeue_at = 0.0
        while not self._stop.is_set():
            if time.time() >= squeue_at:
                squeue_at = time.time() + 1.0
                for job in self.pair.nodes[HOSTS[0]].squeue(SERVICE):
                    self.first_seen.setdefault(job["id"], time.time())
            term = highest_term(lease_dir)
            routed = {host: len(node.routed_here()) for host, node in self.pair.nodes.items()}
            self.points.append((time.time(), term[0] if term else None, term[1].get("host") if term else None,
                                routed))
            self._stop.wait(self.interval)

    def leads_from(self, host, after):
        """When `host` first held the highest term after `after` (None: not seen)."""
        for t, _, leader, _ in self.points:
            if t >= after and leader == host:
                return t
        return None

    def leader_at(self, when):
        """The lease's highest term's host last seen at or before `when`."""
        found = None
        for t, _, leader, _ in self.points:
            if t > when:
                break
            found = leader
        return found

    def seconds_below(self, host, wanted, start=None, end=None):
        """Seconds during which `host`'s Traefik routed fewer than `wanted` backends."""
        short = 0.0
        for (t0, _, _, routed), (t1, _, _, _) in zip(self.points, self.points[1:]):
            if (start is None or t0 >= start) and (end is None or t0 < end) and routed[host] < wanted:
                short += t1 - t0
        return short

    def new_jobs(self, before):
        """Our jobs seen in squeue that were not in `before` (submitted while it watched)."""
        return sorted(set(self.first_seen) - set(before), key=int)

    def first_routing(self, host, wanted, after):
        for t, _, _, routed in self.points:
            if t >= after and routed[host] >= wanted:
                return t
        return None


# -- load -------------------------------------------------------------------------------------------
def spread_load(targets, seconds, rate=10.0, on_tick=None, max_requests=3000, timeout=5.0,
                path="/%s/tests" % SERVICE):
    """Open-loop load: `rate` requests/s for `seconds` (bounded by max_requests), round robin over
    targets [(label, port)], each request in its own thread so a hanging one delays no other.
    Returns [(label, Sample)] in start order."""
    samples = []
    lock = threading.Lock()
    threads = []

    def one(label, port):
        sample = get(port, path, timeout)
        with lock:
            samples.append((label, sample))

    start = time.time()
    for i in range(min(int(seconds * rate), max_requests)):
        delay = start + i / rate - time.time()
        if delay > 0:
            time.sleep(delay)
        label, port = targets[i % len(targets)]
        thread = threading.Thread(target=one, args=(label, port), daemon=True)
        thread.start()
        threads.append(thread)
        if on_tick:
            on_tick(time.time() - start)
    for thread in threads:
        thread.join(timeout + 30)
    return sorted(samples, key=lambda pair: pair[1].t)


def targets(pair, hosts=HOSTS):
    return [(host, pair.nodes[host].port) for host in hosts]


def failures(samples, label=None, since=None):
    return [s for l, s in samples if (label is None or l == label) and s.status != 200]


def describe(failed, since):
    return ["%+.1f s: %s %s" % (s.t - since, s.status, s.body[:70].strip()) for s in failed[:8]]


def count(samples, label=None):
    return sum(1 for l, _ in samples if label is None or l == label)


# -- H1 and H3: the leader's loop killed ----------------------------------------------------------
class Takeover(NamedTuple):
    old_leader: str
    new_leader: str
    to_lead: Optional[float]    # seconds from the kill to the other host's term (None: not within the load)
    requests: int
    failed: int
    failures: List[str]
    lost: List[str]             # running before, and neither running nor in the new leader's memory after
    acting: List[Call]          # sbatch/scancel after the kill
    duplicated: int             # submissions beyond what was needed
    below: float                # seconds the surviving node routed fewer than N backends
    jobs_after: List[str]
    memory_after: List[str]
    scaled_after: Optional[float] = None    # H3: seconds from the scale-up to N+1 routed on the survivor
    old_leader_calls: List[Call] = []       # H3: what the old leader ran between the trigger and its death
    expired: List[str] = []                 # H3: jobs that reached their time limit (not cancelled by us)
    renewed: List[str] = []                 # H3: the jobs within the renewal lead at the trigger
    failed_by_host: dict = {}               # {host: failed requests through its Traefik}
    below_by_host: dict = {}                # H3: {host: seconds its Traefik routed fewer than N}


def _wait_lead(pair, host, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pair.leader() == host:
            return True
        time.sleep(0.2)
    return False


def h1_kill_leader(pair, seconds=40.0, rate=10.0, kill_at=3.0, wanted=2):
    """The leader's loop SIGKILLed under load; its Traefik goes on. Nothing needs doing, so any sbatch
    or scancel afterwards is a duplicate; the killed loop is restarted at the end (it follows)."""
    pair.wait_serving(wanted)
    old = pair.leader()
    new = pair.other(old)
    before = pair.running()
    marks = {}

    def tick(elapsed):
        if elapsed >= kill_at and "kill" not in marks:
            marks["kill"] = time.time()
            pair.nodes[old].signal("loop", signal.SIGKILL)

    with Watch(pair) as watch:
        samples = spread_load(targets(pair), seconds, rate, on_tick=tick)
    kill = marks["kill"]
    led = watch.leads_from(new, kill)
    # The new leader's first look at Slurm comes at once after the takeover; give it time to save.
    _wait_lead(pair, new)
    time.sleep(3)
    after, memory = pair.running(), pair.memory()
    acting = [c for c in pair.calls(kill, ACTING)]
    pair.nodes[old].restart_loop()
    bad = failures(samples)
    return Takeover(old, new, None if led is None else led - kill, len(samples), len(bad), describe(bad, kill),
                    sorted(set(before) - (set(after) & set(memory))), acting, len(watch.new_jobs(before)),
                    watch.seconds_below(new, wanted, kill), after, memory,
                    failed_by_host={h: len(failures(samples, h)) for h in HOSTS})


def _seconds(text):
    """squeue's %L / %M (days-hours:minutes:seconds, leading parts optional) in seconds; None otherwise."""
    days, _, rest = text.strip().rpartition("-")
    try:
        parts = [int(p) for p in rest.split(":")]
    except ValueError:
        return None
    while len(parts) < 3:
        parts.insert(0, 0)
    return (int(days) if days else 0) * 86400 + parts[0] * 3600 + parts[1] * 60 + parts[2]


def h3_renewal_and_scale_up_in_takeover(pair, seconds=75.0, rate=10.0, wanted=2):
    """A renewal and a scale-up due at the same look, and the leader's loop SIGKILLed the moment its
    first sbatch starts (that sbatch goes on: only the loop dies). A user's edit of .env raises N to N+1
    and FS_RENEW_LEAD from 60 to 150 s while the oldest job has between the two left (the jobs run
    `job_minutes`), so the leader's next look submits both. The other host takes over and continues from
    state.json and Slurm: the scale-up and every renewal done, each old job drained and cancelled before
    its end. The capacity of the survivor's Traefik: never below N."""
    pair.wait_serving(wanted)
    old = pair.leader()
    new = pair.other(old)
    oldest = min([v for v in pair.time_left().values() if v is not None] or [float("inf")])
    if oldest > RENEW_LEAD_H3 - 15:
        time.sleep(oldest - (RENEW_LEAD_H3 - 15))
    elif oldest < RENEW_LEAD + 8:
        raise AssertionError("a job has %ds left: too late for H3 (renewed at %ds already)" % (oldest, RENEW_LEAD))
    before = pair.running()
    marks = {}
    stop_watching = threading.Event()

    def kill_at_first_sbatch():
        while not stop_watching.is_set():
            if "trigger" in marks and [c for c in pair.calls(marks["trigger"], ("sbatch",)) if c.host == old]:
                marks["kill"] = time.time()
                os.kill(pair.nodes[old].procs["loop"].pid, signal.SIGKILL)     # the loop only, not its sbatch
                return
            time.sleep(0.01)

    def tick(elapsed):
        if elapsed >= 3 and "trigger" not in marks:
            marks["left"] = pair.time_left()
            marks["trigger"] = time.time()
            pair.set_env({"SERVICE_LIST": '"%s/%d"' % (SERVICE, wanted + 1), "FS_RENEW_LEAD": "%d" % RENEW_LEAD_H3})

    killer = threading.Thread(target=kill_at_first_sbatch, daemon=True)
    killer.start()
    with Watch(pair) as watch:
        samples = spread_load(targets(pair), seconds, rate, on_tick=tick)
    stop_watching.set()
    killer.join(5)
    trigger, kill = marks["trigger"], marks.get("kill")
    if kill is None:
        raise AssertionError("the leader (%s) ran no sbatch after the scale-up and the renewal were due\n%s"
                             % (old, pair.nodes[old].loop_log()[-3000:]))
    pair.nodes[old].procs["loop"].wait(10)
    retiring = sorted(job for job, seconds_left in marks["left"].items() if seconds_left < RENEW_LEAD_H3)
    node = pair.nodes[new]
    node.wait_for(lambda: pair.serving(wanted + 1, (new,)) and not set(retiring) & set(pair.running()), 90, 0.5,
                  "%d backends routed on %s and the renewed jobs gone" % (wanted + 1, new))
    time.sleep(3)
    after, memory = pair.running(), pair.memory()
    calls = pair.calls(trigger, ACTING)
    cancelled = {job for c in calls if c.command == "scancel" for job in c.args.split()}
    submitted = len(watch.new_jobs(before))
    pair.nodes[old].restart_loop()
    bad = failures(samples)
    led = watch.leads_from(new, kill)
    scaled = watch.first_routing(new, wanted + 1, trigger)
    return Takeover(old, new, None if led is None else led - kill, len(samples), len(bad), describe(bad, kill),
                    sorted((set(before) - set(retiring)) - (set(after) & set(memory))), calls,
                    max(0, submitted - 1 - len(retiring)), watch.seconds_below(new, wanted, trigger), after, memory,
                    None if scaled is None else scaled - trigger, [c for c in calls if c.host == old],
                    [job for job in retiring if job not in cancelled], retiring,
                    {h: len(failures(samples, h)) for h in HOSTS},
                    {h: watch.seconds_below(h, wanted, trigger) for h in HOSTS})


# -- H2: the leader's host stopped ----------------------------------------------------------------
class Pause(NamedTuple):
    stopped: str
    other: str
    seconds: float              # how long the host was stopped
    to_lead: Optional[float]    # seconds from the stop to the other host's term
    requests_other: int         # through the other login node
    failed_other: int
    failures_other: List[str]
    requests_stopped: int       # through the stopped node's Traefik (they wait while it is stopped)
    failed_stopped: int
    failed_stopped_after: List[str]     # ... of which sent once it was continued
    out_of_turn: List[Call]     # sbatch/scancel by a host while the lease's highest term was another's
    after_waking: List[Call]    # the stopped host's Slurm calls after it woke
    on_waking: List[str]        # the stopped host's loop log after it woke
    web: Optional[object] = None    # H5 (Tunnel) when the web server's tunnel ran through it


def h2_stop_leader_host(pair, stop_seconds=120.0, rate=10.0, stop_at=3.0, after_seconds=20.0, web=None, wanted=2):
    """The leader's loop and Traefik SIGSTOPped for stop_seconds, then continued, under load spread over
    both Traefiks (and through the web server's tunnel when `web` is given: the stopped host's sshd is
    frozen too). Which host acted when is read from both hosts' Slurm calls and the lease."""
    pair.wait_serving(wanted)
    stopped = pair.leader()
    other = pair.other(stopped)
    node = pair.nodes[stopped]
    marks = {}

    def tick(elapsed):
        if elapsed >= stop_at and "stop" not in marks:
            marks["stop"] = time.time()
            for name in ("loop", "traefik"):
                node.signal(name, signal.SIGSTOP)
            if web is not None:
                web.sshds[stopped].freeze()
        if elapsed >= stop_at + stop_seconds and "cont" not in marks:
            marks["log"] = len(node.loop_log())
            if web is not None:
                web.sshds[stopped].thaw()
            for name in ("traefik", "loop"):
                node.signal(name, signal.SIGCONT)
            marks["cont"] = time.time()

    where = targets(pair) + ([("web", web.local_port)] if web is not None else [])
    with Watch(pair) as watch:
        samples = spread_load(where, stop_at + stop_seconds + after_seconds, rate * len(where) / 2.0,
                              on_tick=tick, max_requests=int((stop_at + stop_seconds + after_seconds) * rate * 2))
    stop, cont = marks["stop"], marks["cont"]
    led = watch.leads_from(other, stop)
    calls = pair.calls(0.0, ACTING)
    out_of_turn = [c for c in calls if c.at >= watch.points[0][0] and watch.leader_at(c.at - 0.5) != c.host
                   and watch.leader_at(c.at + 0.5) != c.host]
    woke = [c for c in pair.calls(cont) if c.host == stopped]
    bad_other, bad_stopped = failures(samples, other), failures(samples, stopped)
    tunnel = web.figures(samples, stop, cont) if web is not None else None
    return Pause(stopped, other, cont - stop, None if led is None else led - stop, count(samples, other),
                 len(bad_other), describe(bad_other, stop), count(samples, stopped), len(bad_stopped),
                 describe([s for s in bad_stopped if s.t >= cont], stop),
                 out_of_turn, woke, pair.log_since(stopped, marks["log"]).strip().splitlines(), tunnel)


# -- H4 ---------------------------------------------------------------------------------------------
class Steady(NamedTuple):
    seconds: float
    squeue: dict                # {host: squeue calls in the window}
    per_minute: float           # both hosts together
    other_calls: dict           # {host: other Slurm calls in the window}


def h4_squeue_per_minute(pair, seconds=180.0, settle=35.0, wanted=2):
    """squeue calls of both loops over `seconds` of steady state (past the follow-up window of the last
    submission)."""
    pair.wait_serving(wanted)
    time.sleep(settle)
    start = time.time()
    time.sleep(seconds)
    calls = pair.calls(start)
    squeue = {h: sum(1 for c in calls if c.host == h and c.command == "squeue") for h in HOSTS}
    other = {h: sum(1 for c in calls if c.host == h and c.command != "squeue") for h in HOSTS}
    return Steady(seconds, squeue, sum(squeue.values()) * 60.0 / seconds, other)


# -- H5: the web server's tunnel ------------------------------------------------------------------
class Tunnel(NamedTuple):
    requests: int
    failed: int
    failed_seconds: float       # from the first to the last failed request's start, plus one request gap
    failover: Optional[float]   # the tunnel's own figure: clients without an answer (tunnel.log), None if unsaid
    moved_to: str               # the node the tunnel went to
    log: List[str]


class WebServer:
    """A web server's root on this machine with the tunnel to both login nodes, each behind its own sshd
    on loopback and with its own Traefik port: FS_SSH_LOGIN_NODE="127.0.0.1:<sshd>/<traefik> ..."."""

    def __init__(self, pair, base):
        self.pair = pair
        self.root = os.path.join(base, "web")
        self.key = os.path.join(base, "web-key", "id")
        self.local_port = free_port()
        self.sshds = {host: sshd_harness.Sshd(os.path.join(base, "sshd-" + host)) for host in HOSTS}
        self.words = {host: "127.0.0.1:%d/%d" % (self.sshds[host].port, pair.nodes[host].port) for host in HOSTS}
        self.proc = None
        self.config_output = ""

    def command(self, *args):
        return [sys.executable, os.path.join(self.root, "forever_slurm.pyz"), "--root", self.root] + list(args)

    def env(self):
        env = dict(os.environ)
        for key in ("FOREVER_ROOT", "FOREVER_HOST", "PYTHONPATH"):
            env.pop(key, None)
        return env

    def setup(self):
        """Both sshds up, `config --ssh --yes --no-install` run as a user would: once to get the
        authorized_keys line (its tests fail), the line added on both login nodes, then again."""
        for daemon in self.sshds.values():
            daemon.start()
        os.makedirs(self.root, exist_ok=True)
        shutil.copy2(os.path.join(self.pair.root, "forever_slurm.pyz"), os.path.join(self.root, "forever_slurm.pyz"))
        with open(os.path.join(self.root, ".env"), "w") as handle:
            handle.write('FS_SSH_LOGIN_NODE="%s"\nFS_SSH_USER=root\nFS_SSH_KEY_PATH=%s\nFS_SSH_LOCAL_PORT=%d\n'
                         % (" ".join(self.words[h] for h in HOSTS), self.key, self.local_port))
        argv = self.command("config", "--ssh", "--yes", "--no-install")
        first = subprocess.run(argv, env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
        lines = [l for l in first.stdout.splitlines() if l.startswith('command="/bin/false",restrict,')]
        if len(lines) != 1:
            raise AssertionError("config --ssh printed no authorized_keys line:\n%s" % first.stdout)
        for daemon in self.sshds.values():
            daemon.authorize(lines)
        done = subprocess.run(argv, env=self.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
        self.config_output = done.stdout
        if done.returncode != 0:
            raise AssertionError("config --ssh failed with the line in place:\n%s" % done.stdout)
        return lines[0]

    def start(self, timeout=30):
        log = open(os.path.join(self.root, "tunnel.out"), "ab")
        self.proc = subprocess.Popen(self.command("tunnel"), env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if get(self.local_port, timeout=2).status == 200:
                return self
            time.sleep(0.2)
        raise AssertionError("no answer through the tunnel within %ss:\n%s" % (timeout, self.log()))

    def log(self):
        try:
            with open(os.path.join(self.root, ".work", "log", "tunnel.log")) as handle:
                return handle.read()
        except OSError:
            return ""

    def figures(self, samples, stop, cont):
        web = [s for label, s in samples if label == "web"]
        bad = [s for s in web if s.status != 200]
        gap = (web[-1].t - web[0].t) / max(1, len(web) - 1) if len(web) > 1 else 0.0
        seconds = (bad[-1].t - bad[0].t + gap) if bad else 0.0
        text = self.log()
        said = re.findall(r"up via (\S+); clients had no answer through the tunnel for at most ([0-9.]+)s", text)
        return Tunnel(len(web), len(bad), seconds, float(said[-1][1]) if said else None,
                      said[-1][0] if said else "", text.strip().splitlines()[-6:])

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        for daemon in self.sshds.values():
            if daemon.running():
                daemon.thaw()
            daemon.stop()
