"""Start, reuse and stop a throwaway Slurm cluster (munged, slurmctld, N slurmd) kept under one directory.

Contract: everything the cluster writes (config, state, spool, pid and log files) lives under
base_dir; base_dir/pids.json records exactly the daemons this harness started, so another
process (`bin/local-cluster stop`) can stop them, and nothing else. munge: a serving system
munged is reused; otherwise a private munged listens on a socket under base_dir (AuthInfo), so
clusters never share one they might stop under each other. Standard library only,
because `make demo` runs it outside pytest. Needs root (slurmd must run job steps and munged
must run as the munge user); `missing_packages()` says what to install when binaries are absent.
"""

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SBIN_PATH = "/usr/local/sbin:/usr/sbin:/sbin"

# Which Debian package provides each binary we call; `missing_packages` turns gaps into advice.
BINARY_PACKAGES = (
    ("slurmctld", "slurmctld"),
    ("slurmd", "slurmd"),
    ("sinfo", "slurm-client"),
    ("squeue", "slurm-client"),
    ("sbatch", "slurm-client"),
    ("scontrol", "slurm-client"),
    ("scancel", "slurm-client"),
    ("munged", "munge"),
    ("munge", "munge"),
    ("unmunge", "munge"),
    ("mungekey", "munge"),
)
DEBIAN_PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")

MUNGE_KEY = "/etc/munge/munge.key"

# Port layouts tried in order; the first is the one verified in the reference notes.
PORT_OFFSETS = tuple(range(0, 3000, 100))
CTLD_PORT, SLURMD_PORT, FIRST_NODE_PORT = 16817, 16818, 17001

# slurmd makes a unix socket per job step in its spool dir: <spool>/slurmd-nodeN/nodeN_<job>.<step>,
# and sun_path holds 108 bytes; leave room for a 10-digit job id and the batch step number.
MAX_SOCKET_PATH = 107
STEP_SOCKET_SUFFIX = "/node99_1234567890.4294967291"

# Node states a started cluster may settle in; anything else is still booting or broken.
USABLE_STATES = frozenset(("idle", "mix", "alloc", "comp"))
RESUMABLE_STATES = frozenset(("down", "drain", "drng", "fail"))


class ClusterError(Exception):
    """The local cluster could not be started, reached or stopped; the message says why."""


def which(name):
    """Full path of a binary, looking in the sbin directories too (they are not on every PATH)."""
    return shutil.which(name, path=os.environ.get("PATH", "") + ":" + SBIN_PATH)


def missing_packages():
    """Sorted Debian packages whose binaries are not installed; empty when all are present."""
    return sorted({pkg for binary, pkg in BINARY_PACKAGES if which(binary) is None})


def short_hostname():
    """The host name jobs will print with `hostname -s`."""
    return socket.gethostname().split(".")[0]


def port_is_free(port, host="0.0.0.0"):
    """True when nothing listens on port (Slurm daemons bind every interface)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Like the Slurm daemons, ignore TIME_WAIT leftovers of a cluster that just stopped.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def choose_ports(nodes, is_free=port_is_free, offsets=PORT_OFFSETS):
    """First port layout {ctld, slurmd, node_ports} whose ports are all free."""
    for offset in offsets:
        layout = {
            "ctld": CTLD_PORT + offset,
            "slurmd": SLURMD_PORT + offset,
            "nodes": [FIRST_NODE_PORT + offset + i for i in range(nodes)],
        }
        if all(is_free(p) for p in [layout["ctld"], layout["slurmd"]] + layout["nodes"]):
            return layout
    raise ClusterError("no free port layout for a local Slurm cluster (tried offsets %s..%s from %s)"
                       % (offsets[0], offsets[-1], CTLD_PORT))


@contextlib.contextmanager
def port_lock():
    """Serialise port choice across processes until the chosen ports are bound by the daemons."""
    with open(os.path.join(tempfile.gettempdir(), "forever-slurm-ports.lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


DEFAULT_PARTITIONS = ("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",)


def render_config(base_dir, hostname, ports, nodes, munge_socket=None, user="root", cluster_name="forever",
                  extra=(), partitions=DEFAULT_PARTITIONS, return_to_service=2):
    """slurm.conf text for a cluster of `nodes` virtual nodes that all live on this host.

    munge_socket: a private munged's socket, or None to use the system one. extra: more global
    lines (before the nodes); partitions: the PartitionName lines (a shared cluster has several);
    return_to_service: 2 brings back even a node an administrator set DOWN, at its next contact.
    """
    last = len(ports["nodes"])
    node_ports = "%d-%d" % (ports["nodes"][0], ports["nodes"][-1]) if last > 1 else str(ports["nodes"][0])
    node_range = "node[1-%d]" % nodes if nodes > 1 else "node1"
    lines = [
        "# Written by tests/harness/slurm_cluster.py; regenerated on every fresh start.",
        "ClusterName=%s" % cluster_name,
        # NodeAddr/SlurmctldHost address pin all daemon traffic to loopback.
        "SlurmctldHost=%s(127.0.0.1)" % hostname,
        "SlurmUser=%s" % user,
        "SlurmdUser=%s" % user,
        "SlurmctldPort=%d" % ports["ctld"],
        "SlurmdPort=%d" % ports["slurmd"],
        "AuthType=auth/munge",
        "CredType=cred/munge",
    ]
    if munge_socket:
        lines.append("AuthInfo=socket=%s" % munge_socket)
    lines += [
        "StateSaveLocation=%s/state" % base_dir,
        "SlurmdSpoolDir=%s/spool/slurmd-%%n" % base_dir,
        "SlurmctldPidFile=%s/run/slurmctld.pid" % base_dir,
        "SlurmdPidFile=%s/run/slurmd-%%n.pid" % base_dir,
        "SlurmctldLogFile=%s/log/slurmctld.log" % base_dir,
        "SlurmdLogFile=%s/log/slurmd-%%n.log" % base_dir,
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        # No cgroups inside containers.
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "SchedulerType=sched/backfill",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        # Nodes rejoin by themselves after a daemon restart.
        "ReturnToService=%d" % return_to_service,
        # Jobs start within about a second instead of the default minute.
        "SchedulerParameters=sched_interval=1",
        # Finished jobs leave squeue quickly, as the reconcile loop expects on a real cluster.
        "MinJobAge=5",
        # A stopped controller makes client calls fail in seconds rather than the default 10.
        "MessageTimeout=3",
        # Virtual nodes claim a CPU count that differs from the real one.
        "SlurmdParameters=config_overrides",
    ]
    lines += list(extra)
    lines += [
        "NodeName=%s NodeHostname=%s NodeAddr=127.0.0.1 CPUs=4 RealMemory=2000 Port=%s State=UNKNOWN"
        % (node_range, hostname, node_ports),
    ]
    lines += list(partitions) + [""]
    return "\n".join(lines)


def parse_node_states(sinfo_text):
    """{node: state} from `sinfo -h -N -o '%N %t'`; flags like '*' (not responding) are kept."""
    states = {}
    for line in sinfo_text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def pid_alive(pid):
    """True when pid runs and is not a zombie."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            # The state letter follows the ')' that closes the command name.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def pid_cmdline(pid):
    """The argv of pid as one space-joined string, or '' when it is gone."""
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def pid_is(pid, needle):
    """True when pid is alive and its argv contains needle, so a recycled pid is never signalled."""
    return bool(pid) and pid_alive(pid) and needle in pid_cmdline(pid)


def munge_works(sock=None):
    """True when a munged answers on sock (default: the system socket): `munge -n | unmunge` succeeds."""
    opt = ["--socket=" + sock] if sock else []
    try:
        cred = subprocess.run([which("munge") or "munge", "-n"] + opt, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=10)
        if cred.returncode != 0:
            return False
        done = subprocess.run([which("unmunge") or "unmunge"] + opt, input=cred.stdout,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10)
        return done.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def process_table():
    """{pid: (ppid, comm)} for every process we can read."""
    table = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    head, rest = f.read().rsplit(")", 1)
                table[int(name)] = (int(rest.split()[1]), head.split("(", 1)[1])
            except (OSError, IndexError, ValueError):
                continue
    return table


def pid_environ_has(pid, entry):
    """True when pid's environment holds entry ('KEY=value')."""
    try:
        with open("/proc/%d/environ" % pid, "rb") as f:
            return entry.encode() in f.read().split(b"\0")
    except OSError:
        return False


def leftover_job_steps(conf):
    """Pids of slurmstepd processes launched for the cluster using conf, and all their descendants.

    They inherit SLURM_CONF from our slurmd, which is how we know they are ours.
    """
    table = process_table()
    found = [pid for pid, (_, comm) in table.items()
             if comm == "slurmstepd" and pid_environ_has(pid, "SLURM_CONF=" + conf)]
    children = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo, seen = list(found), []
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.append(pid)
            todo.extend(children.get(pid, []))
    return seen


def kill_quietly(pid, sig):
    try:
        os.kill(pid, sig)
    except OSError:
        pass


def tail(path, n):
    """Last n lines of a text file, or a note that it is missing."""
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError as exc:
        return "(cannot read %s: %s)\n" % (path, exc.strerror)


class LocalCluster(object):
    """One throwaway Slurm cluster under base_dir: `nodes` virtual nodes, all on this host."""

    def __init__(self, base_dir, nodes=3, hostname=None):
        self.base_dir = os.path.abspath(base_dir)
        self.nodes = nodes
        self.node_names = ["node%d" % i for i in range(1, nodes + 1)]
        self.hostname = hostname or short_hostname()
        self.conf = os.path.join(self.base_dir, "slurm.conf")
        self.pids_file = os.path.join(self.base_dir, "pids.json")
        self.log_dir = os.path.join(self.base_dir, "log")
        self._children = {}  # pid -> Popen, so daemons we started and stop get reaped

    # ---- client side -------------------------------------------------------------------------

    def client_vars(self):
        """The variables a Slurm client needs to talk to this cluster."""
        return {"SLURM_CONF": self.conf}

    def env(self, extra=None):
        """os.environ plus client_vars() plus extra, with sbin on PATH: pass as env= to clients."""
        env = dict(os.environ)
        env.update(self.client_vars())
        env["PATH"] = env.get("PATH", "/usr/bin:/bin") + ":" + SBIN_PATH
        env.update(extra or {})
        return env

    def run(self, argv, timeout=30, check=False, extra_env=None):
        """Run a Slurm client against this cluster; returns CompletedProcess with str output."""
        return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=timeout, env=self.env(extra_env), check=check)

    def _try(self, argv, timeout=15):
        """Run a client, returning (rc, stdout, stderr); a hang or a missing binary is rc None."""
        try:
            done = self.run(argv, timeout=timeout)
        except (subprocess.TimeoutExpired, OSError) as exc:
            return None, "", str(exc)
        return done.returncode, done.stdout, done.stderr

    def controller_up(self):
        """True when `scontrol ping` reports the controller UP."""
        if not os.path.exists(self.conf):
            return False
        rc, out, _ = self._try(["scontrol", "ping"], timeout=10)
        return rc == 0 and "is UP" in out

    def node_states(self):
        """{node: state} from sinfo, or None when the controller does not answer."""
        rc, out, _ = self._try(["sinfo", "-h", "-N", "-o", "%N %t"], timeout=10)
        return parse_node_states(out) if rc == 0 else None

    def job_ids(self):
        """Ids of every job the controller knows, or None when it does not answer."""
        rc, out, _ = self._try(["squeue", "-h", "-o", "%i"], timeout=10)
        return out.split() if rc == 0 else None

    # ---- recorded daemons --------------------------------------------------------------------

    def _read_pids(self):
        try:
            with open(self.pids_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def _write_pids(self, pids):
        tmp = self.pids_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(pids, f, indent=1, sort_keys=True)
        os.replace(tmp, self.pids_file)

    def _recorded_alive(self, pids):
        """True when every daemon pids.json names is still the daemon we started."""
        if pids.get("nodes") != self.node_names or not pid_is(pids.get("slurmctld"), self.conf):
            return False
        if pids.get("munged") and not pid_is(pids["munged"], pids.get("munge_socket") or "munged"):
            return False
        return all(pid_is(pids.get("slurmd", {}).get(n), self.conf) for n in self.node_names)

    def is_up(self):
        """True when the recorded daemons are alive and the controller answers."""
        return self._recorded_alive(self._read_pids()) and self.controller_up()

    # ---- start -------------------------------------------------------------------------------

    def start(self, timeout=60):
        """Bring the cluster up, or reuse the one already running from base_dir.

        Returns True when this call started daemons, False when it reused a running cluster.
        Raises ClusterError (with log tails) when the cluster does not come up within timeout.
        """
        deadline = time.monotonic() + timeout
        if self.is_up():
            self._wait_nodes(USABLE_STATES, deadline)
            return False
        self._preflight()
        self.stop()  # leftovers from a half-dead earlier run: only pids we recorded
        self._fresh_dirs()
        try:
            munged, munge_socket = self._ensure_munged(deadline)
            pids = {"nodes": self.node_names, "slurmd": {}, "munged": munged, "munge_socket": munge_socket}
            self._write_pids(pids)
            with port_lock():
                pids["ports"] = choose_ports(self.nodes)
                with open(self.conf, "w") as f:
                    f.write(self.render(pids["ports"], munge_socket))
                self._start_daemons(pids, deadline)
        except BaseException:
            # Leave the logs for the error message, not half a cluster.
            self.stop()
            raise
        return True

    def render(self, ports, munge_socket):
        """This cluster's slurm.conf text (a subclass adds partitions and settings)."""
        return render_config(self.base_dir, self.hostname, ports, self.nodes, munge_socket)

    def _start_daemons(self, pids, deadline):
        """slurmctld, then one slurmd per node; returns once every node is idle (ports now bound)."""
        pids["slurmctld"] = self._spawn("slurmctld", ["slurmctld", "-D", "-f", self.conf])
        self._write_pids(pids)
        self._wait(self.controller_up, deadline, "slurmctld to answer scontrol ping")
        for name in self.node_names:
            pids["slurmd"][name] = self._spawn("slurmd-" + name, ["slurmd", "-D", "-N", name, "-f", self.conf])
            self._write_pids(pids)
        self._wait_nodes(frozenset(("idle",)), deadline)

    def _preflight(self):
        room = MAX_SOCKET_PATH - len("/spool/slurmd-node99" + STEP_SOCKET_SUFFIX)
        if len(self.base_dir) > room:
            raise ClusterError("cluster dir %s is too long for slurmd's job-step sockets (at most %d "
                               "characters); use a shorter one such as /tmp/fsc" % (self.base_dir, room))
        missing = missing_packages()
        if missing:
            raise ClusterError("Slurm/munge binaries are missing; install the Debian packages: %s "
                               "(as root: bin/install-slurm)" % " ".join(missing))
        if os.geteuid() != 0:
            raise ClusterError("the local Slurm cluster needs root (slurmd launches job steps, "
                               "munged runs as the munge user); run as root or in a container")

    def _fresh_dirs(self):
        """Empty state, spool, run and log dirs so no job or log line from an earlier run leaks in."""
        for sub in ("state", "spool", "run", "log", "munge"):
            path = os.path.join(self.base_dir, sub)
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path)
        for name in self.node_names:
            os.makedirs(os.path.join(self.base_dir, "spool", "slurmd-" + name))

    def _spawn(self, log_name, argv):
        """Start one daemon in its own session (it outlives this process); returns its pid."""
        argv = [which(argv[0]) or argv[0]] + argv[1:]
        out = open(os.path.join(self.log_dir, log_name + ".stdout"), "ab")
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    env=self.env(), cwd=self.base_dir, start_new_session=True)
        except OSError as exc:
            raise ClusterError("cannot start %s: %s" % (argv[0], exc))
        finally:
            out.close()
        self._children[proc.pid] = proc
        return proc.pid

    def _wait(self, ready, deadline, what):
        """Poll ready() every 0.2 s until it is true or deadline passes (then ClusterError)."""
        while True:
            if ready():
                return
            if time.monotonic() > deadline:
                raise ClusterError("timed out waiting for %s in %s\n%s"
                                   % (what, self.base_dir, self.log_tail(20)))
            time.sleep(0.2)

    def _wait_nodes(self, accept, deadline):
        """Wait until every node's state is in accept, resuming nodes left down by a restart."""
        resumed = {}

        def settled():
            states = self.node_states() or {}
            for node, state in states.items():
                if state in RESUMABLE_STATES and time.monotonic() - resumed.get(node, 0) > 3:
                    resumed[node] = time.monotonic()
                    self._try(["scontrol", "update", "NodeName=" + node, "State=RESUME"])
            return sorted(states) == self.node_names and all(s in accept for s in states.values())

        self._wait(settled, deadline, "nodes %s to be %s" % (",".join(self.node_names),
                                                          "/".join(sorted(accept))))

    def wait_idle(self, timeout=30):
        """Block until sinfo shows every node idle (no jobs left on any)."""
        self._wait_nodes(frozenset(("idle",)), time.monotonic() + timeout)

    def _ensure_munged(self, deadline):
        """Reuse the system munged when it serves, else start a private one for this cluster.

        Returns (pid, socket): (None, None) when reusing. A private munged listens on a socket
        under base_dir, so stopping this cluster never pulls munge from under another one.
        """
        if munge_works():
            return None, None
        munge_user = pwd.getpwnam("munge")
        if not os.path.exists(MUNGE_KEY):
            os.makedirs(os.path.dirname(MUNGE_KEY), 0o700, exist_ok=True)
            os.chown(os.path.dirname(MUNGE_KEY), munge_user.pw_uid, munge_user.pw_gid)
            subprocess.run([which("mungekey"), "--create", "--keyfile=" + MUNGE_KEY], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=30, check=True)
            os.chown(MUNGE_KEY, munge_user.pw_uid, munge_user.pw_gid)
            os.chmod(MUNGE_KEY, 0o600)
        run_dir = os.path.join(self.base_dir, "munge")
        os.makedirs(run_dir, exist_ok=True)
        os.chown(run_dir, munge_user.pw_uid, munge_user.pw_gid)
        # munged refuses a socket directory that others cannot traverse (mkdtemp makes 0700 dirs).
        os.chmod(run_dir, 0o755)
        os.chmod(self.base_dir, os.stat(self.base_dir).st_mode | 0o011)
        sock = os.path.join(run_dir, "munge.socket")
        pid_file = os.path.join(run_dir, "munged.pid")
        argv = ["runuser", "-u", "munge", "--", which("munged"), "--force", "--socket=" + sock,
                "--key-file=" + MUNGE_KEY, "--pid-file=" + pid_file,
                "--log-file=" + os.path.join(run_dir, "munged.log"),
                "--seed-file=" + os.path.join(run_dir, "munged.seed")]
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=30)
        if done.returncode != 0:
            raise ClusterError("munged failed to start (exit %s): %s\n%s" % (
                done.returncode, done.stderr.strip(), tail(os.path.join(run_dir, "munged.log"), 10)))
        self._wait(lambda: munge_works(sock), deadline, "munged to answer `munge -n | unmunge`")
        with open(pid_file) as f:
            return int(f.read().strip()), sock

    # ---- outages -----------------------------------------------------------------------------

    def stop_controller(self, timeout=15):
        """Stop slurmctld only (slurmd and running jobs carry on) to simulate a controller outage."""
        pids = self._read_pids()
        self._terminate(pids.get("slurmctld"), self.conf, timeout)
        pids["slurmctld"] = None
        self._write_pids(pids)

    def start_controller(self, timeout=30):
        """Restart slurmctld from its saved state and wait until it answers and nodes are back."""
        deadline = time.monotonic() + timeout
        pids = self._read_pids()
        if not pid_is(pids.get("slurmctld"), self.conf):
            pids["slurmctld"] = self._spawn("slurmctld", ["slurmctld", "-D", "-f", self.conf])
            self._write_pids(pids)
        self._wait(self.controller_up, deadline, "slurmctld to answer scontrol ping after restart")
        self._wait_nodes(USABLE_STATES, deadline)

    # ---- stop --------------------------------------------------------------------------------

    def cancel_all(self, timeout=15):
        """Cancel every job and wait (bounded) until squeue lists none; True when it is empty."""
        ids = self.job_ids()
        if ids:
            self._try(["scancel"] + ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids = self.job_ids()
            if ids is None or not ids:
                return ids is not None
            time.sleep(0.3)
        return False

    def stop(self, timeout=15):
        """Stop exactly the daemons pids.json records (munged only if this harness started it).

        Jobs are cancelled first so their slurmstepd processes exit with them.
        """
        pids = self._read_pids()
        if not pids:
            return
        slurmd_alive = any(pid_is(pid, self.conf) for pid in pids.get("slurmd", {}).values())
        if slurmd_alive and not pid_is(pids.get("slurmctld"), self.conf):
            # Mid-outage: only the controller can cancel the jobs still running on the nodes.
            try:
                self.start_controller(timeout=20)
            except ClusterError:
                pass
            pids = self._read_pids()
        if pid_is(pids.get("slurmctld"), self.conf):
            self.cancel_all(timeout=10)
        for name in sorted(pids.get("slurmd", {})):
            self._terminate(pids["slurmd"][name], self.conf, timeout)
        self._terminate(pids.get("slurmctld"), self.conf, timeout)
        for pid in leftover_job_steps(self.conf):
            kill_quietly(pid, signal.SIGKILL)
        self._terminate(pids.get("munged"), pids.get("munge_socket") or "munged", timeout)
        os.remove(self.pids_file)

    def _terminate(self, pid, needle, timeout):
        """SIGTERM pid if it is still ours, SIGKILL after timeout; reap it if it is our child."""
        if not pid_is(pid, needle):
            self._reap(pid)
            return
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._reap(pid)
            if not pid_alive(pid):
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            self._reap(pid)
            if not pid_alive(pid):
                return
            time.sleep(0.1)

    def _reap(self, pid):
        proc = self._children.get(pid)
        if proc is not None and proc.poll() is not None:
            del self._children[pid]

    # ---- diagnostics -------------------------------------------------------------------------

    def log_tail(self, n=40):
        """The last n lines of the slurmctld log and of every slurmd log, with headers."""
        names = ["slurmctld.log", "slurmctld.stdout"]
        for node in self.node_names:
            names += ["slurmd-%s.log" % node, "slurmd-%s.stdout" % node]
        parts = []
        for name in names:
            path = os.path.join(self.log_dir, name)
            if os.path.exists(path) or name.endswith(".log"):
                parts.append("==> %s <==\n%s" % (path, tail(path, n)))
        return "\n".join(parts)
