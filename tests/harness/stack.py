"""A whole forever-slurm stack on the local cluster: a root with the built .pyz, Traefik and the loop.

Shared by the real-cluster e2e tests and bench/turnover. Stdlib only. Traffic goes to 127.0.0.1 only,
and every load loop is bounded in count and time.
"""

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

from .net import free_port

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# state() reads state.json with the loop's own reader: src/ must be importable for every caller, the
# benches too (they put only tests/ on the path; under pytest tests/conftest.py adds src/ as well).
if os.path.join(TOP, "src") not in sys.path:
    sys.path.append(os.path.join(TOP, "src"))


def find_traefik():
    found = shutil.which("traefik")
    if found:
        return found
    venv = os.path.join(TOP, ".venv", "bin", "traefik")
    return venv if os.path.exists(venv) else None


class Sample(object):
    __slots__ = ("t", "status", "body", "seconds")

    def __init__(self, t, status, body, seconds):
        self.t, self.status, self.body, self.seconds = t, status, body, seconds


def get(port, path="/hello-python/tests", timeout=5.0):
    """One GET of http://127.0.0.1:port/path, as a Sample (status None when it failed)."""
    started = time.time()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read().decode("utf-8", "replace")
        conn.close()
        return Sample(started, response.status, body, time.time() - started)
    except (OSError, http.client.HTTPException) as exc:
        return Sample(started, None, str(exc), time.time() - started)


class Stack(object):
    """Root dir + Traefik + `run` loop against a LocalCluster. Call start(), then stop().

    host: FOREVER_HOST for every process this stack starts (a "login node" of this machine); another
    login node of the same root is `stack.login_node("login2")`, with its own Traefik ports (written to
    .env.<host>), its own `traefik` and `run`, and its own files in .work/hosts/<host>/."""

    def __init__(self, cluster, base_dir, services="hello-python/2", env_lines=(), service_dirs=None, host=None,
                 first=None):
        self.cluster = cluster
        self.root = os.path.join(base_dir, "root")
        self.port = free_port()
        self.ping_port = free_port()
        while self.ping_port == self.port:
            self.ping_port = free_port()
        self.services = services
        self.env_lines = list(env_lines)
        self.service_dirs = service_dirs or {}
        self.host = host
        self.first = first          # the Stack of the root's first login node, for another login node
        self.procs = {}
        self.started_at = None
        self.loop_env = None

    def login_node(self, host, env_lines=()):
        """Another login node serving this stack's root: FOREVER_HOST=host, its own Traefik ports in
        .env.<host> (with env_lines), its own traefik and run processes. Start this stack first."""
        base_dir = os.path.dirname(self.root)
        return Stack(self.cluster, base_dir, self.services, env_lines, host=host, first=self)

    @property
    def host_work(self):
        """This login node's own files: .work on the root's first host, .work/hosts/<host> on another."""
        work = os.path.join(self.root, ".work")
        return work if self.first is None else os.path.join(work, "hosts", self.host)

    # -- set-up ----------------------------------------------------------------------------------
    def prepare(self):
        if self.first is not None:
            ports = ["FS_TRAEFIK_PORT=%d" % self.port, "FS_TRAEFIK_PING_PORT=%d" % self.ping_port]
            with open(os.path.join(self.root, ".env." + self.host), "w") as handle:
                handle.write("\n".join(ports + self.env_lines) + "\n")
            return
        os.makedirs(self.root, exist_ok=True)
        # Always the current source: a stale forever_slurm.pyz at the top would test old code.
        subprocess.check_call([sys.executable, os.path.join(TOP, "build_pyz.py"), "-o",
                               os.path.join(self.root, "forever_slurm.pyz")], stdout=subprocess.DEVNULL)
        for name, files in self.service_dirs.items():
            folder = os.path.join(self.root, "services", name)
            os.makedirs(folder, exist_ok=True)
            for filename, text in files.items():
                path = os.path.join(folder, filename)
                with open(path, "w") as handle:
                    handle.write(text)
                if filename.endswith((".sub", ".sh")):
                    os.chmod(path, 0o755)
        lines = ['SERVICE_LIST="%s"' % self.services, "FS_TRAEFIK_PORT=%d" % self.port,
                 "FS_TRAEFIK_PING_PORT=%d" % self.ping_port, "FS_TRAEFIK_BIN=%s" % find_traefik()]
        with open(os.path.join(self.root, ".env"), "w") as handle:
            handle.write("\n".join(lines + self.env_lines) + "\n")

    def env(self, extra=None):
        env = self.cluster.env({"PYTHONUNBUFFERED": "1"})
        env.pop("FOREVER_ROOT", None)
        if self.host:
            env["FOREVER_HOST"] = self.host
        env.update(extra or {})
        return env

    def command(self, *args):
        return [sys.executable, os.path.join(self.root, "forever_slurm.pyz"), "--root", self.root] + list(args)

    def _spawn(self, name, args, extra_env=None):
        log = open(os.path.join(self.root, name + ".out"), "ab")
        self.procs[name] = subprocess.Popen(self.command(*args), env=self.env(extra_env), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def start_traefik(self, timeout=20):
        self._spawn("traefik", ["traefik"])
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self._ping():
                return
            time.sleep(0.1)
        raise RuntimeError("Traefik did not answer its ping within %ss" % timeout)

    def start_loop(self, extra_env=None):
        self.started_at = time.time()
        self.loop_env = extra_env
        self._spawn("loop", ["run"], extra_env)

    def restart_loop(self):
        """The loop again, as it was started (after a kill: the process supervisor's restart)."""
        self._stop("loop")
        self.start_loop(self.loop_env)

    def start(self, extra_env=None):
        self.prepare()
        self.start_traefik()
        self.start_loop(extra_env)
        return self

    def stop_loop(self):
        self._stop("loop")

    def _stop(self, name):
        proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)

    def signal(self, name, signum):
        """Send signum to a process this stack started ("traefik", "loop") and its group: SIGSTOP and
        SIGCONT a login node that hangs, SIGKILL a loop that dies without a word."""
        proc = self.procs[name]
        os.killpg(proc.pid, signum)
        if signum == signal.SIGKILL:
            proc.wait(10)

    def stop(self):
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGCONT)     # a stopped process cannot act on SIGTERM
            self._stop(name)
        if self.first is None:
            self.cluster.cancel_all(timeout=30)

    # -- looking ---------------------------------------------------------------------------------
    def _ping(self):
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.ping_port, timeout=1)
            conn.request("GET", "/ping")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def get(self, path="/hello-python/tests", timeout=5.0):
        return get(self.port, path, timeout)

    def state(self):
        """The loop's state.json, read by the loop's own reader, as plain dicts ({} when there is none):
        "jobs" and "services" (memory by id and name), "routes" ({service: [{url, weight}]}), "scale"."""
        from forever_slurm.core import state as state_mod
        snapshot, problem = state_mod.read(os.path.join(self.root, ".work", "state.json"))
        if problem or snapshot.updated_at is None:
            return {}
        return {"jobs": {k: m._asdict() for k, m in snapshot.memory.jobs.items()},
                "services": {k: m._asdict() for k, m in snapshot.memory.services.items()},
                "routes": {k: [s._asdict() for s in v] for k, v in snapshot.routes.items()},
                "scale": snapshot.scale, "desired": snapshot.desired}

    def routed(self, service="hello-python"):
        """URLs routed with weight > 0, per the loop's last write."""
        return [s["url"] for s in self.state().get("routes", {}).get(service, []) if s.get("weight", 1) > 0]

    def squeue(self, name="hello-python"):
        done = self.cluster.run(["squeue", "--me", "-h", "-n", name, "-o", "%A|%t|%N|%L|%k"], timeout=20)
        rows = []
        for line in (done.stdout or "").splitlines():
            parts = line.split("|", 4)
            if len(parts) == 5:
                rows.append({"id": parts[0], "state": parts[1], "node": parts[2], "left": parts[3],
                             "comment": parts[4]})
        return rows

    def routed_here(self, service="hello-python"):
        """URLs routed with weight > 0 in this login node's own Traefik file (a follower saves no state)."""
        try:
            with open(os.path.join(self.host_work, "traefik-watch", service + ".yml")) as handle:
                text = handle.read()
        except OSError:
            return []
        urls = []
        for match in re.finditer(r'- url: "([^"]+)"(\n\s+weight: (\d+))?', text):
            if match.group(3) is None or int(match.group(3)) > 0:
                urls.append(match.group(1))
        return urls

    def loop_log(self):
        try:
            with open(os.path.join(self.host_work, "log", "loop.log")) as handle:
                return handle.read()
        except OSError:
            return ""

    def wait_for(self, predicate, timeout, interval=0.5, what="condition"):
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError("timed out after %ss waiting for %s\n--- loop log tail ---\n%s"
                             % (timeout, what, self.loop_log()[-3000:]))

    # -- load ------------------------------------------------------------------------------------
    def load(self, seconds, rate=10.0, path="/hello-python/tests", max_requests=5000, on_tick=None):
        """Open-loop load: `rate` requests/s for `seconds` (bounded by max_requests), each in its own
        thread so a slow answer does not delay the next. Returns the samples in start order."""
        samples = []
        lock = threading.Lock()
        threads = []

        def one():
            sample = self.get(path)
            with lock:
                samples.append(sample)

        start = time.time()
        count = min(int(seconds * rate), max_requests)
        for i in range(count):
            target = start + i / rate
            delay = target - time.time()
            if delay > 0:
                time.sleep(delay)
            thread = threading.Thread(target=one)
            thread.start()
            threads.append(thread)
            if on_tick:
                on_tick(time.time() - start)
        for thread in threads:
            thread.join(30)
        return sorted(samples, key=lambda s: s.t)


def failed(samples):
    return [s for s in samples if s.status != 200]


def capacity_timeline(stack, seconds, wanted, interval=0.5, service="hello-python", stop_when=None):
    """Sample the routed backend count; returns (total seconds with fewer than `wanted`, samples)."""
    points = []
    deadline = time.time() + seconds
    while time.time() < deadline:
        points.append((time.time(), len(stack.routed(service))))
        if stop_when and stop_when():
            break
        time.sleep(interval)
    short = 0.0
    for (t0, n0), (t1, _) in zip(points, points[1:]):
        if n0 < wanted:
            short += t1 - t0
    return short, points
