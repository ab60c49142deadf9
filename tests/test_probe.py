"""core/probe: one readiness GET per backend, never raising, and all of them in parallel."""

import functools
import http.server
import ipaddress
import socket
import ssl
import subprocess
import threading
import time

import pytest

from forever_slurm.core import probe
from forever_slurm.core.model import ProbeResult
from forever_slurm.systems import httpget


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Every connection a probe makes goes to 127.0.0.0/8 or ::1: a refusal that failed must show as
    an error here, never as traffic to 169.254.169.254."""
    original = socket.socket

    class Guarded(original):
        def connect_ex(self, address):
            assert ipaddress.ip_address(address[0]).is_loopback, "a probe tried to reach %s" % (address,)
            return super().connect_ex(address)

        def connect(self, address):
            assert ipaddress.ip_address(address[0]).is_loopback, "a probe tried to reach %s" % (address,)
            return super().connect(address)
    monkeypatch.setattr(socket, "socket", Guarded)

from fakes import ScriptedServer, free_port


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


@pytest.fixture
def scripted():
    servers = []

    def start(script):
        servers.append(ScriptedServer(script))
        return servers[-1]
    yield start
    for server in servers:
        server.close()


def trickle(head=b"HTTP/1.1 200 OK\r\n", every=1.0, rest=b"X-Slow: yes\r\n" * 100 + b"\r\n"):
    """A backend that sends a status line and then one byte every `every` seconds."""
    def script(conn):
        conn.recv(4096)
        conn.sendall(head)
        for byte in rest:
            time.sleep(every)
            conn.sendall(bytes([byte]))
    return script


def answer(data, linger=0.0):
    def script(conn):
        conn.recv(4096)
        conn.sendall(data)
        time.sleep(linger)
    return script


def silent(conn):
    time.sleep(30)


def test_a_status_line_then_a_trickle_is_cut_at_the_deadline_and_is_unhealthy(scripted):
    """The half answer never counts as healthy, and the probe ends at its timeout (it took 83 s)."""
    server = scripted(trickle(every=0.2))
    started = time.monotonic()
    result = probe.probe(server.url, "/", timeout=1.0)
    assert time.monotonic() - started < 1.5
    assert not result.ok and result.detail.startswith("no complete answer within 1.0s")


def test_a_head_completed_after_the_deadline_is_not_healthy(scripted):
    server = scripted(trickle(every=0.3, rest=b"A: b\r\n\r\n"))     # complete after 2.1 s
    assert not probe.probe(server.url, "/", timeout=1.0).ok


@pytest.mark.parametrize("data, result", [
    (b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n", ProbeResult(True, "")),
    (b"HTTP/1.0 200 OK\n\nbody", ProbeResult(True, "")),               # bare \n line ends, as http.client reads
    (b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n", ProbeResult(False, "HTTP 503", refused=True)),
    (b"SSH-2.0-OpenSSH_9.2\r\n\r\n", ProbeResult(False, "not an HTTP answer: b'SSH-2.0-OpenSSH_9.2\\r'")),
    (b"HTTP/1.1 200 OK\r\n", ProbeResult(False, "the connection closed before a complete answer")),
    (b"", ProbeResult(False, "the connection closed without an answer")),
])
def test_odd_answers(scripted, data, result):
    assert probe.probe(scripted(answer(data)).url, "/", timeout=1.0) == result


def test_an_endless_head_is_no_answer_and_costs_at_most_its_cap(scripted):
    server = scripted(answer(b"HTTP/1.1 200 OK\r\n" + b"X: " + b"y" * (200 * 1024), linger=2))
    result = probe.probe(server.url, "/", timeout=2.0)
    assert result == ProbeResult(False, "an answer head over 64 KiB")


def test_a_path_that_would_break_the_request_line_is_refused_before_any_connection():
    result = probe.probe("http://127.0.0.1:1", "/health x\r\nHost: evil", timeout=1.0)
    assert not result.ok and result.detail.startswith("bad health path")


def test_slow_backends_of_one_service_do_not_delay_another_service_and_the_pass_is_bounded(scripted):
    """60 trickling backends of `slow` with 8 sockets in all: `fast`'s good and dead backends are
    probed at once all the same, and the pass ends within PASS_TIMEOUTS timeouts."""
    slow = scripted(trickle(every=0.05))
    good = Backend()
    dead = "http://127.0.0.1:%d" % closed_port()
    try:
        targets = {"s%d" % i: (slow.url, "/", None, "slow") for i in range(60)}
        targets.update({"good": (good.url, "/", None, "fast"), "dead": (dead, "/", None, "fast")})
        prober = probe.Prober(fetch_all=functools.partial(httpget.fetch_all, max_open=8))
        started = time.monotonic()
        results = prober.probe_all(targets, timeout=0.5)
        took = time.monotonic() - started
        second = prober.probe_all(targets, timeout=0.5)
    finally:
        good.close()
    assert results["good"] == ProbeResult(True, "") and results["dead"].refused
    assert took < probe.PASS_TIMEOUTS * 0.5 + 0.3
    probed = [k for k in results if k.startswith("s")]
    assert all(not results[k].ok for k in probed)
    # 8 sockets, one kept for `fast` at most while it waits: about 7 slow ones per timeout, 2 timeouts long.
    assert 10 <= len(probed) < 60
    left = set(targets) - set(results)
    assert set(second) - {"good", "dead"} <= left       # what the deadline left out goes first the next time
    assert second["good"].ok


def test_without_groups_each_backend_host_is_its_own_group(scripted):
    slow = scripted(silent)
    good = Backend()
    try:
        targets = {"s%d" % i: (slow.url, "/", None) for i in range(40)}
        targets["good"] = (good.url.replace("127.0.0.1", "localhost"), "/", None)
        prober = probe.Prober(fetch_all=functools.partial(httpget.fetch_all, max_open=4))
        results = prober.probe_all(targets, timeout=0.5)
    finally:
        good.close()
    assert results["good"].ok


def fake_names(table, delay=None):
    """A resolver over `table` {name: address}; names in `delay` take that many seconds."""
    def lookup(name):
        time.sleep((delay or {}).get(name, 0))
        if name not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        family = socket.AF_INET6 if ":" in table[name] else socket.AF_INET
        return [(family, (table[name], 0) if family == socket.AF_INET else (table[name], 0, 0, 0))]
    return httpget.Resolver(threads=2, lookup=lookup)


@pytest.mark.parametrize("address", ["169.254.169.254", "::ffff:169.254.169.254", "fe80::1", "fd00:ec2::254"])
def test_a_name_that_resolves_to_a_link_local_or_metadata_address_is_never_connected_to(address):
    resolver = fake_names({"metadata.internal": address})
    prober = probe.Prober(fetch_all=functools.partial(httpget.fetch_all, resolver=resolver))
    result = prober.probe_all({"1": ("http://metadata.internal:80", "/", None)}, timeout=0.5)["1"]
    assert not result.ok and "resolves to %s" % address in result.detail and "refused" in result.detail


def test_a_name_whose_dns_never_answers_costs_its_probe_not_the_pass(scripted):
    good = Backend()
    port = good.server.server_address[1]
    resolver = fake_names({"slow1": "127.0.0.1", "slow2": "127.0.0.1", "fast": "127.0.0.1"},
                          delay={"slow1": 5, "slow2": 5})
    try:
        prober = probe.Prober(fetch_all=functools.partial(httpget.fetch_all, resolver=resolver))
        started = time.monotonic()
        results = prober.probe_all({n: ("http://%s:%d" % (n, port), "/", None) for n in ("slow1", "slow2", "fast")},
                                   timeout=0.5)
        took = time.monotonic() - started
        # Both threads are still stuck on the slow names; a known name is served from its last answer.
        again = prober.probe_all({"fast": ("http://fast:%d" % port, "/", None)}, timeout=0.5)
    finally:
        good.close()
    assert took < probe.PASS_TIMEOUTS * 0.5 + 0.3
    assert results["slow1"] == ProbeResult(False, "its name slow1 did not resolve in time")
    assert results["fast"].ok is False or results["fast"].ok      # resolved once a thread was free, or not in time
    assert again["fast"].ok or "did not resolve" in again["fast"].detail


def test_a_name_that_does_not_resolve_is_unhealthy():
    prober = probe.Prober(fetch_all=functools.partial(httpget.fetch_all, resolver=fake_names({})))
    result = prober.probe_all({"1": ("http://nowhere:80", "/", None)}, timeout=0.5)["1"]
    assert not result.ok and result.detail.startswith("cannot resolve nowhere")


def test_a_stale_answer_serves_while_dns_is_late():
    clock = [0.0]
    table, delay = {"node1": "127.0.0.1"}, {}
    resolver = fake_names(table, delay)
    resolver.clock = lambda: clock[0]
    resolver.want("node1")
    deadline = time.monotonic() + 2
    while resolver.get("node1") is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert resolver.get("node1")[0][0][1][0] == "127.0.0.1"
    clock[0] = 60.0                         # no longer fresh; DNS now hangs
    delay["node1"] = 3
    resolver.want("node1")
    assert resolver.get("node1")[0][0][1][0] == "127.0.0.1"     # the last good answer, while the new one is late
    clock[0] = 1000.0                       # too old even for that
    assert resolver.get("node1") is None


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tls")
    key, cert = str(folder / "key.pem"), str(folder / "cert.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return key, cert


def test_https_backends_are_probed_and_their_certificate_checked(certificate, monkeypatch):
    key, cert = certificate
    good = Backend()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    good.server.socket = context.wrap_socket(good.server.socket, server_side=True)
    url = good.url.replace("http://", "https://")
    try:
        assert "CERTIFICATE_VERIFY_FAILED" in probe.probe(url, "/", timeout=2.0).detail    # not a CA we trust
        trusting = ssl.create_default_context(cafile=cert)
        monkeypatch.setattr(httpget, "_TLS", [trusting])
        assert probe.probe(url, "/status/204", timeout=2.0, expect_status=204) == ProbeResult(True, "")
    finally:
        good.close()


def test_probe_all_without_targets_is_empty_and_a_bad_url_is_a_result():
    assert probe.probe_all({}) == {}
    assert probe.probe_all({"1": ("http://node:99999", "/", None)})["1"].detail.startswith("bad URL")


def test_a_backend_that_is_one_of_our_own_listeners_is_never_probed():
    """A job publishing the wake proxy's (or Traefik's) own address would make the proxy forward to
    itself: whatever its spelling, such a backend is refused before any connection."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    port = server.getsockname()[1]
    try:
        for host in ("127.0.0.1", "localhost", "127.0.0.2", "[::ffff:127.0.0.1]", "0.0.0.0"):
            result = probe.probe_all({"1": ("http://%s:%d" % (host, port), "/", None)}, timeout=0.5,
                                     own_ports={port})["1"]
            assert not result.ok and "own listeners" in result.detail, (host, result)
        server.settimeout(0.2)
        with pytest.raises(socket.timeout):
            server.accept()                         # not one connection was made
    finally:
        server.close()
