"""wake.py: holding requests for a sleeping service and streaming them through, on real loopback sockets."""

import http.client
import http.server
import json
import socket
import threading
import time

import pytest

from forever_slurm.core import wake
from harness.net import LoopbackServer, free_port, wait_for


class Backend(http.server.BaseHTTPRequestHandler):
    """A test backend: /sse streams five events 0.2 s apart, anything else echoes what it received."""

    protocol_version = "HTTP/1.1"
    events = []             # (what, time.monotonic()) appended by every request, shared by the test

    def do_GET(self):
        if self.path == "/sse":
            return self._sse()
        self._echo(b"")

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        self._echo(self.rfile.read(length))

    def _echo(self, body):
        answer = json.dumps({"method": self.command, "path": self.path, "body": body.decode(),
                             "port": self.server.server_address[1],
                             "headers": {k.lower(): v for k, v in self.headers.items()}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def _sse(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for number in range(5):
                event = ("data: %d\n\n" % number).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
                time.sleep(0.2)
            self.wfile.write(b"0\r\n\r\n")
            self.events.append(("sse done", time.monotonic()))
        except OSError:
            self.events.append(("sse cut", time.monotonic()))
        self.close_connection = True

    def log_message(self, format, *args):
        pass


@pytest.fixture
def backend():
    Backend.events = []
    server = LoopbackServer(Backend, threaded=True)
    yield server
    server.stop()


class RawBackend:
    """A backend that answers every connection with fixed bytes, then keeps it open for `hold` seconds."""

    def __init__(self, answer, hold=0.0):
        self.answer, self.hold = answer, hold
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.url = "http://127.0.0.1:%d" % self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    conn.recv(65536)
                    conn.sendall(self.answer)
                    time.sleep(self.hold)
                except OSError:
                    pass

    def stop(self):
        self.sock.close()


class Loop:
    """The loop's side: a backends list the test controls, and the wake calls it received."""

    def __init__(self):
        self.backends = []
        self.wakes = []

    def on_wake(self, service):
        self.wakes.append(service)

    def backends_for(self, service):
        return list(self.backends)


@pytest.fixture
def loop():
    return Loop()


@pytest.fixture
def make_proxy(loop):
    made = []

    def make(**options):
        options.setdefault("poll", 0.05)
        options.setdefault("timeout", 5.0)
        proxy = wake.WakeProxy(loop.on_wake, loop.backends_for, **options)
        made.append(proxy)
        return proxy
    yield make
    for proxy in made:
        proxy.shutdown()


def request(port, method="GET", path="/hello", body=None, headers=None, timeout=10.0, chunked=False):
    """(status, headers dict, body bytes) of one request through the proxy."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=chunked)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def in_threads(count, call):
    """Start count threads running call(); returns (threads, results list filled as they end)."""
    results = []
    threads = [threading.Thread(target=lambda: results.append(call()), daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads, results


def join(threads, seconds=10.0):
    deadline = time.monotonic() + seconds
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads)


def held_count(proxy, service):
    return proxy.held()[service].count


def test_a_ready_backend_gets_the_request_at_once_with_hop_by_hop_headers_dropped(make_proxy, loop, backend):
    loop.backends = [backend.url]
    proxy = make_proxy()
    port = proxy.listen("svc")
    status, headers, body = request(port, "POST", "/v1/chat?stream=no", body=b'{"q": 1}', headers={
        "Content-Type": "application/json", "Keep-Alive": "timeout=5", "Proxy-Authorization": "secret",
        "TE": "trailers", "Upgrade": "h2c", "Connection": "X-Private", "X-Private": "1", "X-Kept": "yes"})
    seen = json.loads(body.decode())
    assert status == 200 and headers["connection"] == "close"
    assert seen["method"] == "POST" and seen["path"] == "/v1/chat?stream=no" and seen["body"] == '{"q": 1}'
    assert seen["headers"]["host"] == backend.url[len("http://"):]
    assert seen["headers"]["connection"] == "close" and seen["headers"]["x-kept"] == "yes"
    for dropped in ("keep-alive", "proxy-authorization", "te", "upgrade", "x-private"):
        assert dropped not in seen["headers"]
    assert loop.wakes == [] and held_count(proxy, "svc") == 0


def test_a_chunked_request_body_is_forwarded_with_its_length(make_proxy, loop, backend):
    loop.backends = [backend.url]
    port = make_proxy().listen("svc")
    status, _, body = request(port, "POST", "/up", body=iter([b"abc", b"defg"]),
                              headers={"Transfer-Encoding": "chunked"}, chunked=True)
    seen = json.loads(body.decode())
    assert status == 200 and seen["body"] == "abcdefg" and seen["headers"]["content-length"] == "7"
    assert "transfer-encoding" not in seen["headers"]


def test_twenty_requests_held_while_asleep_are_all_served_when_a_backend_appears(make_proxy, loop, backend):
    proxy = make_proxy()
    port = proxy.listen("svc")
    threads, results = in_threads(20, lambda: request(port, path="/held"))
    assert wait_for(lambda: held_count(proxy, "svc") == 20, 5.0)
    assert loop.wakes and set(loop.wakes) == {"svc"}
    loop.backends = [backend.url]
    join(threads)
    assert [status for status, _, _ in results] == [200] * 20
    assert all(json.loads(body.decode())["path"] == "/held" for _, _, body in results)
    assert held_count(proxy, "svc") == 0


def test_a_stream_reaches_the_client_chunk_by_chunk_before_the_backend_ends(make_proxy, loop, backend):
    loop.backends = [backend.url]
    port = make_proxy().listen("svc")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"GET /sse HTTP/1.1\r\nHost: svc\r\n\r\n")
        received, first_event_at = b"", None
        while True:
            data = client.recv(65536)
            if not data:
                break
            received += data
            if first_event_at is None and b"data: 0" in received:
                first_event_at = time.monotonic()
        ended_at = time.monotonic()
    done = [at for what, at in Backend.events if what == "sse done"]
    assert received.startswith(b"HTTP/1.1 200")
    assert b"Connection: close" in received and b"Transfer-Encoding: chunked" in received
    assert all(("data: %d" % n).encode() in received for n in range(5)) and received.endswith(b"0\r\n\r\n")
    assert len(done) == 1 and first_event_at is not None
    assert done[0] - first_event_at > 0.6        # five events 0.2 s apart: the first came ~0.8 s early
    assert ended_at >= done[0]


def test_no_backend_within_the_timeout_is_a_503_with_retry_after(make_proxy, loop):
    proxy = make_proxy(timeout=1.0, retry_after=7)
    port = proxy.listen("svc")
    started = time.monotonic()
    status, headers, body = request(port)
    waited = time.monotonic() - started
    assert status == 503 and headers["retry-after"] == "7" and b"retry" in body
    assert 1.0 <= waited < 3.0 and loop.wakes == ["svc"] and held_count(proxy, "svc") == 0


def test_a_client_that_gives_up_while_held_is_released_quietly(make_proxy, loop, capfd):
    proxy = make_proxy()
    port = proxy.listen("svc")
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    client.sendall(b"POST /x HTTP/1.1\r\nHost: svc\r\nContent-Length: 2\r\n\r\nhi")
    assert wait_for(lambda: held_count(proxy, "svc") == 1, 5.0)
    client.close()
    assert wait_for(lambda: held_count(proxy, "svc") == 0, 5.0)
    assert wait_for(lambda: not proxy._listeners["svc"].threads, 5.0)
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_a_client_that_hangs_up_mid_stream_has_its_backend_connection_closed(make_proxy, loop, backend, capfd):
    loop.backends = [backend.url]
    proxy = make_proxy()
    port = proxy.listen("svc")
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    client.sendall(b"GET /sse HTTP/1.1\r\nHost: svc\r\n\r\n")
    assert b"HTTP/1." in client.recv(65536)
    client.close()
    assert wait_for(lambda: [what for what, _ in Backend.events], 5.0) == ["sse cut"]
    assert wait_for(lambda: not proxy._listeners["svc"].upstreams, 5.0)
    assert capfd.readouterr().err == ""


def test_a_second_request_while_the_first_is_waking_is_held_and_served_too(make_proxy, loop, backend):
    proxy = make_proxy()
    port = proxy.listen("svc")
    first, first_results = in_threads(1, lambda: request(port, path="/first"))
    assert wait_for(lambda: held_count(proxy, "svc") == 1, 5.0)
    time.sleep(0.3)
    second, second_results = in_threads(1, lambda: request(port, path="/second"))
    assert wait_for(lambda: held_count(proxy, "svc") == 2, 5.0)
    held = proxy.held()["svc"]
    assert held.count == 2 and 0.3 <= held.longest_wait_seconds < 5.0
    loop.backends = [backend.url]
    join(first + second)
    assert [r[0] for r in first_results + second_results] == [200, 200]
    assert json.loads(second_results[0][2].decode())["path"] == "/second"
    assert proxy.held() == {"svc": wake.Held(0, 0.0)}


def test_a_refused_backend_is_skipped_for_a_live_one(make_proxy, loop, backend):
    loop.backends = ["http://127.0.0.1:%d" % free_port(), backend.url]
    proxy = make_proxy()
    port = proxy.listen("svc")
    answers = [request(port) for _ in range(4)]          # round robin starts on the dead one twice
    assert [status for status, _, _ in answers] == [200] * 4 and loop.wakes == []


def test_a_request_waits_while_the_only_backend_refuses_and_goes_through_once_it_listens(
        make_proxy, loop, backend):
    loop.backends = ["http://127.0.0.1:%d" % free_port()]
    proxy = make_proxy()
    port = proxy.listen("svc")
    threads, results = in_threads(1, lambda: request(port))
    assert wait_for(lambda: held_count(proxy, "svc") == 1, 5.0)
    loop.backends = [backend.url]
    join(threads)
    assert results[0][0] == 200


def test_the_health_path_answers_at_once_without_waking(make_proxy, loop):
    proxy = make_proxy()
    port = proxy.listen("svc", health_path="/healthz")
    started = time.monotonic()
    status, _, body = request(port, path="/healthz")
    assert status == 200 and body == b"ok\n" and time.monotonic() - started < 1.0
    assert loop.wakes == [] and held_count(proxy, "svc") == 0


def test_listen_takes_the_port_asked_for_when_free_else_any(make_proxy, loop):
    first = make_proxy()
    port = first.listen("svc")
    first.close("svc")
    again = make_proxy()
    assert again.listen("svc", port=port) == port, "a restarted loop gets its port back"
    other = make_proxy()
    taken = other.listen("svc", port=port)
    assert taken != port and taken > 0, "taken: any free port"


def test_the_health_check_gets_the_status_the_template_expects(make_proxy, loop):
    proxy = make_proxy()
    port = proxy.listen("svc", health_path="/healthz", health_status=401)
    assert request(port, path="/healthz")[0] == 401 and loop.wakes == []


def test_past_max_held_a_request_is_refused_at_once_with_retry_after(make_proxy, loop):
    proxy = make_proxy(max_held=2, retry_after=9)
    port = proxy.listen("svc")
    threads, results = in_threads(2, lambda: request(port))
    assert wait_for(lambda: held_count(proxy, "svc") == 2, 5.0)
    started = time.monotonic()
    status, headers, _ = request(port)
    assert status == 503 and headers["retry-after"] == "9" and time.monotonic() - started < 1.0
    proxy.close("svc")
    join(threads)
    assert [(status, headers["retry-after"]) for status, headers, _ in results] == [(503, "9")] * 2


def test_listen_is_idempotent_and_close_frees_the_port(make_proxy):
    proxy = make_proxy()
    port = proxy.listen("svc")
    assert proxy.listen("svc") == port == proxy.port("svc") and proxy.listen("other") != port
    proxy.close("svc")
    assert proxy.port("svc") is None and set(proxy.held()) == {"other"}
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_shutdown_answers_held_requests_and_leaves_no_listener_or_thread(make_proxy, loop):
    proxy = make_proxy()
    ports = [proxy.listen("a"), proxy.listen("b")]
    threads, results = in_threads(3, lambda: request(ports[0]))
    assert wait_for(lambda: held_count(proxy, "a") == 3, 5.0)
    proxy.shutdown()
    join(threads)
    assert [status for status, _, _ in results] == [503] * 3
    assert proxy.held() == {} and proxy.port("a") is None
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert not [t for t in threading.enumerate() if t.name.startswith("wake-")]


@pytest.mark.parametrize("answer", [b"", b"SSH-2.0-OpenSSH\r\n\r\n"], ids=["closes", "not-http"])
def test_a_backend_that_fails_before_answering_is_a_502_with_retry_after_and_no_noise(
        make_proxy, loop, capfd, answer):
    raw = RawBackend(answer)
    lines = []
    loop.backends = [raw.url]
    port = make_proxy(retry_after=4, log=lines.append).listen("svc")
    try:
        status, headers, _ = request(port)
    finally:
        raw.stop()
    assert status == 502 and headers["retry-after"] == "4"
    assert any("backend failed" in line for line in lines)
    assert capfd.readouterr().err == ""


def test_a_body_of_known_length_ends_the_answer_though_the_backend_keeps_its_connection(make_proxy, loop):
    raw = RawBackend(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello", hold=3.0)
    loop.backends = [raw.url]
    port = make_proxy().listen("svc")
    started = time.monotonic()
    try:
        status, headers, body = request(port)
    finally:
        raw.stop()
    assert (status, body, headers["connection"]) == (200, b"hello", "close")
    assert time.monotonic() - started < 2.0


def test_head_answers_end_at_their_head(make_proxy, loop, backend):
    loop.backends = [backend.url]
    port = make_proxy().listen("svc")
    started = time.monotonic()
    status, headers, body = request(port, "HEAD")
    assert (status, headers["content-length"], body) == (200, "1000", b"")
    assert time.monotonic() - started < 2.0


def test_a_client_expecting_100_continue_gets_it_and_its_body_forwarded(make_proxy, loop, backend):
    loop.backends = [backend.url]
    port = make_proxy().listen("svc")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"POST /e HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        client.sendall(b"abc")
        received = b""
        for _ in range(100):
            data = client.recv(65536)
            if not data:
                break
            received += data
    head, _, body = received.partition(b"\r\n\r\n")
    seen = json.loads(body.decode())
    assert head.startswith(b"HTTP/1.1 200") and seen["body"] == "abc" and "expect" not in seen["headers"]
