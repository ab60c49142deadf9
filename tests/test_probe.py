"""core/probe: one readiness GET per backend, never raising, and all of them in parallel."""

import http.server
import socket
import threading

import pytest

from forever_slurm.core import probe
from forever_slurm.core.model import ProbeResult

from fakes import free_port


class Backend:
    """A local HTTP server answering each path with the status its name says (/status/503)."""

    def __init__(self):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                code = int(self.path.rsplit("/", 1)[-1]) if self.path.startswith("/status/") else 200
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass
        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backend():
    server = Backend()
    yield server
    server.close()


closed_port = free_port      # nothing listens on a free port: connection refused


@pytest.mark.parametrize("path, expect, result", [
    ("/", None, ProbeResult(True, "")),
    ("health", None, ProbeResult(True, "")),                          # a path without / still works
    ("/status/302", None, ProbeResult(True, "")),
    ("/status/500", None, ProbeResult(False, "HTTP 500")),
    ("/status/404", None, ProbeResult(False, "HTTP 404")),
    ("/status/204", 200, ProbeResult(False, "HTTP 204")),
    ("/status/204", 204, ProbeResult(True, "")),
    # 503: the server is going away (draining): as good as refused.
    ("/status/503", None, ProbeResult(False, "HTTP 503", refused=True)),
])
def test_status_codes_decide_health(backend, path, expect, result):
    assert probe.probe(backend.url, path, 2.0, expect) == result


def test_a_closed_port_is_refused_and_a_bad_url_is_unhealthy_not_an_error():
    assert probe.probe("http://127.0.0.1:%d" % closed_port()) == ProbeResult(False, "connection refused",
                                                                               refused=True)
    bad = probe.probe("http://node:99999")
    assert not bad.ok and bad.detail.startswith("bad URL:")


def test_a_silent_backend_times_out():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)      # accepts the connection, never answers
    try:
        result = probe.probe("http://127.0.0.1:%d" % listener.getsockname()[1], timeout=0.2)
    finally:
        listener.close()
    assert result == ProbeResult(False, "no answer within 0.2s")


def test_probe_all_runs_each_target_and_contains_a_failing_probe():
    def fake(url, path, timeout, status):
        if url == "boom":
            raise RuntimeError("a bug")
        return ProbeResult(url == "good", path)
    results = probe.probe_all({"1": ("good", "/a", None), "2": ("bad", "/b", None), "3": ("boom", "/", None)},
                              timeout=1.0, probe_fn=fake)
    assert results == {"1": ProbeResult(True, "/a"), "2": ProbeResult(False, "/b"),
                       "3": ProbeResult(False, "probe error: RuntimeError")}
    assert probe.probe_all({}) == {}
