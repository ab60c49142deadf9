"""wake.py: holding requests for a sleeping service and streaming them through, on real loopback sockets,
and what a hostile or unlucky client may cost it (issue 21 items 2, 3, 18)."""

import hashlib
import http.client
import http.server
import json
import os
import socket
import threading
import time

import pytest

from forever_slurm.common import urls
from forever_slurm.core import wake, wake_bodies
from harness.net import LoopbackServer, free_port, wait_for


class Backend(http.server.BaseHTTPRequestHandler):
    """A test backend: /sse streams five events 0.2 s apart, anything else echoes what it received
    (the body's length and sha256 too)."""

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
        answer = json.dumps({"method": self.command, "path": self.path, "body": body[:100].decode("latin-1"),
                             "length": len(body), "sha256": hashlib.sha256(body).hexdigest(),
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
    server.server.socket.listen(1024)   # a burst of held requests must not overflow its accept queue
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


class Clock:
    """The proxy's clock, moved by the test: deadlines pass when the test says so, not after a sleep."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


class Loop:
    """The loop's side: the wake calls the proxy made."""

    def __init__(self):
        self.wakes = []

    def on_wake(self, service):
        self.wakes.append(service)


@pytest.fixture
def loop():
    return Loop()


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def make_proxy(loop, clock, tmp_path):
    made = []

    def make(**options):
        options.setdefault("poll", 0.05)
        options.setdefault("timeout", 5.0)
        options.setdefault("clock", clock)
        options.setdefault("spool_dir", str(tmp_path / "spool"))
        proxy = wake.WakeProxy(loop.on_wake, **options)
        made.append(proxy)
        return proxy
    yield make
    for proxy in made:
        proxy.shutdown()


def ready(proxy, service, *urls_):
    proxy.publish(service, wake.Board(tuple(urls_)))


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
    """Start count threads running call(); returns (threads, results list filled as they end, with
    the exception a call raised in place of its result)."""
    results = []

    def one():
        try:
            results.append(call())
        except Exception as exc:
            results.append(exc)
    threads = [threading.Thread(target=one, daemon=True) for _ in range(count)]
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


def connections(proxy):
    return len(proxy._loop.clients)


def proxy_threads():
    return [t for t in threading.enumerate() if t.name.startswith("wake-")]


def swept(proxy):
    """Wait until the proxy has checked its deadlines twice more (so one that was due would have fired)."""
    since = proxy._loop.sweeps
    assert wait_for(lambda: proxy._loop.sweeps >= since + 2, 5.0)


def read_all(sock, seconds=5.0):
    """Everything the proxy sends on sock until it closes its side; b"" plus why when it reset."""
    sock.settimeout(seconds)
    received = b""
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return received
            received += data
    except ConnectionResetError:
        return received + b" <reset>"
    except socket.timeout:
        return received + b" <timeout>"


# -- forwarding ---------------------------------------------------------------------------------------
def test_a_ready_backend_gets_the_request_at_once_with_hop_by_hop_headers_dropped(make_proxy, loop, backend):
    proxy = make_proxy()
    ready(proxy, "svc", backend.url)
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
    proxy = make_proxy()
    ready(proxy, "svc", backend.url)
    port = proxy.listen("svc")
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
    ready(proxy, "svc", backend.url)
    join(threads)
    assert [status for status, _, _ in results] == [200] * 20
    assert all(json.loads(body.decode())["path"] == "/held" for _, _, body in results)
    assert held_count(proxy, "svc") == 0


def test_a_stream_reaches_the_client_chunk_by_chunk_before_the_backend_ends(make_proxy, loop, backend):
    proxy = make_proxy()
    ready(proxy, "svc", backend.url)
    port = proxy.listen("svc")
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


def test_no_backend_within_the_timeout_is_a_503_with_retry_after(make_proxy, loop, clock):
    proxy = make_proxy(timeout=30.0, retry_after=7)
    port = proxy.listen("svc")
    threads, results = in_threads(1, lambda: request(port))
    assert wait_for(lambda: held_count(proxy, "svc") == 1, 5.0)
    clock.advance(29.0)
    assert held_count(proxy, "svc") == 1 and not results
    clock.advance(1.0)
    join(threads)
    status, headers, body = results[0]
    assert status == 503 and headers["retry-after"] == "7" and b"no backend ready after 30s" in body
    assert loop.wakes == ["svc"] and held_count(proxy, "svc") == 0


def test_a_client_that_gives_up_while_held_is_released_quietly(make_proxy, loop, capfd):
    proxy = make_proxy()
    port = proxy.listen("svc")
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    client.sendall(b"POST /x HTTP/1.1\r\nHost: svc\r\nContent-Length: 2\r\n\r\nhi")
    assert wait_for(lambda: held_count(proxy, "svc") == 1, 5.0)
    client.close()
    assert wait_for(lambda: held_count(proxy, "svc") == 0, 5.0)
    assert wait_for(lambda: connections(proxy) == 0, 5.0)
    out, err = capfd.readouterr()
    assert err == "" and out == ""


def test_a_client_that_hangs_up_mid_stream_has_its_backend_connection_closed(make_proxy, loop, backend, capfd):
    proxy = make_proxy()
    ready(proxy, "svc", backend.url)
    port = proxy.listen("svc")
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    client.sendall(b"GET /sse HTTP/1.1\r\nHost: svc\r\n\r\n")
    assert b"HTTP/1." in client.recv(65536)
    client.close()
    assert wait_for(lambda: [what for what, _ in Backend.events], 5.0) == ["sse cut"]
    assert wait_for(lambda: connections(proxy) == 0, 5.0)
    assert capfd.readouterr().err == ""


def test_a_second_request_while_the_first_is_waking_is_held_and_served_too(make_proxy, loop, backend, clock):
    proxy = make_proxy()
    port = proxy.listen("svc")
    first, first_results = in_threads(1, lambda: request(port, path="/first"))
    assert wait_for(lambda: held_count(proxy, "svc") == 1, 5.0)
    clock.advance(0.3)
    second, second_results = in_threads(1, lambda: request(port, path="/second"))
    assert wait_for(lambda: held_count(proxy, "svc") == 2, 5.0)
    clock.advance(0.1)
    assert proxy.held()["svc"] == wake.Held(2, pytest.approx(0.4))
    ready(proxy, "svc", backend.url)
    join(first + second)
    assert [r[0] for r in first_results + second_results] == [200, 200]
    assert json.loads(second_results[0][2].decode())["path"] == "/second"
    assert proxy.held() == {"svc": wake.Held(0, 0.0)}


def test_a_refused_backend_is_skipped_for_a_live_one(make_proxy, loop, backend):
    proxy = make_proxy()
    ready(proxy, "svc", "http://127.0.0.1:%d" % free_port(), backend.url)
    port = proxy.listen("svc")
    answers = [request(port) for _ in range(4)]          # round robin starts on the dead one twice
    assert [status for status, _, _ in answers] == [200] * 4 and loop.wakes == []


def test_a_request_waits_while_the_only_backend_refuses_and_goes_through_once_it_listens(
        make_proxy, loop, backend):
    proxy = make_proxy()
    ready(proxy, "svc", "http://127.0.0.1:%d" % free_port())
    port = proxy.listen("svc")
    threads, results = in_threads(1, lambda: request(port))
    assert wait_for(lambda: held_count(proxy, "svc") == 1, 5.0)
    ready(proxy, "svc", backend.url)
    join(threads)
    assert results[0][0] == 200


def test_a_backend_named_by_host_name_is_resolved_off_the_proxy_thread(make_proxy, loop, backend):
    proxy = make_proxy()
    ready(proxy, "svc", backend.url.replace("127.0.0.1", "localhost"))
    port = proxy.listen("svc")
    assert request(port)[0] == 200


def test_the_health_path_answers_at_once_without_waking(make_proxy, loop):
    proxy = make_proxy()
    port = proxy.listen("svc", health_path="/healthz")
    status, _, body = request(port, path="/healthz")
    assert status == 200 and body == b"ok\n"
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
    status, headers, body = request(port)
    assert status == 503 and headers["retry-after"] == "9" and b"2 requests are waiting already" in body
    proxy.close("svc")
    join(threads)
    assert [(status, headers["retry-after"]) for status, headers, _ in results] == [(503, "9")] * 2


def test_listen_is_idempotent_and_close_frees_the_port(make_proxy):
    proxy = make_proxy(also_ours=[13013])
    port = proxy.listen("svc")
    other = proxy.listen("other")
    assert proxy.listen("svc") == port != other
    assert proxy.own_ports() == {port, other, 13013}
    proxy.close("svc")
    assert proxy.own_ports() == {other, 13013} and set(proxy.held()) == {"other"}
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
    assert proxy.held() == {} and proxy.own_ports() == set()
    for port in ports:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert not proxy_threads()


@pytest.mark.parametrize("answer", [b"", b"SSH-2.0-OpenSSH\r\n\r\n"], ids=["closes", "not-http"])
def test_a_backend_that_fails_before_answering_is_a_502_with_retry_after_and_no_noise(
        make_proxy, loop, capfd, answer):
    raw = RawBackend(answer)
    lines = []
    proxy = make_proxy(retry_after=4, log=lines.append)
    ready(proxy, "svc", raw.url)
    port = proxy.listen("svc")
    try:
        status, headers, _ = request(port)
    finally:
        raw.stop()
    assert status == 502 and headers["retry-after"] == "4"
    assert any("backend failed" in line for line in lines)
    assert capfd.readouterr().err == ""


def test_a_body_of_known_length_ends_the_answer_though_the_backend_keeps_its_connection(make_proxy, loop):
    raw = RawBackend(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello", hold=3.0)
    proxy = make_proxy()
    ready(proxy, "svc", raw.url)
    port = proxy.listen("svc")
    started = time.monotonic()
    try:
        status, headers, body = request(port)
    finally:
        raw.stop()
    assert (status, body, headers["connection"]) == (200, b"hello", "close")
    assert time.monotonic() - started < 2.0


def test_head_answers_end_at_their_head(make_proxy, loop, backend):
    proxy = make_proxy()
    ready(proxy, "svc", backend.url)
    port = proxy.listen("svc")
    started = time.monotonic()
    status, headers, body = request(port, "HEAD")
    assert (status, headers["content-length"], body) == (200, "1000", b"")
    assert time.monotonic() - started < 2.0


def test_a_client_expecting_100_continue_gets_it_and_its_body_forwarded(make_proxy, loop, backend):
    proxy = make_proxy()
    ready(proxy, "svc", backend.url)
    port = proxy.listen("svc")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"POST /e HTTP/1.1\r\nHost: svc\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n")
        assert client.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        client.sendall(b"abc")
        received = read_all(client)
    head, _, body = received.partition(b"\r\n\r\n")
    seen = json.loads(body.decode())
    assert head.startswith(b"HTTP/1.1 200") and seen["body"] == "abc" and "expect" not in seen["headers"]


@pytest.mark.parametrize("head, status", [
    (b"GET /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
    (b"GET /x HTTP/1.1\r\nContent-Length: +3\r\n\r\n", 400),
    (b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", 400),
    (b"BREW /x HTTP/1.1\r\n\r\n", 501),
    (b"GET /x\r\n\r\n", 400),
    (b"GET /x HTTP/1.1\r\n" + b"X-Big: " + b"a" * 70000 + b"\r\n\r\n", 431),
], ids=["two-lengths", "signed-length", "not-chunked", "method", "http-0.9", "huge-head"])
def test_a_request_we_cannot_forward_safely_is_answered_not_reset(make_proxy, loop, head, status):
    proxy = make_proxy()
    port = proxy.listen("svc")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(head)
        received = read_all(client)
    assert received.startswith(b"HTTP/1.1 %d " % status) and b"<reset>" not in received
    assert loop.wakes == [] and wait_for(lambda: connections(proxy) == 0, 5.0)


# -- item 2: what a client may cost --------------------------------------------------------------------
def test_two_hundred_clients_trickling_their_headers_take_no_thread_and_are_dropped_at_the_head_deadline(
        make_proxy, loop, clock, backend):
    proxy = make_proxy(max_connections=1000)
    port = proxy.listen("svc")
    other = proxy.listen("other")
    ready(proxy, "other", backend.url)
    slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(200)]
    line = b"GET /slow HTTP/1.1\r\n"
    for sent in range(5):           # byte by byte, round after round
        for sock in slow:
            sock.send(line[sent:sent + 1])
    assert wait_for(lambda: connections(proxy) == 200, 5.0)
    assert len(proxy_threads()) == 1, "one thread for every connection"
    assert request(other)[0] == 200, "another service answers meanwhile"
    clock.advance(wake.QUICK_HEAD_SECONDS)
    assert wait_for(lambda: sum(1 for s in slow if _answered(s)) == 200 - wake.MAX_READING, 5.0), \
        "past MAX_READING slow ones, a client has QUICK_HEAD_SECONDS for its head"
    clock.advance(wake.HEAD_SECONDS - wake.QUICK_HEAD_SECONDS - 0.5)
    swept(proxy)                    # the proxy's deadline checks ran, and must not fire yet
    assert sum(1 for s in slow if _answered(s)) == 200 - wake.MAX_READING
    clock.advance(0.5)
    answers = [read_all(sock) for sock in slow]
    for sock in slow:
        sock.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") and b"request head not complete within" in a for a in answers), \
        set(a[:40] for a in answers)
    assert all(b"<reset>" not in a and b"<timeout>" not in a for a in answers)
    assert wait_for(lambda: connections(proxy) == 0, 5.0)
    assert loop.wakes == []


def _answered(sock):
    sock.setblocking(False)
    try:
        return bool(sock.recv(1, socket.MSG_PEEK))
    except BlockingIOError:
        return False
    finally:
        sock.setblocking(True)


def test_a_trickling_body_is_dropped_once_it_falls_below_the_minimum_rate(make_proxy, loop, clock):
    proxy = make_proxy()
    port = proxy.listen("svc")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"POST /up HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n" + b"x" * 1000)
        assert wait_for(lambda: proxy._loop.clients and next(iter(proxy._loop.clients)).state == "body", 5.0)
        clock.advance(wake.BODY_GRACE)
        swept(proxy)
        assert not _answered(client), "within the grace a slow start is fine"
        clock.advance(1)
        answer = read_all(client)
    assert answer.startswith(b"HTTP/1.1 408") and b"slower than" in answer
    assert loop.wakes == [] and wait_for(lambda: connections(proxy) == 0, 5.0)


def test_twenty_big_bodies_wait_on_disk_not_in_memory_and_arrive_whole(make_proxy, loop, backend, tmp_path):
    size = 2 * 1024 * 1024
    proxy = make_proxy(max_spooled=15 * size, retry_after=3)
    port = proxy.listen("svc")
    bodies = [os.urandom(size) for _ in range(20)]
    starts = iter(range(20))
    threads, results = in_threads(20, lambda: (lambda n: (n, request(port, "POST", "/big", body=bodies[n])))(
        next(starts)))
    assert wait_for(lambda: held_count(proxy, "svc") == 15 and len(results) == 5, 10.0)
    spool = tmp_path / "spool"
    files = sorted(os.listdir(str(spool)))
    assert len(files) == 15 and all(os.path.getsize(str(spool / f)) == size for f in files)
    assert oct(os.stat(str(spool)).st_mode & 0o777) == "0o700"
    assert proxy.spool.in_memory == 0 and proxy.spool.on_disk == 15 * size
    assert all(status == 503 and headers["retry-after"] == "3" and b"waiting already" in body
               for _, (status, headers, body) in results)
    ready(proxy, "svc", backend.url)
    join(threads, 20.0)
    served = [(n, json.loads(body.decode())) for n, (status, _, body) in results if status == 200]
    assert len(served) == 15, sorted((r[1][0], r[1][2][:60]) for r in results if r[1][0] != 200)
    assert all(seen["sha256"] == hashlib.sha256(bodies[n]).hexdigest() for n, seen in served)
    assert wait_for(lambda: not os.listdir(str(spool)), 5.0) and proxy.spool.on_disk == 0


def test_a_body_over_max_body_is_a_413_before_it_is_read(make_proxy, loop):
    proxy = make_proxy(max_body=1000)
    port = proxy.listen("svc")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"POST /x HTTP/1.1\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n")
        answer = read_all(client)
    assert answer.startswith(b"HTTP/1.1 413") and b"over 1000 bytes" in answer
    chunked = request(port, "POST", "/y", body=iter([b"a" * 600, b"b" * 600]), chunked=True,
                      headers={"Transfer-Encoding": "chunked"})
    assert chunked[0] == 413 and loop.wakes == []


def test_a_client_still_sending_a_refused_body_gets_the_answer_not_a_reset(make_proxy, loop):
    proxy = make_proxy(max_spooled=1024 * 1024, retry_after=5)
    port = proxy.listen("svc")
    status, headers, body = request(port, "POST", "/big", body=b"b" * (32 * 1024 * 1024))
    assert status == 503 and headers["retry-after"] == "5" and b"waiting already" in body
    board = wake.Board((), "sbatch failed: no", 9)
    proxy.publish("svc", board)
    assert request(port, "POST", "/big", body=b"b" * (32 * 1024 * 1024))[0] == 503


def test_bodies_in_memory_stay_within_their_budget_and_small_ones_never_touch_the_disk(
        make_proxy, loop, tmp_path, monkeypatch):
    monkeypatch.setattr(wake_bodies, "MEMORY_BUDGET", 3 * 1000)
    proxy = make_proxy()
    port = proxy.listen("svc")
    threads, results = in_threads(5, lambda: request(port, "POST", "/small", body=b"s" * 1000))
    assert wait_for(lambda: held_count(proxy, "svc") == 5, 5.0)
    assert proxy.spool.in_memory == 3000 and proxy.spool.on_disk == 2000
    assert len(os.listdir(str(tmp_path / "spool"))) == 2
    proxy.shutdown()
    join(threads)


def test_clients_of_one_service_cannot_starve_another(make_proxy, loop, backend):
    proxy = make_proxy(max_connections=40)
    greedy = proxy.listen("greedy")
    other = proxy.listen("other")
    hogs = [socket.create_connection(("127.0.0.1", greedy), timeout=5) for _ in range(60)]
    for sock in hogs:
        sock.sendall(b"GET /hog HTTP/1.1\r\nHost: greedy\r\n\r\n")
    assert wait_for(lambda: held_count(proxy, "greedy") == 20, 5.0), "its share: half of 40"
    threads, results = in_threads(5, lambda: request(other, path="/fine"))
    assert wait_for(lambda: held_count(proxy, "other") == 5, 5.0)
    ready(proxy, "other", backend.url)
    join(threads)
    assert [status for status, _, _ in results] == [200] * 5
    assert held_count(proxy, "greedy") == 20, "the rest wait in greedy's own accept backlog"
    ready(proxy, "greedy", backend.url)
    answers = []
    for sock in hogs:
        answers.append(read_all(sock))
        sock.close()
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), [a[:40] for a in answers]


def test_three_hundred_held_requests_take_one_thread(make_proxy, loop, backend):
    proxy = make_proxy(max_connections=1100)
    port = proxy.listen("svc")
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(300)]
    for sock in clients:
        sock.sendall(b"GET /many HTTP/1.1\r\nHost: svc\r\n\r\n")
    assert wait_for(lambda: held_count(proxy, "svc") == 300, 10.0)
    assert len(proxy_threads()) == 1
    ready(proxy, "svc", backend.url)
    answers = [read_all(sock, 20.0) for sock in clients]
    for sock in clients:
        sock.close()
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), set(a[:30] for a in answers)


# -- item 3: never a backend of our own -----------------------------------------------------------------
def _spellings(port):
    return ["http://127.0.0.1:%d" % port, "http://localhost:%d" % port, "http://127.3.4.5:%d" % port,
            "http://0.0.0.0:%d" % port, "http://[::1]:%d" % port, "http://[::ffff:127.0.0.1]:%d" % port,
            "http://[::]:%d" % port, "http://%s:%d" % (socket.gethostname(), port)]


def test_points_at_sees_every_spelling_of_this_host_and_only_our_ports():
    port = free_port()
    for url in _spellings(port):
        assert urls.points_at(url, {port}), url
        assert not urls.points_at(url, {port + 1}), url
    assert not urls.points_at("http://192.0.2.1:%d" % port, {port}), "an address of another host"
    assert not urls.points_at("http://no-such-host.invalid:%d" % port, {port})
    assert not urls.points_at("not a url", {port})
    assert not urls.valid_backend_url("http://0x7f.0.0.1:%d" % port), "inet_aton's spellings never get this far"


@pytest.mark.parametrize("spelling", range(8))
def test_a_backend_url_that_points_at_the_proxy_itself_is_never_forwarded_to(make_proxy, loop, backend, spelling):
    lines = []
    proxy = make_proxy(log=lines.append)
    port = proxy.listen("svc")
    ready(proxy, "svc", _spellings(port)[spelling])
    threads, results = in_threads(1, lambda: request(port, path="/loop"))
    assert wait_for(lambda: any("points at a listener of ours" in line for line in lines), 5.0)
    assert connections(proxy) == 1 and held_count(proxy, "svc") == 1, "held, not sent to itself"
    ready(proxy, "svc", backend.url)
    join(threads)
    assert results[0][0] == 200


def test_traefik_ports_named_by_the_loop_are_refused_too(make_proxy, loop):
    traefik = socket.socket()
    traefik.bind(("127.0.0.1", 0))
    traefik.listen(8)
    taken = traefik.getsockname()[1]
    lines = []
    proxy = make_proxy(also_ours=[taken], log=lines.append)
    port = proxy.listen("svc")
    ready(proxy, "svc", "http://localhost:%d" % taken)
    try:
        threads, results = in_threads(1, lambda: request(port))
        assert wait_for(lambda: any("points at a listener of ours (port %d)" % taken in line for line in lines), 5.0)
        traefik.settimeout(0.5)
        with pytest.raises(socket.timeout):
            traefik.accept()
        proxy.close("svc")
        join(threads)
    finally:
        traefik.close()


# -- item 18: a service that cannot start answers now ------------------------------------------------
def test_held_requests_get_the_reason_at_once_when_the_loop_says_submission_is_failing(make_proxy, loop):
    proxy = make_proxy(timeout=600.0)
    port = proxy.listen("svc")
    threads, results = in_threads(3, lambda: request(port))
    assert wait_for(lambda: held_count(proxy, "svc") == 3, 5.0)
    proxy.publish("svc", wake.Board((), "sbatch failed: QOSMaxSubmitJobPerUserLimit; next try in 40 s", 40))
    join(threads, 3.0)
    for status, headers, body in results:
        assert status == 503 and headers["retry-after"] == "40"
        assert b"QOSMaxSubmitJobPerUserLimit; next try in 40 s" in body
    wakes = len(loop.wakes)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
        client.sendall(b"POST /x HTTP/1.1\r\nContent-Length: 10000000\r\n\r\n")
        answer = read_all(client)
    assert answer.startswith(b"HTTP/1.1 503") and b"sbatch failed" in answer, "its body is not even waited for"
    assert len(loop.wakes) == wakes, "answered, not held"
    proxy.publish("svc", wake.Board())
    threads, results = in_threads(1, lambda: request(port))
    assert wait_for(lambda: held_count(proxy, "svc") == 1, 5.0), "once the loop stops refusing, held again"
    proxy.close("svc")
    join(threads)


def test_the_loop_never_waits_on_a_client(make_proxy, loop):
    """publish, held, own_ports and listen return at once while clients trickle and bodies arrive."""
    proxy = make_proxy()
    port = proxy.listen("svc")
    slow = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(50)]
    for sock in slow:
        sock.send(b"P")
    started = time.monotonic()
    for n in range(100):
        proxy.publish("svc", wake.Board(("http://127.0.0.1:%d" % free_port(),)))
        proxy.held()
        proxy.own_ports()
    proxy.listen("another")
    proxy.close("another")
    assert time.monotonic() - started < 2.0
    for sock in slow:
        sock.close()
