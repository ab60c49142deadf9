"""Min-max scenarios on the real local cluster (bench/scale prints them; tests/e2e/test_scale_real.py
asserts their targets): the bundled hello-python as hello-python/0-3 behind the real Traefik.

W1 wake: 20 concurrent requests at 0 instances; failed, and the first answer's delay minus the job's
   own start (its submission to its server answering, watched directly on the backend).
W2 load steps 1x -> 3x -> 1x -> idle with closed-loop clients of ?delay= requests; failed, seconds
   from a step to the new backend routed, instances over time.
W3 the same run: back to 0 after FS_IDLE_SECONDS, and a stream begun under 3x, still flowing while
   the service scales down, is never cut.
W4 squeue calls per minute while a min-max service is up and steady, and P4 (a lost job's
   replacement submitted).
Traffic goes to 127.0.0.1 only; every load loop is bounded in count and time.
"""

import http.client
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from typing import List, NamedTuple

from .stack import Stack

SERVICE = "hello-python"
# Fast settings so a run takes minutes: 2 in flight per backend, a 6 s window, 20 s before scaling
# down, 30 s of quiet to sleep.
FAST = ["FS_SLEEP_INTERVAL=60", "FS_PROBE_INTERVAL=1", "FS_DRAIN_SECONDS=4", "FS_SCALE_TARGET=2",
        "FS_SCALE_WINDOW=6", "FS_SCALE_DOWN_SECONDS=20", "FS_IDLE_SECONDS=30", "FS_SPREAD=no"]


def make_stack(cluster, base, services="%s/0-3" % SERVICE, extra=()):
    """A Stack whose loop finds logging wrappers of squeue and sbatch first on its PATH
    (stack.calls_log(command) names their logs: one start time per call)."""
    stack = Stack(cluster, base, services, FAST + list(extra))
    folder = os.path.join(base, "bin")
    for command in ("squeue", "sbatch"):
        logging_wrapper(folder, command, os.path.join(base, command + "-calls.log"))
    stack.calls_log = lambda command: os.path.join(base, command + "-calls.log")
    stack.start({"PATH": folder + os.pathsep + stack.env()["PATH"]})
    return stack


def request(port, path, timeout=120.0, host="127.0.0.1"):
    """(status or None, body text, seconds, first-byte seconds)."""
    started = time.time()
    try:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.request("GET", path)
        response = conn.getresponse()
        first = time.time() - started
        body = response.read().decode("utf-8", "replace")
        conn.close()
        return response.status, body, time.time() - started, first
    except (OSError, http.client.HTTPException) as exc:
        return None, str(exc), time.time() - started, None


def scale_info(stack):
    return stack.state().get("scale", {}).get(SERVICE, {})


def instances(stack):
    """(routed backends, jobs in squeue) of the service."""
    return len(stack.routed(SERVICE)), len(stack.squeue(SERVICE))


def asleep(stack):
    """The service is at 0 and Traefik routes it to the wake proxy (asked without a request: one would wake it)."""
    return scale_info(stack).get("phase") == "asleep" and not stack.squeue(SERVICE) and _wake_route(stack)


def _wake_route(stack):
    try:
        with open(os.path.join(stack.root, ".work", "traefik-watch", "%s.yml" % SERVICE)) as handle:
            return "127.0.0.1" in handle.read()
    except OSError:
        return False


# -- W1 ---------------------------------------------------------------------------------------------
class Wake(NamedTuple):
    requests: int
    failed: int
    statuses: List[object]
    first_answer: float         # seconds from the requests to the first answer
    submitted_after: float      # seconds from the requests to the loop's sbatch
    job_start: float            # the job's own start: sbatch to its server answering (watched directly)
    routed_after: float         # seconds from the server answering to the first answer through Traefik
    overhead: float             # first_answer - job_start: what forever-slurm adds (target <= 2 s)


def watch_backend(stack, found):
    """Until found['ready']: the job's URL from squeue, then its /health polled every 50 ms."""
    deadline = time.time() + 300
    url = None
    while time.time() < deadline and "ready" not in found:
        if url is None:
            for job in stack.squeue(SERVICE):
                match = re.match(r"traefik,[^,]+,http://([^:/]+):(\d+)", job["comment"])
                if match:
                    url = (match.group(1), int(match.group(2)))
            time.sleep(0.1)
            continue
        status, _, _, _ = request(url[1], "/health", 1.0, host=url[0])
        if status == 200:
            found["ready"] = time.time()
            return
        time.sleep(0.05)


def w1_wake(stack, count=20):
    stack.wait_for(lambda: asleep(stack), 120, 0.5, "the service asleep behind the wake proxy")
    results, lock = [], threading.Lock()
    found = {}
    watcher = threading.Thread(target=watch_backend, args=(stack, found), daemon=True)

    def one():
        outcome = request(stack.port, "/%s/wake" % SERVICE, timeout=300)
        with lock:
            results.append((time.time(),) + outcome)

    threads = [threading.Thread(target=one) for _ in range(count)]
    started = time.time()
    watcher.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(320)
    watcher.join(10)
    ok = [r for r in results if r[1] == 200]
    nan = float("nan")
    first = min(r[0] - r[3] + r[4] for r in ok) - started if ok else nan
    sbatch = min([t for t in call_times(stack.calls_log("sbatch")) if t >= started] or [nan])
    ready = found.get("ready", nan)
    return Wake(count, count - len(ok), sorted(set(r[1] for r in results), key=str), first, sbatch - started,
                ready - sbatch, started + first - ready, first - (ready - sbatch))


# -- W2 and W3 --------------------------------------------------------------------------------------
class Stream(NamedTuple):
    lines: int
    expected: int
    began: float                # timeline seconds
    ended: float
    backend: str                # the URL that served it (from its own lines)
    drained_under_it: bool      # its backend left Traefik's routes (weight 0) while it flowed


class Steps(NamedTuple):
    requests: int
    failed: int
    failures: List[str]
    to_routed: List[object]     # (step, instances wanted, seconds from the step to that many routed, or None)
    timeline: List[object]      # (seconds, routed, jobs) whenever it changed
    streams: List[Stream]
    back_to_zero: float         # seconds from the last request's end to 0 jobs (None: not within the wait)

    def streams_cut(self):
        return sum(1 for stream in self.streams if stream.lines != stream.expected)

    def scaled_down_during_streams(self):
        """Did the routed count drop while the streams flowed (so the scale-down had to spare them)?"""
        began, ended = min(s.began for s in self.streams), max(s.ended for s in self.streams)
        during = [routed for t, routed, _ in self.timeline if began <= t <= ended]
        before = [routed for t, routed, _ in self.timeline if t <= began]
        return bool(during and before) and min(during) < before[-1]


class Clients:
    """Closed-loop clients of ?delay= requests: `wanted` of them run at any time (bounded)."""

    def __init__(self, port, delay=1.0, max_requests=20000):
        self.port = port
        self.delay = delay
        self.max_requests = max_requests
        self.wanted = 0
        self.stop = False
        self.results = []
        self.lock = threading.Lock()
        self.threads = []

    def set(self, wanted):
        self.wanted = wanted
        while len(self.threads) < wanted:
            thread = threading.Thread(target=self._worker, args=(len(self.threads),), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _worker(self, index):
        while not self.stop and len(self.results) < self.max_requests:
            if index >= self.wanted:
                time.sleep(0.1)
                continue
            outcome = request(self.port, "/%s/load?delay=%s" % (SERVICE, self.delay), timeout=120)
            with self.lock:
                self.results.append(outcome)

    def finish(self):
        self.stop = True
        for thread in self.threads:
            thread.join(130)


def w2_w3_steps(stack, step_seconds=(45, 60, 60), stream_lines=300, streams=2):
    """1x (2 clients) -> 3x (6 clients) -> 1x -> idle. `streams` streams start 40 s into 3x, each on a
    backend of its own, and last 150 s: through the scale-downs of the 1x step (2 streams on 2 of 3
    backends: whichever jobs are drained, one of them carries a stream) and into the quiet stretch."""
    stack.wait_for(lambda: scale_info(stack).get("phase") in ("asleep", "up"), 120, 0.5, "a settled service")
    clients = Clients(stack.port)
    timeline, to_routed, routed_sets = [], [], []
    start = time.time()
    flows = [{} for _ in range(streams)]
    lock = threading.Lock()
    stop_watch = threading.Event()

    def watch():
        last = None
        while not stop_watch.is_set():
            routed = stack.routed(SERVICE)
            routed_sets.append((time.time() - start, set(routed)))
            now = (len(routed), len(stack.squeue(SERVICE)))
            if now != last:
                timeline.append((round(time.time() - start, 1),) + now)
                last = now
            time.sleep(0.5)

    placed = []

    def long_stream(flow):
        """A stream on a backend no other stream uses (retried a few times), read line by line."""
        for _ in range(10):
            flow["began"] = time.time() - start
            conn = http.client.HTTPConnection("127.0.0.1", stack.port, timeout=600)
            try:
                conn.request("GET", "/%s/stream?stream=%d" % (SERVICE, stream_lines))
                response = conn.getresponse()
                first = response.readline().decode("utf-8", "replace")
                served = re.search(r" from ([^:\s]+):(\d+)", first)
                backend = "http://%s:%s" % served.groups() if served else ""
                with lock:
                    if backend in placed:
                        continue
                    placed.append(backend)
                rest = response.read().decode("utf-8", "replace")
                lines = (first + rest).count("\n") if response.status == 200 else 0
            except (OSError, http.client.HTTPException):
                backend, lines = "", 0
            finally:
                conn.close()
            flow.update(lines=lines, ended=time.time() - start, backend=backend)
            return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    streamers = [threading.Thread(target=long_stream, args=(flow,), daemon=True) for flow in flows]
    try:
        for step, (clients_wanted, instances_wanted, seconds) in enumerate(
                [(2, 1, step_seconds[0]), (6, 3, step_seconds[1]), (2, 1, step_seconds[2])]):
            label = "%dx" % (clients_wanted // 2)
            clients.set(clients_wanted)
            began = time.time()
            reached = None
            while time.time() - began < seconds:
                if reached is None and len(stack.routed(SERVICE)) >= instances_wanted and step != 2:
                    reached = time.time() - began
                if step == 1 and time.time() - began > 40 and not streamers[0].is_alive() and not flows[0]:
                    for streamer in streamers:
                        streamer.start()
                        time.sleep(0.5)
                time.sleep(0.5)
            if step != 2:
                to_routed.append((label, instances_wanted, reached))
        clients.set(0)
        clients.finish()
        clients_ended = time.time() - start
        back = None
        deadline = time.time() + 300
        while time.time() < deadline:
            if any(streamer.is_alive() for streamer in streamers) or instances(stack) != (0, 0):
                time.sleep(1)
                continue
            back = time.time() - start - max([clients_ended] + [flow.get("ended", 0) for flow in flows])
            break
        for streamer in streamers:
            streamer.join(600)
    finally:
        clients.finish()
        stop_watch.set()
        watcher.join(5)
    bad = [r for r in clients.results if r[0] != 200]
    return Steps(len(clients.results), len(bad), ["%s %s" % (r[0], r[1][:80]) for r in bad[:5]], to_routed,
                 timeline, [_stream(flow, stream_lines, routed_sets) for flow in flows], back)


def _stream(flow, expected, routed_sets):
    began, ended, backend = flow.get("began", 0.0), flow.get("ended", 0.0), flow.get("backend", "")
    drained = any(began <= t <= ended and backend not in routed for t, routed in routed_sets)
    return Stream(flow.get("lines", 0), expected, round(began, 1), round(ended, 1), backend, bool(backend) and drained)


# -- W4 ---------------------------------------------------------------------------------------------
class Calls(NamedTuple):
    squeue_per_minute: float
    steady_seconds: int
    p4: float                   # seconds from scancel to the replacement in squeue (None: not within 90 s)


def logging_wrapper(folder, command, log_path):
    """A `command` in folder that appends its start time to log_path, then runs the real one."""
    real = shutil.which(command)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, command)
    with open(path, "w") as handle:
        handle.write('#!/bin/sh\necho "$(date +%%s.%%N)" >> "%s"\nexec "%s" "$@"\n' % (log_path, real))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return folder


def call_times(log_path):
    try:
        return [float(line) for line in open(log_path) if line.strip()]
    except FileNotFoundError:
        return []


def calls_between(log_path, start, end):
    return sum(1 for t in call_times(log_path) if start <= t < end)


def w4_calls(cluster, base, steady_seconds=120):
    """hello-python/1-3 with a light load (one client): steady squeue calls, then P4 by scancel.
    The loop's squeue calls are counted by a wrapper on its PATH; this scenario's own looks at
    Slurm use the real squeue and are not counted."""
    stack = make_stack(cluster, base, "%s/1-3" % SERVICE)
    log_path = stack.calls_log("squeue")
    clients = Clients(stack.port, delay=0.2)
    try:
        stack.wait_for(lambda: len(stack.routed(SERVICE)) == 1 or None, 180, 0.5, "one backend")
        clients.set(1)
        time.sleep(35)              # past the follow-up window of the submission
        start = time.time()
        time.sleep(steady_seconds)
        steady = calls_between(log_path, start, time.time())
        before = {j["id"] for j in stack.squeue(SERVICE)}
        cluster.run(["scancel", sorted(before)[0]], timeout=20)
        killed = time.time()
        replaced = None
        while time.time() - killed < 90:
            if {j["id"] for j in stack.squeue(SERVICE)} - before:
                replaced = time.time() - killed
                break
            time.sleep(0.2)
        return Calls(steady * 60.0 / steady_seconds, steady_seconds, replaced)
    finally:
        clients.finish()
        stack.stop()


def new_base(prefix):
    base = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    os.chmod(base, 0o755)
    return base
