"""The test doubles every test shares (no test module imports another): a clock, free ports, the
loop's prober and in-flight counter, an in-process Slurm (FakeSlurm) and the shim processes' one
seen the same way (ShimSlurm), a process holding a root's lock, a scripted user at the prompts, a pty
driver, a listener, a scripted TCP backend and a fake Traefik on loopback ports, and the golden-file
check. Fixtures built on them are in conftest.py.

Fakes of outside programs run as processes live in fake_bin/ (systemctl, loginctl, crontab) and
shims/ (squeue, sbatch, scontrol, scancel); FakeSlurm runs the shims' rules in this process."""

import copy
import fcntl
import json
import os
import pty
import select
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import termios
import threading
import time

from forever_slurm.common import ports
from forever_slurm.common.errors import CommandError
from forever_slurm.core import loop, model
from forever_slurm.common import settings
from forever_slurm.setup import configure
from forever_slurm.systems import proc, slurm

from shims import _shim

TESTS = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(TESTS, "golden")
SHIMS = os.path.join(TESTS, "shims")        # squeue, sbatch, scontrol, scancel as processes
FAKE_BIN = os.path.join(TESTS, "fake_bin")  # systemctl, loginctl, crontab as processes

free_port = ports.free_port     # the product's one way; tests use it as they find it


def free_ports(count):
    """Ports free now and different from each other (config checks them before it writes .env)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


# ---------------------------------------------------------------- time

class Clock:
    """A clock to pass where code takes `clock` (or `monotonic`) and `sleep`: sleeping advances it."""

    def __init__(self, now=1_000_000.0):
        self.now = now

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds

    advance = sleep


# ---------------------------------------------------------------- the loop's doubles

class Prober:
    """probe_all: every published URL answers, except those in `dead`; counts its passes."""

    def __init__(self):
        self.dead = set()
        self.calls = 0

    def __call__(self, targets, timeout=2.0, own_ports=()):
        self.calls += 1
        return {job_id: model.ProbeResult(url not in self.dead, "" if url not in self.dead else "refused",
                                          refused=url in self.dead)
                for job_id, (url, *_) in targets.items()}


class Inflight:
    """count_inflight: `per_url` requests in flight on every backend. None (unknown) by default: what
    inflight.counts says of a host that does not resolve, as the fake Slurm's node names do not."""

    def __init__(self, per_url=None):
        self.per_url = per_url

    def __call__(self, urls):
        return {key: self.per_url for key in urls}


class FakeSlurm:
    """A Slurm cluster in this process: the shims' rules (shims/_shim.py, the one fake Slurm) on jobs
    kept in memory. client() is a real systems.slurm.Slurm whose commands are answered here instead
    of by a process, so the argv it builds and the output it parses are the real ones; every argv is
    recorded in `calls`, as the shims' calls.log does.

    The shims' knobs are attributes: nodes (FS_SHIM_NODES), start_state (FS_SHIM_START_STATE),
    time_left (FS_SHIM_TIME_LEFT), min_job_age (FS_SHIM_MIN_JOB_AGE), no_me (squeue-no-me: a Slurm
    older than 20.11), nodes_down (the lines of nodes-down: "node state reason") and reservations
    (of the file reservations: `scontrol -o show reservation` lines). Failure on request, as theirs: fail[command] = its stderr ("" for the shims'
    default) and exit 1; hang[command] = seconds it takes, which past the caller's timeout fails as
    proc.run does (at once: nobody waits for it); squeue_extra_bytes and squeue_after_bytes are
    printed before and after squeue's rows."""

    def __init__(self, nodes=("node1", "node2", "node3"), start_state="R", time_left=None, min_job_age=300,
                 now=time.time):
        self.nodes = list(nodes)
        self.start_state = start_state
        self.time_left = time_left
        self.min_job_age = min_job_age
        self.no_me = False
        self.nodes_down = ""
        self.reservations = ""
        self.now = now
        self.data = _shim.empty_data()
        self.calls = []
        self.fail = {}
        self.hang = {}
        self.squeue_extra_bytes = b""
        self.squeue_after_bytes = b""

    def client(self, timeout=30.0):
        """What the loop holds: one per Controller, as `run` makes one per process."""
        return slurm.Slurm(run=self.run, timeout=timeout, environ={"SLURM_TIME_FORMAT": "standard"})

    def run(self, argv, timeout=proc.DEFAULT_TIMEOUT, env=None, cwd=None, input=None, check=True, errors="replace"):
        """proc.run, with the command answered by the shims' rules."""
        argv = [str(a) for a in argv]
        command = os.path.basename(argv[0])
        if command not in _shim.COMMANDS:
            raise CommandError(argv, None, "", message="cannot run %s: not a Slurm command" % argv[0])
        self.calls.append(argv)
        if self.hang.get(command, 0) > (timeout if timeout is not None else float("inf")):
            raise CommandError(argv, None, "", message="%s did not answer within %ss" % (argv[0], timeout))
        if command in self.fail:
            answer = _shim.Answer().error(self.fail[command] or _shim.DEFAULT_ERROR % command)
        else:
            answer = _shim.call(command, argv[1:], self.data, self._env(env), self.now)
        around = (self.squeue_extra_bytes, self.squeue_after_bytes) if command == "squeue" else (b"", b"")
        done = subprocess.CompletedProcess(argv, answer.code, proc._text(answer.stdout(*around), errors),
                                           proc._text("".join(answer.err).encode("utf-8"), errors))
        if check and done.returncode != 0:
            raise CommandError(argv, done.returncode, done.stderr)
        return done

    def _env(self, env):
        knobs = dict(env or {}, FS_SHIM_NODES=",".join(self.nodes), FS_SHIM_START_STATE=self.start_state,
                     FS_SHIM_MIN_JOB_AGE=str(self.min_job_age))
        if self.time_left is not None:
            knobs["FS_SHIM_TIME_LEFT"] = str(self.time_left)
        if self.no_me:
            knobs["FS_SHIM_NO_ME"] = "1"
        knobs.update(FS_SHIM_NODES_DOWN=self.nodes_down, FS_SHIM_RESERVATIONS=self.reservations)
        return knobs

    # -- what tests look at and do, as a user or a job would
    @property
    def jobs(self):
        """A copy of every job (as the shims' jobs.json holds them): change one through job()."""
        return copy.deepcopy(self.data["jobs"])

    def job(self, job_id):
        """The job itself, to change as Slurm or the job would (its state, its Comment)."""
        return next(j for j in self.data["jobs"] if j["id"] == job_id)

    def commands(self, name):
        """The argv of every call of `name` (squeue, sbatch, ...), in order."""
        return [argv for argv in self.calls if argv[0] == name]

    def set_comment(self, job_id, comment):
        self.job(job_id)["comment"] = comment

    def publish_all(self):
        _publish_all(self.data)

    def sbatch_as_user(self, script):
        """The user's own sbatch, from their own directory (not ours): returns the job id."""
        return self.run(["sbatch", "--parsable", str(script)]).stdout.strip()


class ShimSlurm:
    """The shim processes' cluster (the shim_state fixture's folder), read and changed like a
    FakeSlurm, for the tests whose point is a real process: run --once in a child, a site's wrapper
    around squeue, the .pyz. Their failures are files there (fail-squeue...), see shims/_shim.py."""

    def __init__(self, state_dir):
        self.state_dir = str(state_dir)

    def client(self, timeout=30.0):
        return slurm.Slurm(timeout=timeout)

    @property
    def calls(self):
        return shim_calls(self.state_dir)

    def commands(self, name):
        return [argv for argv in self.calls if argv[0] == name]

    def forget_calls(self):
        open(os.path.join(self.state_dir, "calls.log"), "w").close()

    @property
    def jobs(self):
        try:
            with open(os.path.join(self.state_dir, "jobs.json")) as handle:
                return json.load(handle)["jobs"]
        except FileNotFoundError:
            return []

    def set_comment(self, job_id, comment):
        self._change(lambda data: [job.update(comment=comment) for job in data["jobs"] if job["id"] == job_id])

    def publish_all(self):
        self._change(_publish_all)

    def _change(self, change):
        store = _shim.Store(self.state_dir)     # under the shims' lock
        try:
            change(store.data)
            store.save()
        finally:
            store.lock.close()


def _publish_all(data):
    """What each running job's script does: publish traefik,<name>,http://<node>:<port>."""
    for job in data["jobs"]:
        if job["state"] == "R" and not job["comment"]:
            job["comment"] = "traefik,%s,%s" % (job["name"], url_of(job))


def shim_calls(state_dir):
    """The argv of every call the shims answered (their calls.log in state_dir), in order."""
    path = os.path.join(str(state_dir), "calls.log")
    if not os.path.exists(path):
        return []
    with open(path) as handle:
        return [json.loads(line) for line in handle.read().splitlines()]


def url_of(job):
    """The URL publish_all gives a job."""
    return "http://%s:%d" % (job["nodes"], 40000 + int(job["id"]) % 1000)


def make_controller(root, cluster, env='SERVICE_LIST="hello-python/2"\nFS_SPREAD=no\n', **kwargs):
    """(Controller, Clock, Prober, Layout) of `root` with `env` as its .env, on cluster.client() (a
    FakeSlurm, or a ShimSlurm for the shim processes), with Inflight() unless kwargs (to the
    Controller: count_inflight, wake...) say otherwise. FS_SLEEP_INTERVAL is 10 s unless env says:
    tests count looks."""
    if "FS_SLEEP_INTERVAL" not in env:
        env += "FS_SLEEP_INTERVAL=10\n"
    (root / ".env").write_text(env)
    layout = settings.Layout(str(root))
    layout.make_dirs()
    clock = Clock()
    prober = Prober()
    kwargs.setdefault("count_inflight", Inflight())
    ctl = loop.Controller(layout, settings.load(layout), cluster.client(), clock=clock, probe_all=prober, **kwargs)
    return ctl, clock, prober, layout


def add_other_service(root):
    """A second service, so tests can show that one service's trouble leaves the other alone."""
    folder = root / "services" / "other"
    folder.mkdir(parents=True)
    (folder / "other.sub").write_text("#!/bin/bash\n#SBATCH --job-name other\nsleep 100\n")


def routed(ctl, clock, cluster):
    """The state most loop tests start from: jobs submitted, published, probed and routed."""
    ctl.look()
    cluster.publish_all()
    clock.sleep(10)
    ctl.look()


HOLD_LOCK = """
import sys, time
sys.path.insert(0, sys.argv[1])
from forever_slurm.core.lock import RootLock
with RootLock(sys.argv[2]):
    print("locked", flush=True)
    time.sleep(120)
"""


class LoopStandIn:
    """A process that holds the root's lock as `run` does (core/lock.RootLock), stopped for sure."""

    def __init__(self, layout):
        src = os.path.join(os.path.dirname(TESTS), "src")
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, src, layout.lock_file],
                                     stdout=subprocess.PIPE, universal_newlines=True)
        assert self.proc.stdout.readline().strip() == "locked"
        self.pid = self.proc.pid

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


# ---------------------------------------------------------------- a person at the prompts

MAX_PROMPTS = 500       # a scripted session never needs this many; more means the flow loops


class Script:
    """input_fn answering by prompt: the next queued answer for the first matching prefix, else Enter.

    An answer that is an exception class is raised instead, as the terminal would on Ctrl-C or Ctrl-D.
    """

    def __init__(self, answers=None):
        self.queues = {prefix: list(items) for prefix, items in (answers or {}).items()}
        self.prompts = []
        self.lines = []

    def __call__(self, prompt):
        self.prompts.append(prompt)
        self.lines.append(prompt)
        if len(self.prompts) > MAX_PROMPTS:
            raise AssertionError("the flow asked %d questions; last: %r" % (MAX_PROMPTS, prompt))
        for prefix, queue in self.queues.items():
            # FS_TRAEFIK_BIN must not answer FS_TRAEFIK_BIND: a prefix ends at a word boundary.
            after = prompt[len(prefix):len(prefix) + 1]
            if prompt.startswith(prefix) and not (_word(prefix[-1:]) and _word(after)) and queue:
                answer = queue.pop(0)
                if isinstance(answer, type) and issubclass(answer, BaseException):
                    raise answer()
                return answer
        if prompt == "Pick a number or a name: ":
            # The menu has no default while nothing is chosen: a script that picks no service says Done.
            return "Done"
        return ""

    def say(self, text=""):
        self.lines.append(text)

    def prompter(self):
        return configure.Prompter(self, self.say, interactive=True)

    def asked(self, prefix):
        return [p for p in self.prompts if p.startswith(prefix)]

    @property
    def output(self):
        return "\n".join(self.lines)


def _word(char):
    return char.isalnum() or char == "_"


def no_input(prompt):
    raise AssertionError("asked %r although no question was expected" % prompt)


class Terminal:
    """A child process on a real pseudo-terminal; every read is bounded by a deadline."""

    def __init__(self, argv, cwd, timeout=20):
        self.timeout = timeout
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
        env["TERM"] = "dumb"        # no terminal escape codes from readline in the transcript
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            try:
                # A person's login shell: Ctrl-C and Ctrl-\ as the terminal sends them. A test run started
                # in the background by a non-interactive shell inherits SIGINT ignored, and so would
                # the program, which then (rightly) ignores Ctrl-C.
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGQUIT, signal.SIG_DFL)
                os.chdir(cwd)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        # A fixed, wide window: the default depends on whoever runs the tests.
        fcntl.ioctl(self.fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
        self.seen = b""
        self.pos = 0

    def expect(self, text):
        wanted = text.encode()
        deadline = time.monotonic() + self.timeout
        while wanted not in self.seen[self.pos:]:
            if not self._read(deadline - time.monotonic()):
                raise AssertionError("no %r on the terminal; it shows:\n%s" % (text, self.transcript()))
        self.pos = self.seen.index(wanted, self.pos) + len(wanted)

    def type(self, text):
        os.write(self.fd, text.encode())

    def interrupt(self, until, patience=2.0, tries=5):
        """Ctrl-C as a person presses it again when nothing happens, until `until` shows or the program
        ends: one that arrives while Python is between printing a prompt and reading the line is only
        seen at the next key press (the tests used to wait 0.3 s for that window to pass)."""
        wanted = until.encode()
        for _ in range(tries):
            os.write(self.fd, b"\x03")
            deadline = time.monotonic() + patience
            while wanted not in self.seen[self.pos:]:
                if not self._read(deadline - time.monotonic()):
                    if time.monotonic() < deadline:
                        return      # the terminal closed: the program ended
                    break
            else:
                return
        raise AssertionError("Ctrl-C %d times, no %r; it shows:\n%s" % (tries, until, self.transcript()))

    def finish(self):
        """Exit status, after reading the rest of the output."""
        deadline = time.monotonic() + self.timeout
        while self._read(deadline - time.monotonic()):
            pass
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.WEXITSTATUS(status) if os.WIFEXITED(status) else -os.WTERMSIG(status)
            time.sleep(0.05)
        self.kill()
        raise AssertionError("the session did not end; it shows:\n%s" % self.transcript())

    def kill(self):
        try:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        except OSError:
            pass

    def transcript(self):
        return self.seen.decode("utf-8", "replace").replace("\r\n", "\n")

    def _read(self, left):
        if left <= 0:
            return False
        ready, _, _ = select.select([self.fd], [], [], left)
        if not ready:
            return False
        try:
            chunk = os.read(self.fd, 4096)
        except OSError:         # EIO: the child closed the terminal
            return False
        self.seen += chunk
        return bool(chunk)


# ---------------------------------------------------------------- loopback ports

class Listener:
    """Something else on a port, as another user's Traefik on a shared login node."""

    def __init__(self, port=0):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(5)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


def traefik_ports_conf(layout, web, ping):
    """The settings of a root whose .env names only these Traefik ports (written there)."""
    with open(layout.env_file, "w") as handle:
        handle.write("FS_TRAEFIK_PORT=%d\nFS_TRAEFIK_PING_PORT=%d\n" % (web, ping))
    return settings.load(layout)


FAKE_TRAEFIK = """#!%s
import http.server, sys
class Ping(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ping" else 404)
        self.end_headers()
        self.wfile.write(b"OK")
    def log_message(self, *a):
        pass
web = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Ping)
ping = http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), Ping) if sys.argv[2] != "0" else None
print("listening", flush=True)
if ping:
    import threading
    threading.Thread(target=ping.serve_forever, daemon=True).start()
web.serve_forever()
"""


class ScriptedServer:
    """A local TCP server whose every connection runs `script(conn)` in its own thread: a backend that
    trickles, hangs or answers oddly. close() ends it at once."""

    def __init__(self, script):
        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                try:
                    script(self.request)
                except OSError:
                    pass
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def write_fake_traefik(folder):
    """The path of a program named `traefik` in folder: `traefik WEB PING` listens on both (no ping
    listener when PING is 0) and prints "listening" once it does."""
    os.makedirs(str(folder), exist_ok=True)
    path = os.path.join(str(folder), "traefik")
    with open(path, "w") as handle:
        handle.write(FAKE_TRAEFIK % sys.executable)
    os.chmod(path, 0o755)
    return path


# ---------------------------------------------------------------- golden files

def golden_checker(folder):
    """check(name, text) against tests/golden/<folder>/<name>; UPDATE_GOLDEN=1 rewrites the file."""
    def check(name, text):
        path = os.path.join(GOLDEN, folder, name)
        if os.environ.get("UPDATE_GOLDEN") == "1":
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        with open(path, encoding="utf-8") as handle:
            assert text == handle.read(), "%s differs; review it, then UPDATE_GOLDEN=1 to rewrite" % path
    return check
