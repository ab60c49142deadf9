"""Keeps one ssh port forward from the web server to Traefik on a login node alive: start, probe, heal, fail over.

Contract: `Supervisor(Tunnel(argv_for_node, nodes, probe, ...), Pacing(...)).run(stop_event)` runs until
stop_event is set. It starts `ssh -N -L ...` for the current login node, probes end to end through the
tunnel, restarts ssh with a jittered exponential backoff when it exits or stops forwarding, reconnects
the moment a login node that went away accepts connections again, and moves to the next login node
at once when one does not accept connections (or after a few other failures). The clock, sleep, popen,
random and probe are passed in so tests simulate time and ssh.
"""

import collections
import logging
import random
import re
import signal
import socket
import subprocess
import threading
import time
from typing import Callable, List, NamedTuple, Optional

from ..systems import httpget

log = logging.getLogger(__name__)

# What one probe through the tunnel saw.
PROBE_OK = "ok"               # an HTTP response came back: the whole path works
PROBE_NO_ANSWER = "noanswer"  # ssh took the connection but nothing answered behind it
PROBE_REFUSED = "refused"     # nothing listens on the local port: ssh is not forwarding (yet)

# ssh's words for "the TCP connection to the login node failed"; only then is it worth polling the
# node's ssh port to reconnect the moment it comes back.
_CONNECT_FAILED = "connect to host"


def _ssh_path(path):
    """A path as an ssh -o value: ssh expands %-tokens and splits file lists on blanks."""
    path = path.replace("%", "%%")
    if any(c.isspace() for c in path):
        path = '"%s"' % path
    return path


def known_hosts_option(known_hosts):
    """The -o word naming our own known_hosts (also how `config --ssh` recognises our tunnel's ssh)."""
    return "UserKnownHostsFile=%s" % _ssh_path(known_hosts)


def ssh_argv(ssh_bin, login_node, user, key_path, known_hosts, local_port, remote_port, ssh_port=None,
             alive_interval=2, alive_count=3, host_key_checking="yes", connect_timeout=5, command=None,
             forward=None):
    """The argv of one tunnel ssh: forward 127.0.0.1:local here to 127.0.0.1:remote on the login node.

    command: instead of the forward, run this argv there (to check that the key cannot).
    forward: instead of the -L, these options (with -N; to check what else the key may open).
    """
    target = "%s@%s" % (user, login_node) if user else login_node
    if command is not None:
        what = []
    elif forward is not None:
        what = ["-N"] + list(forward)
    else:
        what = ["-N", "-L", "127.0.0.1:%d:127.0.0.1:%d" % (int(local_port), int(remote_port))]
    argv = [ssh_bin] + what + [
        "-i", key_path.replace("%", "%%"),
        # Only our key: an agent or ~/.ssh/id_* keys could log in without the permitopen restriction.
        "-o", "IdentitiesOnly=yes",
        # Never prompt: there is nobody at a terminal under systemd or cron.
        "-o", "BatchMode=yes",
        # Without this, ssh stays connected but forwards nothing when the local port is taken.
        "-o", "ExitOnForwardFailure=yes",
        # A silently dead network otherwise keeps a useless ssh alive for hours (TCP timeouts). 3 x 2 s
        # notices a node gone silent in 6-8 s; the message is only sent after 2 s without any traffic
        # from the node, and costs no request to Traefik (unlike a probe).
        "-o", "ServerAliveInterval=%d" % alive_interval,
        "-o", "ServerAliveCountMax=%d" % alive_count,
        # A node that drops packets would hold each try for minutes (SYN retries); 5 s is ample on a
        # cluster network and lets the next login node take over well within 10 s.
        "-o", "ConnectTimeout=%d" % connect_timeout,
        "-o", known_hosts_option(known_hosts),
        "-o", "StrictHostKeyChecking=%s" % host_key_checking,
        # A ControlMaster from the user's ~/.ssh/config would carry the forward inside another
        # connection, where ExitOnForwardFailure and our restarts mean nothing.
        "-o", "ControlPath=none",
    ]
    if ssh_port:
        argv += ["-p", str(int(ssh_port))]
    argv.append(target)
    return argv + list(command or [])


def host_pattern(login_node, ssh_port=None):
    """How known_hosts names the node: plain for port 22, [host]:port otherwise."""
    if ssh_port and int(ssh_port) != 22:
        return "[%s]:%d" % (login_node, int(ssh_port))
    return login_node


def http_probe(port, path="/", timeout=2.0, host="127.0.0.1"):
    """One HTTP request through the tunnel: PROBE_OK on any HTTP answer within timeout (in all, however
    it trickles in), else why not."""
    answer = httpget.fetch_all({"": httpget.Get(host, int(port), path)}, timeout,
                               time.monotonic() + 2 * timeout).get("", httpget.Answer(None))
    if answer.status is not None:
        return PROBE_OK
    return PROBE_NO_ANSWER if answer.connected else PROBE_REFUSED


def tcp_reachable(host, port, timeout=1.0):
    """True when host accepts a TCP connection on port (its sshd is back), its name resolved and the
    connection made within timeout each."""
    answer = httpget.fetch_all({"": httpget.Get(host, int(port), None)}, timeout,
                               time.monotonic() + 2 * timeout).get("", httpget.Answer(None))
    return answer.status == 0


def sshd_answers(host, port, timeout=1.0):
    """True when an sshd greets us on host:port ("SSH-2.0-..."): its sshd is back and working.

    A TCP connection alone is not enough: the kernel accepts connections for a stopped or hung sshd
    (SIGSTOP, a full disk) into its listen backlog, and ssh would then wait out its ConnectTimeout.
    The whole exchange has one deadline: an sshd that trickles its greeting costs `timeout`, no more."""
    deadline = time.monotonic() + timeout
    try:
        sock = socket.create_connection((host, int(port)), timeout=timeout)
    except OSError:
        return False
    try:
        greeting = b""
        while b"\n" not in greeting and len(greeting) < 256:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            sock.settimeout(left)
            chunk = sock.recv(256)
            if not chunk:
                break
            greeting += chunk
        return greeting.startswith(b"SSH-")
    except OSError:
        return False
    finally:
        sock.close()


def diagnose(stderr_lines, login_node, known_hosts, key_path, ssh_port=None, authorized=None):
    """Turn ssh's stderr into (message saying what to do, known_hosts line or None), or None if unknown."""
    text = "\n".join(stderr_lines)
    pattern = host_pattern(login_node, ssh_port)
    if "REMOTE HOST IDENTIFICATION HAS CHANGED" in text or "has changed and you have requested" in text:
        offending = re.search(r"Offending \S+ key in (.+):(\d+)", text)
        line = int(offending.group(2)) if offending else None
        sent = re.search(r"fingerprint for the (\S+) key sent by the remote host is\s+(\S+?)\.?$", text, re.M)
        new = " It now presents the %s key %s." % sent.groups() if sent else ""
        return ("the host key of %s has CHANGED since forever-slurm first connected; the old key is in %s."
                "%s This can mean someone is intercepting the connection, so the tunnel refuses it. "
                "If the change is legitimate (the login node was reinstalled or its keys rotated: compare the "
                "new fingerprint with what its admins publish), remove the old key with: "
                "ssh-keygen -R '%s' -f '%s' and run `config --ssh` again to record the new one."
                % (login_node, known_hosts, new, pattern, known_hosts)), line
    if "Host key verification failed" in text or "host key is known" in text:
        return ("no host key of %s is recorded in %s, and the tunnel never accepts an unknown one. "
                "Run `config --ssh` to connect once and record it." % (login_node, known_hosts)), None
    if "UNPROTECTED PRIVATE KEY FILE" in text or "bad permissions" in text:
        return ("ssh refuses the key %s because others can read it: run chmod 600 '%s'."
                % (key_path, key_path)), None
    if "Permission denied" in text:
        add = (" Add this line to ~/.ssh/authorized_keys on %s, then try again:\n  %s" % (login_node, authorized)
               if authorized else " Add the line printed by `config --ssh` to ~/.ssh/authorized_keys there.")
        return "%s refused the key %s.%s" % (login_node, key_path, add), None
    if "administratively prohibited" in text:
        return ("%s accepted the key but refused this forward: the permitopen port in its authorized_keys "
                "line differs from the remote port (FS_TRAEFIK_PORT). Run `config --ssh` again and replace "
                "the line." % login_node), None
    if "Address already in use" in text or "cannot listen to port" in text:
        return ("the local port is already taken on this machine (another tunnel running?); stop it or "
                "choose another FS_SSH_LOCAL_PORT."), None
    if "Could not resolve hostname" in text:
        return "cannot resolve the login node name %r: check FS_SSH_LOGIN_NODE." % login_node, None
    # Only ssh's own connection: "open failed: connect failed: Connection refused" is about the forward.
    if _CONNECT_FAILED in text and "Connection refused" in text:
        return ("%s refuses connections on port %s: its sshd is down, or FS_SSH_PORT is wrong."
                % (login_node, ssh_port or 22)), None
    return None


class SshProcess:
    """One running ssh, with the last lines of its stderr kept for the log."""

    def __init__(self, argv, popen=subprocess.Popen, tail_lines=40):
        # 40 lines: the changed-host-key banner alone is 15, with the new fingerprint near its top.
        # Popen, not proc.run: this ssh is meant to run for days, and proc.run is for short commands.
        self.proc = popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, universal_newlines=True)
        self.tail = collections.deque(maxlen=tail_lines)
        self.count = 0
        self._changed = threading.Condition()
        # A thread drains stderr so ssh never blocks on a full pipe and its last words are kept.
        self._reader = threading.Thread(target=self._read, name="ssh-stderr", daemon=True)
        self._reader.start()

    def _read(self):
        try:
            for line in self.proc.stderr:
                line = line.rstrip()
                if line:
                    with self._changed:
                        self.tail.append(line)
                        self.count += 1
                        self._changed.notify_all()
        except (OSError, ValueError):
            pass

    @property
    def pid(self):
        return self.proc.pid

    def returncode(self):
        return self.proc.poll()

    def exited(self):
        return self.proc.poll() is not None

    def stop(self, grace=5.0):
        """Terminate ssh (kill it if it lingers) and return its last stderr lines."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=grace)
        return self.stderr_lines()

    def stderr_lines(self):
        if self.proc.poll() is not None:
            self._reader.join(timeout=1.0)
        return list(self.tail)

    def lines_since(self, mark, wait=0.0):
        """The lines ssh wrote after its mark-th line, waiting up to wait seconds for one to arrive."""
        with self._changed:
            if wait > 0 and self.count <= mark:
                self._changed.wait_for(lambda: self.count > mark, timeout=wait)
            new = min(self.count - mark, len(self.tail))
            return list(self.tail)[-new:] if new > 0 else []


def _noise(line):
    """ssh lines that say nothing about a failure."""
    return line.startswith("Warning: Permanently added") or line.startswith("@@@@")


def summarize(lines, limit=3):
    useful = [l for l in lines if not _noise(l)]
    return " | ".join(useful[-limit:]) if useful else "no error output"


class Tunnel(NamedTuple):
    """What the Supervisor keeps up: how to start ssh for a login node and how to tell it works."""
    argv_for_node: Callable[[str], List[str]]   # login node -> the ssh argv (ssh_argv)
    nodes: List[str]                            # login nodes in order of preference, for failover
    probe: Callable[[], str]                    # one request through the tunnel -> PROBE_*
    # login node -> does its ssh port accept a TCP connection? None: no early reconnects.
    reachable: Optional[Callable[[str], bool]] = None
    # (ssh's stderr lines, node) -> (message, line) or None, as diagnose().
    explain: Optional[Callable] = None
    describe: str = "tunnel"                    # how log lines name this tunnel
    # () -> "" when the local port is free for ssh, else who holds it. None: not checked.
    local_port_user: Optional[Callable[[], str]] = None
    # ssh's pid -> does that process listen on the local port? None: not checked (any answer counts).
    forwards_through: Optional[Callable[[int], bool]] = None


class Pacing(NamedTuple):
    """How fast the Supervisor probes, backs off and fails over; seconds unless said otherwise."""
    tick: float = 0.25              # how often a running ssh is looked at
    probe_interval: float = 5.0     # between probes of a healthy tunnel
    recheck_interval: float = 0.5   # between probes once one got no answer, to notice a dead link soon
    probe_failures: int = 3         # probes in a row without an answer before ssh is restarted
    start_timeout: float = 20.0     # a new ssh must forward (or the node say why not) within this
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    healthy_reset: float = 30.0     # up this long: the backoff starts over
    failover_after: int = 3         # failed starts (other than an unreachable node) before the next node
    reach_interval: float = 0.25    # while backing off, how often a silent node's ssh port is tried
    settle: float = 0.2             # wait for ssh's "open failed" line after a probe got no answer
    jitter: float = 0.2             # waits vary by +-this fraction, so web servers do not retry in step


# ssh's words when ServerAlive gave up: the node stopped answering under an open connection.
_SERVER_SILENT = "not responding"
# ssh's words when it could not listen on the local port (it logged in first, then gave up).
_LOCAL_TAKEN = ("Address already in use", "cannot listen to port", "Could not request local forwarding")


def _local_port_taken(stderr_lines):
    return any(words in line for line in stderr_lines for words in _LOCAL_TAKEN)


def _unreachable(stderr_lines):
    """ssh could not even open a TCP connection (refused, timed out, no route): the node is away."""
    return any(_CONNECT_FAILED in line or "during banner exchange" in line for line in stderr_lines)


class _Watch:
    """What the Supervisor knows about the one ssh it watches (see Supervisor._run_once)."""

    def __init__(self, node, ssh, started):
        self.node = node
        self.ssh = ssh
        self.started = started
        self.up_since = None        # when probes first got an answer through this ssh
        self.empty_since = None     # since when ssh forwards but nothing answers behind it
        self.failures = 0           # probes in a row without an answer
        self.next_probe = started


class Supervisor:
    """Runs the tunnel ssh forever; see the module docstring for the contract."""

    def __init__(self, tunnel, pacing=Pacing(), popen=subprocess.Popen, clock=time.monotonic,
                 sleep=time.sleep, random=random.random):
        if not tunnel.nodes:
            raise ValueError("Supervisor needs at least one login node")
        self.tunnel = tunnel
        self.nodes = list(tunnel.nodes)
        self.pacing = pacing
        self.popen = popen
        self.clock = clock
        self.sleep = sleep
        self.random = random
        self.describe = tunnel.describe
        self.index = 0
        self.delay = pacing.backoff_initial
        self.failed_starts = 0
        self.state = "stopped"
        # (clock, state, node) of recent state changes, for tests and a future `status`.
        self.history = collections.deque(maxlen=100)
        self.starts = 0
        self._last_message = None
        self._down_since = None    # the first sign of trouble since the tunnel was last up
        self._last_answer = None   # (clock, node) of the last probe answered through the tunnel
        self._failing = set()      # nodes that failed since the tunnel was last up

    @property
    def node(self):
        return self.nodes[self.index]

    def run(self, stop_event=None):
        """Keep the tunnel up until stop_event is set; never raises for ssh or network trouble."""
        stop = stop_event if stop_event is not None else threading.Event()
        while not stop.is_set():
            node = self.node
            outcome, stderr = self._run_once(node, stop)
            if outcome == "stopped":
                break
            if outcome == "local":
                # A program of this machine holds the local port: no login node can help, and each
                # try would log in for nothing. Back off until the port is free.
                wait, self.delay = self.delay, min(self.delay * 2, self.pacing.backoff_max)
                self._wait(self._jittered(wait), stop, set(), look=False)
                continue
            refused = outcome == "failed" and _unreachable(stderr)
            # Also away: a node that stopped answering before the tunnel was up (ServerAlive gave up).
            away = refused or (outcome == "failed" and any(_SERVER_SILENT in l for l in stderr))
            was_up = outcome in ("lost", "stalled")
            self.failed_starts = 0 if was_up else self.failed_starts + 1
            self._failing.add(node)
            if len(self.nodes) > 1 and (away or outcome in ("empty", "stalled")
                                        or self.failed_starts >= self.pacing.failover_after):
                why = ("nothing answered behind it" if outcome == "empty"
                       else "it does not accept connections" if away
                       else "the tunnel through it went silent" if outcome == "stalled"
                       else "it stayed down after %d tries" % self.failed_starts)
                self._switch((self.index + 1) % len(self.nodes), why)
                if outcome != "empty" and self.node not in self._failing:
                    continue  # a node not tried yet: no reason to wait
            # After a loss of a tunnel that had stayed up (healthy_reset), the delay is back at its
            # start: a quick retry. One that keeps coming up and falling over backs off like any failure.
            wait = self.delay
            self.delay = min(self.delay * 2, self.pacing.backoff_max)
            self._wait(self._jittered(wait), stop, {node} if refused else set())
        self.state = "stopped"

    def _switch(self, index, why):
        old = self.node
        self.index = index
        self.failed_starts = 0
        self._last_message = None
        log.warning("%s: switching from %s to %s: %s", self.describe, old, self.node, why)

    def _jittered(self, seconds):
        return seconds * (1 + self.pacing.jitter * (2 * self.random() - 1))

    def _set_state(self, state, message, level=logging.INFO):
        """Log a state change once; repeats of the same down message stay at debug level."""
        if state != self.state or message != self._last_message:
            log.log(level, "%s: %s", self.describe, message)
        else:
            log.debug("%s: %s", self.describe, message)
        if state != self.state:
            self.history.append((self.clock(), state, self.node))
        self.state = state
        self._last_message = message

    def _explain(self, lines, node):
        found = self.tunnel.explain(lines, node) if self.tunnel.explain is not None else None
        return found[0] if found else None

    def _trouble(self, now=None):
        if self._down_since is None:
            self._down_since = self.clock() if now is None else now

    def _down(self, node, why, stderr):
        self._trouble()
        message = "down (%s): %s; ssh said: %s" % (node, why, summarize(stderr))
        detail = self._explain(stderr, node)
        if detail:
            message += " -> " + detail
        self._set_state("down", message, logging.WARNING)

    def _up(self, node, now):
        """Log "up", saying how long clients may have had no answer: since the last answer through
        the tunnel, not since ssh was seen to fail (a frozen node costs the ServerAlive seconds first)."""
        if self._last_answer is not None:
            answered_at, answered_via = self._last_answer
            after = ("; clients had no answer through the tunnel for at most %.1fs (the last answer came "
                     "through %s %.1fs ago" % (now - answered_at, answered_via, now - answered_at))
            if self._down_since is not None:
                after += ", trouble was first seen %.1fs ago" % (now - self._down_since)
            after += ")"
        else:
            after = "" if self._down_since is None else " after %.1fs down" % (now - self._down_since)
        self._down_since = None
        self._failing.clear()
        self._set_state("up", "up via %s%s" % (node, after))

    def _run_once(self, node, stop):
        """Start ssh for node and watch it until it fails or stop is set.

        Returns (outcome, stderr lines); outcome is stopped, failed (never came up), lost (was up, ssh
        exited), stalled (was up, then probes went unanswered: a node that went silent), or empty (ssh
        works but nothing answered behind it, and another node may do better).
        """
        holder = self.tunnel.local_port_user() if self.tunnel.local_port_user is not None else ""
        if holder:
            self._trouble()
            self._set_state("down", "down: the local port is taken by %s; not logging in to %s until it is "
                            "free (stop that program or choose another FS_SSH_LOCAL_PORT with config --ssh)"
                            % (holder, node), logging.WARNING)
            return "local", []
        argv = self.tunnel.argv_for_node(node)
        log.debug("%s: starting %s", self.describe, " ".join(argv))
        try:
            ssh = SshProcess(argv, self.popen)
        except OSError as exc:
            self._down(node, "cannot start ssh: %s" % exc, [])
            return "failed", []
        self.starts += 1
        watch = _Watch(node, ssh, self.clock())
        try:
            while not stop.is_set():
                if ssh.exited():
                    return self._ssh_exited(watch)
                now = self.clock()
                if now >= watch.next_probe:
                    ended = self._probe(watch, now)
                    if ended is not None:
                        return ended
                self.sleep(self.pacing.tick)
        finally:
            ssh.stop()
        return "stopped", []

    def _ssh_exited(self, watch):
        lines = watch.ssh.stderr_lines()
        self._down(watch.node, "ssh exited with status %s" % watch.ssh.returncode(), lines)
        if _local_port_taken(lines):
            return "local", lines
        if watch.up_since is None:
            return "failed", lines
        return ("stalled" if any(_SERVER_SILENT in l for l in lines) else "lost"), lines

    def _probe(self, watch, now):
        """One probe through the tunnel and what follows from it: (outcome, lines) when this ssh is done."""
        mark = watch.ssh.count
        result = self.tunnel.probe()
        if result == PROBE_OK and self.tunnel.forwards_through is not None \
                and not self.tunnel.forwards_through(watch.ssh.pid):
            # Another program answered on the local port: ssh is not forwarding from it (yet).
            log.debug("%s: an answer on the local port came from another program than ssh", self.describe)
            result = PROBE_REFUSED
        behind = []
        if result == PROBE_NO_ANSWER:
            # ssh reports "open failed" just before it closes our connection; give its stderr reader a
            # moment to catch that line.
            behind = [l for l in watch.ssh.lines_since(mark, wait=self.pacing.settle) if "open failed" in l]
        if result == PROBE_OK:
            return self._answered(watch, now)
        if behind:
            return self._nothing_behind(watch, behind, now)
        if watch.up_since is None and self.state != "connected":
            return self._not_up_yet(watch, now)
        return self._unanswered(watch, now)

    def _answered(self, watch, now):
        pace = self.pacing
        watch.failures = 0
        watch.empty_since = None
        if watch.up_since is None:
            watch.up_since = now
            self._up(watch.node, now)
        elif now - watch.up_since >= pace.healthy_reset and self.delay != pace.backoff_initial:
            self.delay = pace.backoff_initial
            self.failed_starts = 0
        self._last_answer = (now, watch.node)
        watch.next_probe = now + pace.probe_interval
        return None

    def _nothing_behind(self, watch, behind, now):
        """The login node answered the forward request: ssh is healthy, so restarting it would not help.
        Only another login node might have a Traefik that answers."""
        watch.failures = 0
        watch.up_since = None
        if watch.empty_since is None:
            watch.empty_since = now
        message = "ssh to %s works, but nothing answers behind it; ssh said: %s" % (watch.node, behind[-1])
        detail = self._explain(behind, watch.node)
        if detail:
            message += " -> " + detail
        elif "connect failed" in behind[-1]:
            message += " -> is forever-slurm's Traefik running there?"
        self._set_state("connected", message)
        if len(self.nodes) > 1 and now - watch.empty_since >= self.pacing.start_timeout:
            return "empty", watch.ssh.stop()
        watch.next_probe = now + self.pacing.probe_interval
        return None

    def _not_up_yet(self, watch, now):
        """A new ssh that does not forward yet: look again soon, give up after start_timeout."""
        timeout = self.pacing.start_timeout
        if now - watch.started >= timeout:
            lines = watch.ssh.stop()
            self._down(watch.node, "no answer through the tunnel within %gs" % timeout, lines)
            return "failed", lines
        watch.next_probe = now + self.pacing.tick
        return None

    def _unanswered(self, watch, now):
        """A tunnel that worked got no answer: restart ssh after probe_failures of these in a row."""
        self._trouble(now)
        watch.failures += 1
        if watch.failures >= self.pacing.probe_failures:
            lines = watch.ssh.stop()
            self._down(watch.node, "the tunnel stopped forwarding (%d probes without an answer); restarting ssh"
                       % watch.failures, lines)
            return ("stalled" if watch.up_since is not None else "failed"), lines
        watch.next_probe = now + self.pacing.recheck_interval
        return None

    def _wait(self, seconds, stop, silent, look=True):
        """Back off for seconds, but reconnect as soon as a login node that did not answer answers again.

        silent: nodes known not to accept connections. Each node's port is tried until it answers once,
        so a node that answers but refuses us otherwise sees one extra connection per backoff, not a stream.
        look False: no login node is looked at (the trouble is on this machine).
        """
        end = self.clock() + seconds
        silent = set(silent)
        answered = set()
        next_look = self.clock()
        reachable = self.tunnel.reachable if look else None
        while not stop.is_set():
            now = self.clock()
            if now >= end:
                return
            if reachable is not None and now >= next_look:
                for offset in range(len(self.nodes)):
                    index = (self.index + offset) % len(self.nodes)
                    node = self.nodes[index]
                    if node in answered:
                        continue
                    if not reachable(node):
                        silent.add(node)
                    elif node in silent:
                        log.info("%s: %s's sshd answers again; reconnecting now", self.describe, node)
                        if index != self.index:
                            self._switch(index, "it accepts connections again")
                        return
                    else:
                        answered.add(node)
                next_look = self.clock() + self.pacing.reach_interval
            self.sleep(max(0.001, min(self.pacing.tick, end - self.clock())))


def run_until_signalled(supervisor, signals=(signal.SIGTERM, signal.SIGINT, signal.SIGHUP)):
    """Run supervisor in the main thread until one of signals arrives; ssh is stopped on the way out."""
    stop = threading.Event()

    def handle(signum, frame):
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in signals}
    try:
        supervisor.run(stop)
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return 0
